//! Disks, volumes and DataVolume templates of the VM.
//!
//! Names follow the Go provider so its VMs and ours look alike: the root disk is
//! `root-disk` backed by DataVolume `<machine>`, the cloud-init disk `cloudinitdisk`, and
//! additional volume `i` is disk `disk<i>` backed by DataVolume `<machine>-<i>`.
//! `devices.disks` entries customise the disk whose volume has their name.

use std::collections::BTreeMap;

use kubevirt_api::kubevirt::v1::virtualmachines::{
    VirtualMachineDataVolumeTemplates as DataVolumeTemplate,
    VirtualMachineTemplateSpecDomainDevicesDisks as Disk,
    VirtualMachineTemplateSpecDomainDevicesDisksDisk as DiskTarget,
    VirtualMachineTemplateSpecVolumes as Volume,
    VirtualMachineTemplateSpecVolumesCloudInitNoCloud as CloudInitNoCloud,
    VirtualMachineTemplateSpecVolumesCloudInitNoCloudSecretRef as CloudInitSecretRef,
    VirtualMachineTemplateSpecVolumesDataVolume as DataVolumeSource,
};
use serde_json::{Value, json};

use crate::kubevirt::convert::convert;
use crate::provider_spec::kubevirt_types::DataVolumeSpec;
use crate::provider_spec::{AdditionalVolumeSpec, ROOT_DISK_NAME};
use crate::spi::SpiError;

pub const CLOUD_INIT_DISK_NAME: &str = "cloudinitdisk";

#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmStorage {
    pub disks: Vec<Disk>,
    pub volumes: Vec<Volume>,
    pub data_volume_templates: Vec<DataVolumeTemplate>,
}

/// What the storage of one VM is built from.
pub struct StorageInputs<'a> {
    pub machine_name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub user_data_secret: &'a str,
    pub network_data: Option<&'a str>,
    pub root_volume: &'a DataVolumeSpec,
    pub additional_volumes: &'a [AdditionalVolumeSpec],
    pub configured_disks: &'a [Disk],
}

fn virtio_disk(name: &str) -> Disk {
    Disk {
        name: name.to_owned(),
        disk: Some(DiskTarget {
            bus: Some("virtio".to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The configured disk for a volume, renamed to the disk name used in the VM.
fn disk_for(volume_name: &str, disk_name: &str, configured: &[Disk]) -> Disk {
    match configured.iter().find(|disk| disk.name == volume_name) {
        Some(disk) => Disk {
            name: disk_name.to_owned(),
            ..disk.clone()
        },
        None => virtio_disk(disk_name),
    }
}

fn data_volume_volume(disk_name: &str, data_volume: &str) -> Volume {
    Volume {
        name: disk_name.to_owned(),
        data_volume: Some(DataVolumeSource {
            name: data_volume.to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn template(
    name: &str,
    labels: &BTreeMap<String, String>,
    spec: &DataVolumeSpec,
) -> Result<DataVolumeTemplate, SpiError> {
    let metadata: BTreeMap<String, Value> = BTreeMap::from([
        ("name".to_owned(), json!(name)),
        ("labels".to_owned(), json!(labels)),
    ]);
    Ok(DataVolumeTemplate {
        metadata: Some(metadata),
        spec: convert(spec, "dataVolumeTemplates")?,
        ..Default::default()
    })
}

pub fn build_storage(inputs: &StorageInputs<'_>) -> Result<VmStorage, SpiError> {
    let machine = inputs.machine_name;
    let mut storage = VmStorage::default();

    storage.disks.push(disk_for(
        ROOT_DISK_NAME,
        ROOT_DISK_NAME,
        inputs.configured_disks,
    ));
    storage
        .volumes
        .push(data_volume_volume(ROOT_DISK_NAME, machine));
    storage
        .data_volume_templates
        .push(template(machine, inputs.labels, inputs.root_volume)?);

    storage.disks.push(virtio_disk(CLOUD_INIT_DISK_NAME));
    storage.volumes.push(Volume {
        name: CLOUD_INIT_DISK_NAME.to_owned(),
        cloud_init_no_cloud: Some(CloudInitNoCloud {
            secret_ref: Some(CloudInitSecretRef {
                name: Some(inputs.user_data_secret.to_owned()),
            }),
            network_data: inputs.network_data.map(str::to_owned),
            ..Default::default()
        }),
        ..Default::default()
    });

    for (index, volume) in inputs.additional_volumes.iter().enumerate() {
        let disk_name = format!("disk{index}");
        storage
            .disks
            .push(disk_for(&volume.name, &disk_name, inputs.configured_disks));
        if let Some(spec) = &volume.data_volume {
            let data_volume = format!("{machine}-{index}");
            storage
                .volumes
                .push(data_volume_volume(&disk_name, &data_volume));
            storage
                .data_volume_templates
                .push(template(&data_volume, inputs.labels, spec)?);
        } else if let Some(source) = &volume.volume_source {
            storage.volumes.push(Volume {
                name: disk_name,
                persistent_volume_claim: source
                    .persistent_volume_claim
                    .as_ref()
                    .map(|claim| convert(claim, "persistentVolumeClaim volume"))
                    .transpose()?,
                config_map: source.config_map.clone(),
                secret: source.secret.clone(),
                ..Default::default()
            });
        }
    }
    Ok(storage)
}
