//! What a Machine's nodeTemplate makes of its Node, without I/O: labels, annotations
//! and taints the template owns (remembered in MCM's last-applied annotation, so keys
//! removed from the template are removed and nobody else's are touched), the
//! machine-name label and the finalizer.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Taint};
use mcm_provider_kubevirt::mcm::{Machine, NodeTemplateSpec};

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::names::{
    LAST_APPLIED_ANNOTATION, LAST_APPLIED_VIRTUAL_CAPACITY_ANNOTATION, MACHINE_NAME_LABEL,
    NODE_FINALIZER,
};

/// Puts `wanted` into `node_map` and removes what was applied last and is no longer
/// wanted; keys nobody applied are left alone. True when `node_map` changed.
fn sync_map<V: PartialEq + Clone>(
    node_map: &mut BTreeMap<String, V>,
    wanted: &BTreeMap<String, V>,
    last_applied: &BTreeMap<String, V>,
) -> bool {
    let mut changed = false;
    for key in last_applied.keys() {
        if !wanted.contains_key(key) && node_map.remove(key).is_some() {
            changed = true;
        }
    }
    for (key, value) in wanted {
        if node_map.get(key) != Some(value) {
            node_map.insert(key.clone(), value.clone());
            changed = true;
        }
    }
    changed
}

fn sync_taints(node_taints: &mut Vec<Taint>, wanted: &[Taint], last_applied: &[Taint]) -> bool {
    let same_slot = |a: &Taint, b: &Taint| a.key == b.key && a.effect == b.effect;
    let before = node_taints.clone();
    node_taints.retain(|t| {
        let was_ours = last_applied.iter().any(|l| same_slot(l, t));
        let still_wanted = wanted.iter().any(|w| same_slot(w, t));
        !was_ours || still_wanted
    });
    for taint in wanted {
        match node_taints.iter_mut().find(|t| same_slot(t, taint)) {
            Some(existing) => *existing = taint.clone(),
            None => node_taints.push(taint.clone()),
        }
    }
    *node_taints != before
}

fn template_parts(
    template: &NodeTemplateSpec,
) -> (
    BTreeMap<String, String>,
    BTreeMap<String, String>,
    Vec<Taint>,
) {
    let metadata = template.metadata.clone().unwrap_or_default();
    (
        metadata.labels.unwrap_or_default(),
        metadata.annotations.unwrap_or_default(),
        template
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default(),
    )
}

/// Applies the machine's template to `node`; true when the node changed.
pub fn apply_to_node(machine: &Machine, node: &mut Node) -> bool {
    let name = machine.metadata.name.clone().unwrap_or_default();
    let template = machine.spec.node_template.clone().unwrap_or_default();
    let (labels, annotations, taints) = template_parts(&template);
    let last_applied: NodeTemplateSpec = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LAST_APPLIED_ANNOTATION))
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default();
    let (old_labels, old_annotations, old_taints) = template_parts(&last_applied);

    let mut changed = false;
    let node_labels = node.metadata.labels.get_or_insert_with(Default::default);
    changed |= sync_map(node_labels, &labels, &old_labels);
    if node_labels.get(MACHINE_NAME_LABEL) != Some(&name) {
        node_labels.insert(MACHINE_NAME_LABEL.to_owned(), name);
        changed = true;
    }
    let node_annotations = node
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    let template_changed = sync_map(node_annotations, &annotations, &old_annotations);
    let spec = node.spec.get_or_insert_with(Default::default);
    let taints_changed = sync_taints(
        spec.taints.get_or_insert_with(Vec::new),
        &taints,
        &old_taints,
    );
    if spec.taints.as_ref().is_some_and(Vec::is_empty) {
        spec.taints = None;
    }
    let record = serde_json::to_string(&template).unwrap_or_default();
    let recorded_changed = node_annotations.get(LAST_APPLIED_ANNOTATION) != Some(&record);
    if template_changed || taints_changed || recorded_changed || changed {
        node_annotations.insert(LAST_APPLIED_ANNOTATION.to_owned(), record);
    }
    let finalizers = node.metadata.finalizers.get_or_insert_with(Vec::new);
    let finalizer_missing = !finalizers.iter().any(|f| f == NODE_FINALIZER);
    if finalizer_missing {
        finalizers.push(NODE_FINALIZER.to_owned());
    }
    changed || template_changed || taints_changed || recorded_changed || finalizer_missing
}

/// The class's `nodeTemplate.virtualCapacity`: extended resources the Node is to report
/// in its capacity (e.g. for the cluster autoscaler and the scheduler); non-string values
/// are skipped.
pub fn virtual_capacity_of(
    node_template: Option<&serde_json::Value>,
) -> BTreeMap<String, Quantity> {
    node_template
        .and_then(|t| t["virtualCapacity"].as_object())
        .into_iter()
        .flatten()
        .filter_map(|(name, value)| Some((name.clone(), Quantity(value.as_str()?.to_owned()))))
        .collect()
}

fn last_applied_virtual_capacity(node: &Node) -> BTreeMap<String, Quantity> {
    node.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LAST_APPLIED_VIRTUAL_CAPACITY_ANNOTATION))
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default()
}

/// Puts `wanted` into the Node's status.capacity, removing what was applied before and is
/// no longer wanted (MCM's SyncVirtualCapacity); true when the status changed.
pub fn apply_virtual_capacity(wanted: &BTreeMap<String, Quantity>, node: &mut Node) -> bool {
    let last_applied = last_applied_virtual_capacity(node);
    let capacity = node
        .status
        .get_or_insert_with(Default::default)
        .capacity
        .get_or_insert_with(Default::default);
    sync_map(capacity, wanted, &last_applied)
}

/// Remembers what [`apply_virtual_capacity`] applied, in MCM's annotation, so a resource
/// removed from the class is removed from the Node; true when the annotation changed.
pub fn record_virtual_capacity(applied: &BTreeMap<String, Quantity>, node: &mut Node) -> bool {
    let annotations = node
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    let before = annotations
        .get(LAST_APPLIED_VIRTUAL_CAPACITY_ANNOTATION)
        .cloned();
    if applied.is_empty() {
        annotations.remove(LAST_APPLIED_VIRTUAL_CAPACITY_ANNOTATION);
    } else if let Ok(text) = serde_json::to_string(applied) {
        annotations.insert(LAST_APPLIED_VIRTUAL_CAPACITY_ANNOTATION.to_owned(), text);
    }
    annotations.get(LAST_APPLIED_VIRTUAL_CAPACITY_ANNOTATION) != before.as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn machine(template: serde_json::Value) -> Machine {
        let mut machine = Machine::new("m-1", Default::default());
        machine.spec.node_template = Some(serde_json::from_value(template).unwrap());
        machine
    }

    #[test]
    fn template_is_applied_and_removed_keys_are_removed_only_if_ours() {
        let mut node: Node = serde_json::from_value(json!({
            "metadata": {"name": "m-1", "labels": {"kubelet": "set"}},
            "spec": {"taints": [{"key": "other", "effect": "NoExecute"}]}
        }))
        .unwrap();
        let first = machine(json!({
            "metadata": {"labels": {"pool": "a", "gone": "soon"}, "annotations": {"x": "1"}},
            "spec": {"taints": [{"key": "t", "value": "v", "effect": "NoSchedule"}]}
        }));
        assert!(apply_to_node(&first, &mut node));
        let labels = node.metadata.labels.clone().unwrap();
        assert_eq!(labels["pool"], "a");
        assert_eq!(labels["gone"], "soon");
        assert_eq!(labels["kubelet"], "set");
        assert_eq!(labels[MACHINE_NAME_LABEL], "m-1");
        assert_eq!(node.metadata.finalizers.clone().unwrap(), [NODE_FINALIZER]);
        assert_eq!(
            node.spec.as_ref().unwrap().taints.as_ref().unwrap().len(),
            2
        );
        // Applying the same template again changes nothing.
        assert!(!apply_to_node(&first, &mut node));

        let second = machine(json!({"metadata": {"labels": {"pool": "b"}}}));
        assert!(apply_to_node(&second, &mut node));
        let labels = node.metadata.labels.clone().unwrap();
        assert_eq!(labels["pool"], "b");
        assert!(!labels.contains_key("gone"));
        assert_eq!(labels["kubelet"], "set");
        assert!(
            !node
                .metadata
                .annotations
                .as_ref()
                .unwrap()
                .contains_key("x")
        );
        let taints = node.spec.as_ref().unwrap().taints.clone().unwrap();
        assert_eq!(taints.len(), 1);
        assert_eq!(taints[0].key, "other");
    }

    #[test]
    fn virtual_capacity_is_applied_and_withdrawn_through_the_annotation() {
        let template = serde_json::json!({"virtualCapacity": {"hc.hana.com/memory": "1234567"}});
        let wanted = virtual_capacity_of(Some(&template));
        let mut node = Node {
            status: Some(k8s_openapi::api::core::v1::NodeStatus {
                capacity: Some([("cpu".to_owned(), Quantity("4".into()))].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(apply_virtual_capacity(&wanted, &mut node));
        assert!(record_virtual_capacity(&wanted, &mut node));
        let capacity = node.status.as_ref().unwrap().capacity.clone().unwrap();
        assert_eq!(capacity["hc.hana.com/memory"], Quantity("1234567".into()));
        assert_eq!(capacity["cpu"], Quantity("4".into()));
        // In line: nothing to write.
        assert!(!apply_virtual_capacity(&wanted, &mut node));
        assert!(!record_virtual_capacity(&wanted, &mut node));
        // Removed from the class: removed from the Node, the kubelet's cpu kept.
        let none = BTreeMap::new();
        assert!(apply_virtual_capacity(&none, &mut node));
        assert!(record_virtual_capacity(&none, &mut node));
        let capacity = node.status.as_ref().unwrap().capacity.clone().unwrap();
        assert!(!capacity.contains_key("hc.hana.com/memory"));
        assert!(capacity.contains_key("cpu"));
    }
}
