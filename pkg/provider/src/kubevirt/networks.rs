//! Interfaces, networks and the cloud-init networkData of the VM.
//!
//! As in the Go provider: with no networks the VM gets KubeVirt's default pod network;
//! with Multus networks the pod network is added first unless one of them is the
//! default, every interface is bridged, and DHCP is enabled on all ethernet devices.

use kubevirt_api::kubevirt::v1::virtualmachines::{
    VirtualMachineTemplateSpecDomainDevicesInterfaces as Interface,
    VirtualMachineTemplateSpecDomainDevicesInterfacesBridge as Bridge,
    VirtualMachineTemplateSpecNetworks as Network,
    VirtualMachineTemplateSpecNetworksMultus as Multus,
    VirtualMachineTemplateSpecNetworksPod as Pod,
};

use crate::provider_spec::NetworkSpec;

const POD_NETWORK_NAME: &str = "default";

/// Enables DHCPv4 on every interface whose name starts with `e` (eth0, ens3, enp1s0...).
pub const DHCP_NETWORK_DATA: &str =
    "version: 2\nethernets:\n  id0:\n    match:\n      name: \"e*\"\n    dhcp4: true\n";

#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmNetworking {
    pub interfaces: Option<Vec<Interface>>,
    pub networks: Option<Vec<Network>>,
    pub network_data: Option<String>,
}

fn bridged(name: &str) -> Interface {
    Interface {
        name: name.to_owned(),
        bridge: Some(Bridge {}),
        ..Default::default()
    }
}

pub fn build_networking(specs: &[NetworkSpec]) -> VmNetworking {
    if specs.is_empty() {
        return VmNetworking::default();
    }
    let mut interfaces = Vec::new();
    let mut networks = Vec::new();
    if !specs.iter().any(|spec| spec.default) {
        interfaces.push(bridged(POD_NETWORK_NAME));
        networks.push(Network {
            name: POD_NETWORK_NAME.to_owned(),
            pod: Some(Pod::default()),
            ..Default::default()
        });
    }
    for (index, spec) in specs.iter().enumerate() {
        let name = format!("net{index}");
        interfaces.push(bridged(&name));
        networks.push(Network {
            name,
            multus: Some(Multus {
                network_name: spec.name.clone(),
                default: spec.default.then_some(true),
            }),
            ..Default::default()
        });
    }
    VmNetworking {
        interfaces: Some(interfaces),
        networks: Some(networks),
        network_data: Some(DHCP_NETWORK_DATA.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, default: bool) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            default,
        }
    }

    #[test]
    fn no_networks_leaves_kubevirt_defaults() {
        assert_eq!(build_networking(&[]), VmNetworking::default());
    }

    #[test]
    fn pod_network_comes_first_unless_a_multus_network_is_default() {
        let built = build_networking(&[spec("ns/a", false), spec("b", false)]);
        let names: Vec<_> = built
            .networks
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(names, ["default", "net0", "net1"]);
        assert!(built.networks.as_ref().unwrap()[0].pod.is_some());
        assert_eq!(
            built.networks.as_ref().unwrap()[1]
                .multus
                .as_ref()
                .unwrap()
                .network_name,
            "ns/a"
        );
        assert_eq!(built.interfaces.as_ref().unwrap().len(), 3);
        assert!(
            built
                .interfaces
                .as_ref()
                .unwrap()
                .iter()
                .all(|i| i.bridge.is_some())
        );
        assert_eq!(built.network_data.as_deref(), Some(DHCP_NETWORK_DATA));

        let built = build_networking(&[spec("ns/a", true)]);
        let networks = built.networks.unwrap();
        assert_eq!(networks.len(), 1);
        assert_eq!(networks[0].multus.as_ref().unwrap().default, Some(true));
    }
}
