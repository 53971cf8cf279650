//! `KubeVirtProviderSpec`: the `providerSpec` of a MachineClass.
//!
//! Field for field the Go provider's spec, so its MachineClasses keep working. Decoding is
//! strict: every field the schema does not know, at any depth, is reported by its path
//! instead of being silently dropped, which is what a typo in a MachineClass otherwise
//! turns into.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, PodDNSConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::field::{FieldError, FieldErrorKind, FieldErrors, FieldPath};

/// KubeVirt and CDI types the spec embeds, generated from the upstream schemas.
pub mod kubevirt_types {
    use kubevirt_api::kubevirt::v1::virtualmachines as vm;

    pub use kubevirt_api::cdi::v1beta1::datavolumes::DataVolumeSpec;
    pub type ResourceRequirements = vm::VirtualMachineTemplateSpecDomainResources;
    pub type Cpu = vm::VirtualMachineTemplateSpecDomainCpu;
    pub type Memory = vm::VirtualMachineTemplateSpecDomainMemory;
    pub type Disk = vm::VirtualMachineTemplateSpecDomainDevicesDisks;
    pub type Rng = vm::VirtualMachineTemplateSpecDomainDevicesRng;
    pub type ConfigMapVolumeSource = vm::VirtualMachineTemplateSpecVolumesConfigMap;
    pub type SecretVolumeSource = vm::VirtualMachineTemplateSpecVolumesSecret;
}

use kubevirt_types::{
    ConfigMapVolumeSource, Cpu, DataVolumeSpec, Disk, Memory, ResourceRequirements, Rng,
    SecretVolumeSource,
};

/// Name of the root disk in `devices.disks`, as in the Go provider.
pub const ROOT_DISK_NAME: &str = "root-disk";

/// Parameters of the KubeVirt VMs of one MachineClass.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct KubeVirtProviderSpec {
    /// Region of the VM; `default` selects nodes without a region label.
    #[serde(default)]
    pub region: String,
    /// Zone of the VM; `default` selects nodes without a zone label.
    #[serde(default)]
    pub zone: String,
    /// CPU and memory requests and limits of the VM.
    #[serde(default)]
    pub resources: ResourceRequirements,
    /// Disk customisation and high-performance options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Devices>,
    /// The CDI DataVolume the VM boots from.
    #[serde(default)]
    pub root_volume: DataVolumeSpec,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_volumes: Vec<AdditionalVolumeSpec>,
    /// SSH public keys merged into the `#cloud-config` userData.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_keys: Vec<String>,
    /// Multus networks (`name` or `namespace/name`); without a default one the pod network is added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// `ClusterFirst` (default), `ClusterFirstWithHostNet`, `Default` or `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<PodDNSConfig>,
    /// Labels added to the VM and its pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// A volume beyond the root volume: exactly one of `dataVolume` and `volumeSource`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct AdditionalVolumeSpec {
    /// Matches a `devices.disks[].name` to customise the disk.
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_volume: Option<DataVolumeSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_source: Option<VolumeSource>,
}

/// An existing source: exactly one of its members.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct VolumeSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PersistentVolumeClaimVolumeSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapVolumeSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretVolumeSource>,
}

/// Devices of the VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct Devices {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Disk>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rng: Option<Rng>,
    #[serde(default)]
    pub block_multi_queue: bool,
    /// Spelled with a lower-case `q`, as in the Go provider and KubeVirt.
    #[serde(default, rename = "networkInterfaceMultiqueue")]
    pub network_interface_multi_queue: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct NetworkSpec {
    /// NetworkAttachmentDefinition, `name` or `namespace/name`.
    #[serde(default)]
    pub name: String,
    /// Whether this network replaces the pod network as the default.
    #[serde(default)]
    pub default: bool,
}

/// JSON schema of `providerSpec`, for editors and admission tooling.
pub fn provider_spec_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(KubeVirtProviderSpec)).unwrap_or(Value::Null)
}

/// The root of every path in provider spec errors.
pub fn spec_root() -> FieldPath {
    FieldPath::new("providerSpec")
}

/// Decodes a MachineClass `providerSpec` and validates it
/// ([`crate::validation::validate_provider_spec`]), reporting type errors, unknown fields
/// and rule violations by path.
pub fn decode_provider_spec(raw: &Value) -> Result<KubeVirtProviderSpec, FieldErrors> {
    let root = spec_root();
    if !raw.is_object() {
        let detail = if raw.is_null() {
            "the MachineClass has no providerSpec"
        } else {
            "must be an object"
        };
        return Err(FieldError::new(FieldErrorKind::Invalid, &root, detail).into());
    }
    let mut unknown = Vec::new();
    let mut record_unknown = |path: serde_ignored::Path| {
        // A null is no setting at all, not a typo worth reporting.
        if !value_at(raw, &path).is_some_and(Value::is_null) {
            unknown.push(ignored_path(&root, &path));
        }
    };
    let decoded: Result<KubeVirtProviderSpec, _> = serde_path_to_error::deserialize(
        serde_ignored::Deserializer::new(raw, &mut record_unknown),
    );
    let mut errors = FieldErrors::default();
    for path in unknown {
        errors.push(FieldError::new(FieldErrorKind::Unknown, &path, ""));
    }
    let spec = match decoded {
        Ok(spec) => spec,
        Err(error) => {
            let path = join_serde_path(&root, error.path());
            let message = error.into_inner().to_string();
            errors.push(match missing_field(&message) {
                Some(field) => FieldError::required(&path.child(field), "must be given"),
                None => FieldError::invalid(&path, message),
            });
            return Err(errors);
        }
    };
    errors.into_result()?;
    crate::validation::validate_provider_spec(&spec).into_result()?;
    Ok(spec)
}

/// The given value an ignored path points at.
fn value_at<'a>(raw: &'a Value, path: &serde_ignored::Path) -> Option<&'a Value> {
    use serde_ignored::Path;
    match path {
        Path::Root => Some(raw),
        Path::Seq { parent, index } => value_at(raw, parent)?.get(*index),
        Path::Map { parent, key } => value_at(raw, parent)?.get(key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => value_at(raw, parent),
    }
}

/// serde's "missing field `name`", which belongs to the field rather than its parent.
fn missing_field(serde_message: &str) -> Option<&str> {
    serde_message
        .strip_prefix("missing field `")?
        .strip_suffix('`')
}

fn join_serde_path(root: &FieldPath, path: &serde_path_to_error::Path) -> FieldPath {
    use serde_path_to_error::Segment;
    path.iter()
        .fold(root.clone(), |path, segment| match segment {
            Segment::Seq { index } => path.index(*index),
            Segment::Map { key } => path.child(key),
            Segment::Enum { variant } => path.child(variant),
            Segment::Unknown => path,
        })
}

fn ignored_path(root: &FieldPath, path: &serde_ignored::Path) -> FieldPath {
    use serde_ignored::Path;
    match path {
        Path::Root => root.clone(),
        Path::Seq { parent, index } => ignored_path(root, parent).index(*index),
        Path::Map { parent, key } => ignored_path(root, parent).child(key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path(root, parent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::testing::provider_spec_json as go_provider_sample;

    #[test]
    fn go_provider_spec_decodes_unchanged() {
        let raw = go_provider_sample();
        let spec = decode_provider_spec(&raw).unwrap();
        assert_eq!(spec.region, "local");
        assert_eq!(spec.additional_volumes[0].name, "data");
        assert!(spec.devices.as_ref().unwrap().network_interface_multi_queue);
        assert_eq!(spec.networks[0].name, "default/net-conf");
        // The embedded KubeVirt and CDI parts re-encode to exactly what was given.
        let encoded = serde_json::to_value(&spec).unwrap();
        for key in [
            "resources",
            "rootVolume",
            "additionalVolumes",
            "cpu",
            "memory",
            "devices",
            "dnsConfig",
            "tags",
        ] {
            assert_eq!(encoded[key], raw[key], "{key}");
        }
    }

    #[test]
    fn unknown_fields_are_named_at_any_depth() {
        let mut raw = go_provider_sample();
        raw["regoin"] = json!("x");
        let err = decode_provider_spec(&raw).unwrap_err().to_string();
        assert!(err.contains("providerSpec.regoin: Unknown field"), "{err}");

        let mut raw = go_provider_sample();
        raw["rootVolume"]["pvc"]["storageClass"] = json!("fast");
        raw["cpu"]["coars"] = json!(2);
        let err = decode_provider_spec(&raw).unwrap_err().to_string();
        assert!(
            err.contains("providerSpec.rootVolume.pvc.storageClass: Unknown field"),
            "{err}"
        );
        assert!(
            err.contains("providerSpec.cpu.coars: Unknown field"),
            "{err}"
        );

        let mut raw = go_provider_sample();
        raw["additionalVolumes"][0]["dataVolumes"] = json!({});
        let err = decode_provider_spec(&raw).unwrap_err().to_string();
        assert!(
            err.contains("providerSpec.additionalVolumes[0].dataVolumes: Unknown field"),
            "{err}"
        );
    }

    #[test]
    fn wrong_types_are_named() {
        let mut raw = go_provider_sample();
        raw["cpu"]["cores"] = json!("two");
        let err = decode_provider_spec(&raw).unwrap_err().to_string();
        assert!(
            err.starts_with("providerSpec.cpu.cores: Invalid value"),
            "{err}"
        );

        let mut raw = go_provider_sample();
        raw["sshKeys"] = json!("ssh-rsa A");
        let err = decode_provider_spec(&raw).unwrap_err().to_string();
        assert!(
            err.starts_with("providerSpec.sshKeys: Invalid value"),
            "{err}"
        );
    }

    #[test]
    fn non_objects_are_rejected() {
        for raw in [Value::Null, json!([]), json!("x"), json!(3)] {
            let err = decode_provider_spec(&raw).unwrap_err().to_string();
            assert!(err.starts_with("providerSpec: Invalid value"), "{err}");
        }
    }

    #[test]
    fn schema_describes_every_top_level_field_and_forbids_others() {
        let schema = provider_spec_schema();
        let properties = schema["properties"].as_object().unwrap();
        for field in [
            "region",
            "zone",
            "resources",
            "devices",
            "rootVolume",
            "additionalVolumes",
            "sshKeys",
            "networks",
            "cpu",
            "memory",
            "dnsPolicy",
            "dnsConfig",
            "tags",
        ] {
            assert!(properties.contains_key(field), "{field}");
        }
        assert_eq!(properties.len(), 13);
        assert_eq!(schema["additionalProperties"], json!(false));
    }

    #[test]
    fn nulls_count_as_absent() {
        let mut raw = go_provider_sample();
        raw["dnsConfig"] = Value::Null;
        raw["cpu"]["model"] = Value::Null;
        raw["notAField"] = Value::Null;
        let spec = decode_provider_spec(&raw).unwrap();
        assert!(spec.dns_config.is_none());
    }

    #[test]
    fn a_null_where_a_value_is_needed_is_named_not_dropped() {
        let mut raw = go_provider_sample();
        raw["tags"]["team"] = Value::Null;
        let err = decode_provider_spec(&raw).unwrap_err().to_string();
        assert!(
            err.starts_with("providerSpec.tags.team: Invalid value"),
            "{err}"
        );
    }
}
