//! Shared test fixtures: the Go provider's sample MachineClass, a provider Secret, a Machine.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use crate::mcm::{Machine, MachineClass, MachineSpec};

pub const TOKEN: &str = "s3cr3t-t0ken-value";
pub const USER_DATA: &str =
    "#cloud-config\nbootcmd:\n- echo bootstrap-token-abcdef.0123456789abcdef\n";
pub const CLUSTER: &str = "shoot--dev--kubevirt";

/// The Go provider's sample providerSpec, with a named additional volume.
pub fn provider_spec_json() -> Value {
    json!({
        "region": "local",
        "zone": "local-1",
        "resources": {
            "requests": {"cpu": 1, "memory": "4096Mi"},
            "limits": {"cpu": 2, "memory": "8Gi"}
        },
        "rootVolume": {
            "pvc": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "8Gi"}},
                "storageClassName": "standard"
            },
            "source": {"http": {"url": "https://example.org/image.img"}}
        },
        "additionalVolumes": [{
            "name": "data",
            "dataVolume": {
                "pvc": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "10Gi"}},
                    "storageClassName": "standard"
                },
                "source": {"blank": {}}
            }
        }],
        "sshKeys": ["ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAACAQDdOIhYmzCK5DSVLu3b"],
        "networks": [{"name": "default/net-conf"}],
        "cpu": {"cores": 1, "sockets": 2, "threads": 1},
        "memory": {"hugepages": {"pageSize": "2Mi"}},
        "devices": {"blockMultiQueue": false, "networkInterfaceMultiqueue": true, "rng": {}},
        "dnsPolicy": "ClusterFirst",
        "dnsConfig": {"nameservers": ["8.8.8.8"]},
        "tags": {"mcm.gardener.cloud/role": "node"}
    })
}

pub fn machine_class_with(provider_spec: Value) -> MachineClass {
    MachineClass {
        metadata: ObjectMeta {
            name: Some("worker-class".into()),
            namespace: Some(CLUSTER.into()),
            ..Default::default()
        },
        provider_spec,
        ..Default::default()
    }
}

pub fn machine_class() -> MachineClass {
    machine_class_with(provider_spec_json())
}

/// A token kubeconfig for 127.0.0.1; `namespace` is the current context's, if any.
pub fn kubeconfig_yaml(namespace: Option<&str>) -> String {
    let namespace = namespace
        .map(|ns| format!("\n    namespace: {ns}"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1
kind: Config
current-context: infra
clusters:
- name: infra
  cluster:
    server: https://127.0.0.1:6443
    insecure-skip-tls-verify: true
contexts:
- name: infra
  context:
    cluster: infra
    user: admin{namespace}
users:
- name: admin
  user:
    token: {TOKEN}
"
    )
}

pub fn secret_with(pairs: &[(&str, &str)]) -> Secret {
    let data: BTreeMap<String, ByteString> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect();
    Secret {
        data: Some(data),
        ..Default::default()
    }
}

pub fn secret() -> Secret {
    secret_with(&[
        ("kubeconfig", &kubeconfig_yaml(Some("vms"))),
        ("userData", USER_DATA),
    ])
}

pub fn machine(name: &str) -> Machine {
    let mut machine = Machine::new(name, MachineSpec::default());
    machine.metadata.namespace = Some(CLUSTER.to_owned());
    machine
}
