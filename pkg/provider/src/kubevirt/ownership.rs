//! Which VMs and Secrets this provider owns, and for which cluster.
//!
//! MCM's safety controller deletes every VM that ListMachines returns and no Machine
//! claims. So ListMachines must return only VMs this provider created for this MCM's
//! cluster, never other VMs that share the namespace (another shoot's, or a person's):
//! that is decided by provider-owned labels, not by user tags.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::field::is_label_value;

pub const PROVIDER_NAME: &str = "kubevirt";
pub const PROVIDER_ID_PREFIX: &str = "kubevirt://";

/// Prefix of the labels this provider owns; tags may not use it.
pub const LABEL_PREFIX: &str = "kubevirt.provider.machine.sapcloud.io/";
pub const MACHINE_LABEL: &str = "kubevirt.provider.machine.sapcloud.io/machine";
pub const MACHINE_CLASS_LABEL: &str = "kubevirt.provider.machine.sapcloud.io/machine-class";
/// The cluster identity: the namespace of the MCM that owns the machines (its MachineClass
/// namespace), unique per MCM instance and a valid label value by construction.
pub const CLUSTER_LABEL: &str = "kubevirt.provider.machine.sapcloud.io/cluster";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "machine-controller-manager-provider-kubevirt";
/// Set by KubeVirt tooling and by the Go provider on every VM it created.
pub const KUBEVIRT_VM_LABEL: &str = "kubevirt.io/vm";

/// The identity a VM is created under and listed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    pub machine_name: String,
    pub machine_class: String,
    pub cluster: String,
}

/// How an existing object relates to a machine of this provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Created by this provider for this machine and cluster.
    Ours,
    /// Created by the Go provider (only `kubevirt.io/vm`): adopted, never listed as orphan.
    Legacy,
    /// Anything else: never changed or deleted.
    Foreign,
}

impl Ownership {
    /// Labels every object this provider creates carries.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
            (CLUSTER_LABEL.to_owned(), self.cluster.clone()),
            (MACHINE_LABEL.to_owned(), self.machine_name.clone()),
            (
                MACHINE_CLASS_LABEL.to_owned(),
                label_safe(&self.machine_class),
            ),
        ])
    }

    /// Classifies an object named after this machine by its labels.
    pub fn owner_of(&self, labels: Option<&BTreeMap<String, String>>) -> Owner {
        let label = |key: &str| {
            labels
                .and_then(|labels| labels.get(key))
                .map(String::as_str)
        };
        if label(MANAGED_BY_LABEL) == Some(MANAGED_BY_VALUE) {
            if label(CLUSTER_LABEL) == Some(self.cluster.as_str())
                && label(MACHINE_LABEL) == Some(self.machine_name.as_str())
            {
                Owner::Ours
            } else {
                Owner::Foreign
            }
        } else if label(KUBEVIRT_VM_LABEL) == Some(self.machine_name.as_str()) {
            Owner::Legacy
        } else {
            Owner::Foreign
        }
    }
}

/// The label selector for ListMachines: this provider's VMs of one cluster, whatever the tags.
pub fn cluster_selector(cluster: &str) -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{CLUSTER_LABEL}={cluster}")
}

/// A label value for a name that may be longer than 63 characters (MachineClass names are
/// DNS subdomains): a readable prefix plus a hash, stable across calls.
pub fn label_safe(name: &str) -> String {
    if is_label_value(name) {
        return name.to_owned();
    }
    let digest = Sha256::digest(name.as_bytes());
    let hash: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    let prefix: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(52)
        .collect();
    let prefix = prefix.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if prefix.is_empty() {
        hash
    } else {
        format!("{prefix}-{hash}")
    }
}

pub fn encode_provider_id(vm_name: &str) -> String {
    format!("{PROVIDER_ID_PREFIX}{vm_name}")
}

/// The VM name inside a providerID of this provider, if it is one.
pub fn decode_provider_id(provider_id: &str) -> Option<&str> {
    provider_id
        .strip_prefix(PROVIDER_ID_PREFIX)
        .filter(|name| !name.is_empty())
}

/// Name of the Secret holding a machine's cloud-init userdata. Deterministic, so a retried
/// CreateMachine finds the Secret an earlier attempt wrote instead of adding another.
pub fn user_data_secret_name(machine_name: &str) -> String {
    format!("userdata-{machine_name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ownership() -> Ownership {
        Ownership {
            machine_name: "m-1".into(),
            machine_class: "class".into(),
            cluster: "shoot--p--c".into(),
        }
    }

    #[test]
    fn labels_identify_machine_class_and_cluster() {
        let labels = ownership().labels();
        assert_eq!(labels[MACHINE_LABEL], "m-1");
        assert_eq!(labels[MACHINE_CLASS_LABEL], "class");
        assert_eq!(labels[CLUSTER_LABEL], "shoot--p--c");
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY_VALUE);
        assert_eq!(ownership().owner_of(Some(&labels)), Owner::Ours);
    }

    #[test]
    fn other_clusters_and_unlabelled_objects_are_foreign() {
        let mut labels = ownership().labels();
        labels.insert(CLUSTER_LABEL.into(), "shoot--p--other".into());
        assert_eq!(ownership().owner_of(Some(&labels)), Owner::Foreign);
        assert_eq!(ownership().owner_of(None), Owner::Foreign);
        let legacy = BTreeMap::from([(KUBEVIRT_VM_LABEL.to_owned(), "m-1".to_owned())]);
        assert_eq!(ownership().owner_of(Some(&legacy)), Owner::Legacy);
        let legacy_other = BTreeMap::from([(KUBEVIRT_VM_LABEL.to_owned(), "m-2".to_owned())]);
        assert_eq!(ownership().owner_of(Some(&legacy_other)), Owner::Foreign);
    }

    #[test]
    fn selector_never_depends_on_tags() {
        assert_eq!(
            cluster_selector("ns"),
            "app.kubernetes.io/managed-by=machine-controller-manager-provider-kubevirt,kubevirt.provider.machine.sapcloud.io/cluster=ns"
        );
    }

    #[test]
    fn long_names_become_stable_label_values() {
        let long = format!("{}.example.com", "a".repeat(80));
        let safe = label_safe(&long);
        assert!(is_label_value(&safe), "{safe}");
        assert_eq!(safe, label_safe(&long));
        assert_ne!(safe, label_safe(&format!("{}.example.org", "a".repeat(80))));
        assert_eq!(label_safe("short"), "short");
    }

    #[test]
    fn provider_ids_round_trip() {
        assert_eq!(encode_provider_id("m-1"), "kubevirt://m-1");
        assert_eq!(decode_provider_id("kubevirt://m-1"), Some("m-1"));
        assert_eq!(decode_provider_id("kubevirt://"), None);
        assert_eq!(decode_provider_id("aws:///i-1"), None);
        assert_eq!(user_data_secret_name("m-1"), "userdata-m-1");
    }
}
