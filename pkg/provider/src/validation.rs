//! Semantic checks of a decoded provider spec: the Go provider's rules, plus the ones
//! that keep the VM, its labels and its volumes valid before the API server sees them;
//! and of the machine name the VM is named after.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_quantity::ParsedQuantity;

use crate::field::{
    FieldError, FieldErrorKind, FieldErrors, FieldPath, is_dns1123_label, is_label_key,
    is_label_value,
};
use crate::kubevirt::ownership::{KUBEVIRT_VM_LABEL, LABEL_PREFIX, MANAGED_BY_LABEL};
use crate::provider_spec::kubevirt_types::DataVolumeSpec;
use crate::provider_spec::{KubeVirtProviderSpec, ROOT_DISK_NAME, spec_root};

const DNS_POLICIES: [&str; 4] = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];

/// The machine name becomes the VM, node and label value, so it must be a DNS-1123 label.
pub fn validate_machine_name(name: &str) -> FieldErrors {
    let path = FieldPath::new("machine").child("metadata").child("name");
    let mut errors = FieldErrors::default();
    if name.is_empty() {
        errors.push(FieldError::required(&path, "cannot be empty"));
    } else if !is_dns1123_label(name) {
        errors.push(FieldError::invalid(
            &path,
            format!(
                "{name:?} must be a DNS-1123 label (at most 63 lowercase alphanumerics or '-')"
            ),
        ));
    }
    errors
}

/// All problems of the spec at once, each naming its field.
pub fn validate_provider_spec(spec: &KubeVirtProviderSpec) -> FieldErrors {
    let root = spec_root();
    let mut errors = FieldErrors::default();

    if spec.region.is_empty() {
        errors.push(FieldError::required(
            &root.child("region"),
            "cannot be empty",
        ));
    }
    if spec.zone.is_empty() {
        errors.push(FieldError::required(&root.child("zone"), "cannot be empty"));
    }

    let resources = root.child("resources");
    validate_quantities(
        &resources.child("requests"),
        spec.resources.requests.as_ref(),
        &mut errors,
    );
    validate_quantities(
        &resources.child("limits"),
        spec.resources.limits.as_ref(),
        &mut errors,
    );
    let requests = spec.resources.requests.as_ref();
    for resource in ["memory", "cpu"] {
        require_positive(
            &resources.child("requests").child(resource),
            requests.and_then(|r| r.get(resource)),
            &mut errors,
        );
    }

    if let Some(cpu) = &spec.cpu {
        // KubeVirt's counts are unsigned; its CRD schema lets a negative one through to the
        // webhook, which then fails with a decoding error naming no field.
        let counts = [
            ("cores", cpu.cores),
            ("sockets", cpu.sockets),
            ("threads", cpu.threads),
            ("maxSockets", cpu.max_sockets),
        ];
        for (field, count) in counts {
            if count.is_some_and(|count| count < 0) {
                errors.push(FieldError::invalid(
                    &root.child("cpu").child(field),
                    "must not be negative",
                ));
            }
        }
    }

    validate_data_volume(&root.child("rootVolume"), &spec.root_volume, &mut errors);

    let mut volume_names = BTreeSet::new();
    for (index, volume) in spec.additional_volumes.iter().enumerate() {
        let path = root.child("additionalVolumes").index(index);
        if volume.name.is_empty() {
            errors.push(FieldError::required(&path.child("name"), "cannot be empty"));
        } else if volume.name == ROOT_DISK_NAME {
            errors.push(FieldError::invalid(
                &path.child("name"),
                format!("{ROOT_DISK_NAME:?} is the root volume's name"),
            ));
        } else if !volume_names.insert(volume.name.as_str()) {
            errors.push(FieldError::new(
                FieldErrorKind::Duplicate,
                &path.child("name"),
                format!("{:?}", volume.name),
            ));
        }
        match (&volume.data_volume, &volume.volume_source) {
            (Some(data_volume), None) => {
                validate_data_volume(&path.child("dataVolume"), data_volume, &mut errors)
            }
            (None, Some(source)) => {
                let given = [
                    source.persistent_volume_claim.is_some(),
                    source.config_map.is_some(),
                    source.secret.is_some(),
                ];
                if given.iter().filter(|given| **given).count() != 1 {
                    errors.push(FieldError::invalid(
                        &path.child("volumeSource"),
                        "exactly one of persistentVolumeClaim, configMap and secret must be specified",
                    ));
                }
            }
            _ => errors.push(FieldError::invalid(
                &path,
                "exactly one of dataVolume and volumeSource must be specified",
            )),
        }
    }

    if let Some(policy) = &spec.dns_policy {
        if !DNS_POLICIES.contains(&policy.as_str()) {
            errors.push(FieldError::invalid(
                &root.child("dnsPolicy"),
                format!("{policy:?}: must be one of {}", DNS_POLICIES.join(", ")),
            ));
        }
        if policy == "None" {
            let nameservers = spec
                .dns_config
                .as_ref()
                .and_then(|c| c.nameservers.as_ref());
            if spec.dns_config.is_none() {
                errors.push(FieldError::required(
                    &root.child("dnsConfig"),
                    "cannot be empty when DNS policy is None",
                ));
            } else if nameservers.is_none_or(Vec::is_empty) {
                errors.push(FieldError::required(
                    &root.child("dnsConfig").child("nameservers"),
                    "cannot be empty when DNS policy is None",
                ));
            }
        }
    }

    if let Some(devices) = &spec.devices {
        let disks_path = root.child("devices").child("disks");
        let volumes = spec.additional_volumes.len() + 1;
        if devices.disks.len() > volumes {
            errors.push(FieldError::invalid(
                &disks_path,
                format!("{} disks for {volumes} volumes", devices.disks.len()),
            ));
        }
        let mut disk_names = BTreeSet::new();
        for (index, disk) in devices.disks.iter().enumerate() {
            let path = disks_path.index(index);
            if disk.boot_order.is_some() {
                errors.push(FieldError::forbidden(
                    &path.child("bootOrder"),
                    "cannot be set",
                ));
            }
            if disk.name.is_empty() {
                errors.push(FieldError::required(&path.child("name"), "cannot be empty"));
            } else if !disk_names.insert(disk.name.as_str()) {
                errors.push(FieldError::new(
                    FieldErrorKind::Duplicate,
                    &path.child("name"),
                    format!("{:?}", disk.name),
                ));
            } else if disk.name != ROOT_DISK_NAME && !volume_names.contains(disk.name.as_str()) {
                errors.push(FieldError::invalid(
                    &path.child("name"),
                    format!(
                        "{:?} matches neither {ROOT_DISK_NAME:?} nor an additional volume",
                        disk.name
                    ),
                ));
            }
        }
    }

    let mut defaults = 0;
    for (index, network) in spec.networks.iter().enumerate() {
        let path = root.child("networks").index(index);
        if network.name.is_empty() {
            errors.push(FieldError::required(&path.child("name"), "cannot be empty"));
        } else if !network.name.split('/').take(2).all(is_dns1123_label)
            || network.name.matches('/').count() > 1
        {
            errors.push(FieldError::invalid(
                &path.child("name"),
                format!("{:?} must be <name> or <namespace>/<name>", network.name),
            ));
        }
        defaults += usize::from(network.default);
    }
    if defaults > 1 {
        errors.push(FieldError::invalid(
            &root.child("networks"),
            "at most one network can be the default",
        ));
    }

    for (index, key) in spec.ssh_keys.iter().enumerate() {
        if key.trim().is_empty() {
            errors.push(FieldError::required(
                &root.child("sshKeys").index(index),
                "cannot be empty",
            ));
        }
    }

    validate_tags(&root.child("tags"), &spec.tags, &mut errors);
    errors
}

fn validate_tags(path: &FieldPath, tags: &BTreeMap<String, String>, errors: &mut FieldErrors) {
    for (key, value) in tags {
        let path = path.key(key);
        if !is_label_key(key) {
            errors.push(FieldError::invalid(&path, "key must be a valid label key"));
        } else if key.starts_with(LABEL_PREFIX)
            || key == MANAGED_BY_LABEL
            || key == KUBEVIRT_VM_LABEL
        {
            errors.push(FieldError::forbidden(
                &path,
                "this label is set by the provider",
            ));
        }
        if !is_label_value(value) {
            errors.push(FieldError::invalid(
                &path,
                format!("{value:?}: a label value has at most 63 alphanumerics, '-', '_' or '.' and starts and ends with an alphanumeric"),
            ));
        }
    }
}

fn validate_data_volume(path: &FieldPath, volume: &DataVolumeSpec, errors: &mut FieldErrors) {
    // CDI takes the size from `pvc` (the Go provider's form) or from `storage` (newer).
    let (claim_path, requests) = match (&volume.pvc, &volume.storage) {
        (Some(pvc), None) => (
            path.child("pvc"),
            pvc.resources.as_ref().and_then(|r| r.requests.as_ref()),
        ),
        (None, Some(storage)) => (
            path.child("storage"),
            storage.resources.as_ref().and_then(|r| r.requests.as_ref()),
        ),
        (None, None) => {
            errors.push(FieldError::required(&path.child("pvc"), "cannot be empty"));
            return;
        }
        (Some(_), Some(_)) => {
            errors.push(FieldError::invalid(
                path,
                "only one of pvc and storage may be specified",
            ));
            return;
        }
    };
    let requests_path = claim_path.child("resources").child("requests");
    validate_quantities(&requests_path, requests, errors);
    require_positive(
        &requests_path.child("storage"),
        requests.and_then(|r| r.get("storage")),
        errors,
    );
}

fn quantity_text(value: &IntOrString) -> String {
    match value {
        IntOrString::Int(number) => number.to_string(),
        IntOrString::String(text) => text.clone(),
    }
}

fn parse_quantity(value: &IntOrString) -> Option<ParsedQuantity> {
    ParsedQuantity::try_from(quantity_text(value).as_str()).ok()
}

/// A quantity that must be given and above zero; one that does not parse is reported by
/// [`validate_quantities`] already.
fn require_positive(path: &FieldPath, value: Option<&IntOrString>, errors: &mut FieldErrors) {
    let Some(value) = value else {
        errors.push(FieldError::required(path, "must be given"));
        return;
    };
    let amount = parse_quantity(value).and_then(|quantity| quantity.to_bytes_f64());
    if amount.is_some_and(|amount| amount <= 0.0) {
        errors.push(FieldError::invalid(
            path,
            format!("{:?} must be above zero", quantity_text(value)),
        ));
    }
}

fn validate_quantities(
    path: &FieldPath,
    quantities: Option<&BTreeMap<String, IntOrString>>,
    errors: &mut FieldErrors,
) {
    for (name, value) in quantities.into_iter().flatten() {
        if parse_quantity(value).is_none() {
            errors.push(FieldError::invalid(
                &path.child(name),
                format!("{:?} is not a quantity", quantity_text(value)),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::provider_spec::decode_provider_spec;
    use crate::testing::provider_spec_json;

    type Edit = Box<dyn FnOnce(&mut Value)>;

    /// Applies `edit` to the valid sample and returns the decode error text.
    fn rejection(edit: impl FnOnce(&mut Value)) -> String {
        let mut spec = provider_spec_json();
        edit(&mut spec);
        decode_provider_spec(&spec)
            .map(|_| String::new())
            .unwrap_or_else(|errors| errors.to_string())
    }

    #[test]
    fn the_sample_is_valid() {
        assert_eq!(rejection(|_| {}), "");
    }

    #[test]
    fn each_rule_names_its_field() {
        let cases: Vec<(&str, Edit)> = vec![
            (
                "providerSpec.region: Required value",
                Box::new(|s| s["region"] = json!("")),
            ),
            (
                "providerSpec.zone: Required value",
                Box::new(|s| {
                    s.as_object_mut().unwrap().remove("zone");
                }),
            ),
            (
                "providerSpec.resources.requests.memory: Invalid value: \"0\" must be above zero",
                Box::new(|s| s["resources"]["requests"]["memory"] = json!("0")),
            ),
            (
                "providerSpec.resources.requests.cpu: Required value",
                Box::new(|s| {
                    s["resources"]["requests"]
                        .as_object_mut()
                        .unwrap()
                        .remove("cpu");
                }),
            ),
            (
                "providerSpec.resources.limits.memory: Invalid value",
                Box::new(|s| s["resources"]["limits"]["memory"] = json!("8 gigs")),
            ),
            (
                "providerSpec.rootVolume.pvc: Required value",
                Box::new(|s| s["rootVolume"] = json!({"source": {"blank": {}}})),
            ),
            (
                "providerSpec.rootVolume.pvc.resources.requests.storage: Required value",
                Box::new(|s| s["rootVolume"]["pvc"]["resources"] = json!({})),
            ),
            (
                "providerSpec.rootVolume: Invalid value: only one of pvc and storage",
                Box::new(|s| s["rootVolume"]["storage"] = json!({})),
            ),
            (
                "providerSpec.additionalVolumes[0].dataVolume.pvc.resources.requests.storage: Invalid value",
                Box::new(|s| {
                    s["additionalVolumes"][0]["dataVolume"]["pvc"]["resources"]["requests"]["storage"] =
                        json!("lots")
                }),
            ),
            (
                "providerSpec.additionalVolumes[0].name: Required value",
                Box::new(|s| s["additionalVolumes"][0]["name"] = json!("")),
            ),
            (
                "providerSpec.additionalVolumes[1].name: Duplicate value",
                Box::new(|s| {
                    let v = s["additionalVolumes"][0].clone();
                    s["additionalVolumes"].as_array_mut().unwrap().push(v);
                }),
            ),
            (
                "providerSpec.additionalVolumes[0]: Invalid value: exactly one of dataVolume and volumeSource",
                Box::new(|s| {
                    s["additionalVolumes"][0]["volumeSource"] = json!({"configMap": {"name": "c"}})
                }),
            ),
            (
                "providerSpec.additionalVolumes[0].volumeSource: Invalid value",
                Box::new(|s| s["additionalVolumes"][0] = json!({"name": "x", "volumeSource": {}})),
            ),
            (
                "providerSpec.dnsPolicy: Invalid value",
                Box::new(|s| s["dnsPolicy"] = json!("ClusterLast")),
            ),
            (
                "providerSpec.dnsConfig: Required value",
                Box::new(|s| {
                    s["dnsPolicy"] = json!("None");
                    s.as_object_mut().unwrap().remove("dnsConfig");
                }),
            ),
            (
                "providerSpec.dnsConfig.nameservers: Required value",
                Box::new(|s| {
                    s["dnsPolicy"] = json!("None");
                    s["dnsConfig"] = json!({"searches": ["a"]});
                }),
            ),
            (
                "providerSpec.devices.disks[0].bootOrder: Forbidden",
                Box::new(|s| {
                    s["devices"]["disks"] = json!([{"name": "root-disk", "bootOrder": 1}])
                }),
            ),
            (
                "providerSpec.devices.disks[0].name: Invalid value",
                Box::new(|s| s["devices"]["disks"] = json!([{"name": "nope"}])),
            ),
            (
                "providerSpec.devices.disks[1].name: Duplicate value",
                Box::new(|s| s["devices"]["disks"] = json!([{"name": "data"}, {"name": "data"}])),
            ),
            (
                "providerSpec.devices.disks: Invalid value: 3 disks for 2 volumes",
                Box::new(|s| {
                    s["devices"]["disks"] =
                        json!([{"name": "root-disk"}, {"name": "data"}, {"name": "x"}])
                }),
            ),
            (
                "providerSpec.networks[0].name: Required value",
                Box::new(|s| s["networks"] = json!([{"name": ""}])),
            ),
            (
                "providerSpec.networks[0].name: Invalid value",
                Box::new(|s| s["networks"] = json!([{"name": "a/b/c"}])),
            ),
            (
                "providerSpec.networks: Invalid value: at most one network",
                Box::new(|s| {
                    s["networks"] =
                        json!([{"name": "a", "default": true}, {"name": "b", "default": true}])
                }),
            ),
            (
                "providerSpec.sshKeys[0]: Required value",
                Box::new(|s| s["sshKeys"] = json!(["  "])),
            ),
            (
                "providerSpec.tags[mcm.gardener.cloud/role]: Invalid value",
                Box::new(|s| s["tags"]["mcm.gardener.cloud/role"] = json!("node,")),
            ),
            (
                "providerSpec.tags[bad key!]: Invalid value",
                Box::new(|s| s["tags"]["bad key!"] = json!("v")),
            ),
            (
                "providerSpec.tags[kubevirt.provider.machine.sapcloud.io/cluster]: Forbidden",
                Box::new(|s| {
                    s["tags"]["kubevirt.provider.machine.sapcloud.io/cluster"] = json!("x")
                }),
            ),
            (
                "providerSpec.tags[app.kubernetes.io/managed-by]: Forbidden",
                Box::new(|s| s["tags"]["app.kubernetes.io/managed-by"] = json!("me")),
            ),
        ];
        for (expected, edit) in cases {
            let error = rejection(edit);
            assert!(
                error.contains(expected),
                "expected {expected:?} in {error:?}"
            );
        }
    }
}
