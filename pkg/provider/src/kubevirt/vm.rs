//! The VirtualMachine and userdata Secret CreateMachine writes for a machine. Pure: no
//! API calls, so `machine-controller render` and the golden tests show exactly this.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubevirt_api::kubevirt::v1::virtualmachines::{
    VirtualMachine, VirtualMachineSpec, VirtualMachineTemplate, VirtualMachineTemplateSpec,
    VirtualMachineTemplateSpecDomain, VirtualMachineTemplateSpecDomainDevices,
};
use serde_json::{Value, json};

use crate::field::{FieldError, FieldPath};
use crate::kubevirt::affinity::build_affinity;
use crate::kubevirt::convert::convert;
use crate::kubevirt::networks::build_networking;
use crate::kubevirt::ownership::{KUBEVIRT_VM_LABEL, user_data_secret_name};
use crate::kubevirt::userdata::merge_ssh_keys;
use crate::kubevirt::volumes::{StorageInputs, build_storage};
use crate::spi::{CreateRequest, SpiError};

/// Key of the userdata in its Secret, as KubeVirt's cloudInitNoCloud reads it.
pub const USER_DATA_SECRET_KEY: &str = "userdata";
/// `Always`: KubeVirt restarts the VMI whenever it stops, as a node should be.
pub const RUN_STRATEGY: &str = "Always";
pub const TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;

#[derive(Debug, Clone, PartialEq)]
pub struct ComposedMachine {
    pub vm: VirtualMachine,
    pub user_data_secret: Secret,
}

pub fn compose_machine(request: &CreateRequest) -> Result<ComposedMachine, SpiError> {
    let spec = &request.spec;
    let name = request.ownership.machine_name.as_str();
    let namespace = request.secret.access.namespace.as_str();

    // Tags first, so the provider's labels always win.
    let mut labels = spec.tags.clone();
    labels.extend(request.ownership.labels());
    labels.insert(KUBEVIRT_VM_LABEL.to_owned(), name.to_owned());
    let object_meta = |name: String| ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.to_owned()),
        labels: Some(request.ownership.labels()),
        ..Default::default()
    };

    let user_data = merge_ssh_keys(&request.secret.user_data, &spec.ssh_keys).map_err(|error| {
        SpiError::from(crate::field::FieldErrors::from(FieldError::invalid(
            &FieldPath::new("providerSpec").child("sshKeys"),
            error.to_string(),
        )))
    })?;
    let secret_name = user_data_secret_name(name);
    let user_data_secret = Secret {
        metadata: object_meta(secret_name.clone()),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            USER_DATA_SECRET_KEY.to_owned(),
            ByteString(user_data),
        )])),
        ..Default::default()
    };

    let networking = build_networking(&spec.networks);
    let devices = spec.devices.clone().unwrap_or_default();
    let ownership_labels = request.ownership.labels();
    let storage = build_storage(&StorageInputs {
        machine_name: name,
        labels: &ownership_labels,
        user_data_secret: &secret_name,
        network_data: networking.network_data.as_deref(),
        root_volume: &spec.root_volume,
        additional_volumes: &spec.additional_volumes,
        configured_disks: &devices.disks,
    })?;

    let template_metadata: BTreeMap<String, Value> =
        BTreeMap::from([("labels".to_owned(), json!(labels))]);
    let vm_spec = VirtualMachineSpec {
        run_strategy: Some(RUN_STRATEGY.to_owned()),
        data_volume_templates: Some(storage.data_volume_templates),
        template: VirtualMachineTemplate {
            metadata: Some(template_metadata),
            spec: Some(VirtualMachineTemplateSpec {
                domain: VirtualMachineTemplateSpecDomain {
                    resources: Some(spec.resources.clone()),
                    cpu: spec.cpu.clone(),
                    memory: spec.memory.clone(),
                    devices: VirtualMachineTemplateSpecDomainDevices {
                        disks: Some(storage.disks),
                        interfaces: networking.interfaces,
                        rng: devices.rng,
                        block_multi_queue: devices.block_multi_queue.then_some(true),
                        network_interface_multiqueue: devices
                            .network_interface_multi_queue
                            .then_some(true),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                affinity: build_affinity(&spec.region, &spec.zone)
                    .map(|affinity| convert(&affinity, "affinity"))
                    .transpose()?,
                termination_grace_period_seconds: Some(TERMINATION_GRACE_PERIOD_SECONDS),
                volumes: Some(storage.volumes),
                networks: networking.networks,
                dns_policy: spec.dns_policy.clone(),
                dns_config: spec
                    .dns_config
                    .as_ref()
                    .map(|config| convert(config, "dnsConfig"))
                    .transpose()?,
                ..Default::default()
            }),
        },
        ..Default::default()
    };
    let mut vm = VirtualMachine::new(name, vm_spec);
    vm.metadata = ObjectMeta {
        labels: Some(labels),
        ..object_meta(name.to_owned())
    };
    Ok(ComposedMachine {
        vm,
        user_data_secret,
    })
}
