//! Which Machine a Node belongs to, and what happens to Nodes whose Machine is gone or
//! that were never a Machine's, without I/O.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;

use mcm_provider_kubevirt::mcm::Machine;

use crate::machine::settings::elapsed_until;
use crate::machine::status::node_name_of;
use crate::names::{NODE_FINALIZER, NOT_MANAGED_BY_MCM_ANNOTATION};

/// The Machines whose `node` label names a Node (MCM's getMachineFromNode).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NodeOwner<'a> {
    One(&'a Machine),
    None,
    /// More than one Machine claims the Node: MCM acts on none of them.
    Many,
}

pub fn owner_of<'a>(
    machines: impl IntoIterator<Item = &'a Machine>,
    node_name: &str,
) -> NodeOwner<'a> {
    let mut owners = machines
        .into_iter()
        .filter(|m| node_name_of(m) == node_name);
    match (owners.next(), owners.next()) {
        (Some(machine), None) => NodeOwner::One(machine),
        (None, _) => NodeOwner::None,
        (Some(_), Some(_)) => NodeOwner::Many,
    }
}

/// Nodes marked as not managed by MCM are left alone by every Node handler.
pub fn is_unmanaged(node: &Node) -> bool {
    node.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(NOT_MANAGED_BY_MCM_ANNOTATION))
}

/// A Node deleted from the target cluster: the Machine to delete with it (MCM's deleteNode
/// handler and triggerMachineDeletion), unless it is already being deleted.
pub fn machine_to_delete<'a>(
    machines: impl IntoIterator<Item = &'a Machine>,
    node: &Node,
) -> Option<&'a Machine> {
    if is_unmanaged(node) {
        return None;
    }
    let node_name = node.metadata.name.as_deref().unwrap_or_default();
    match owner_of(machines, node_name) {
        NodeOwner::One(machine) if machine.metadata.deletion_timestamp.is_none() => Some(machine),
        _ => None,
    }
}

/// What the safety pass does to one Node (MCM's AnnotateNodesUnmanagedByMCM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeUpkeep {
    Leave,
    /// No Machine claims the Node and it is older than the creation timeout: release our
    /// finalizer so it can be deleted, and mark it not managed.
    Release {
        remove_finalizer: bool,
        annotate: bool,
    },
    /// A Machine claims a Node marked not managed: drop the mark.
    Reclaim,
}

pub fn upkeep(
    node: &Node,
    owner: NodeOwner,
    creation_timeout: Duration,
    now: Timestamp,
) -> NodeUpkeep {
    match owner {
        NodeOwner::Many => NodeUpkeep::Leave,
        NodeOwner::One(_) if is_unmanaged(node) => NodeUpkeep::Reclaim,
        NodeOwner::One(_) => NodeUpkeep::Leave,
        NodeOwner::None => {
            // A young Node may be a Machine's that has not recorded it yet.
            if elapsed_until(node.metadata.creation_timestamp.as_ref(), now) < creation_timeout {
                return NodeUpkeep::Leave;
            }
            let remove_finalizer = node
                .metadata
                .finalizers
                .as_ref()
                .is_some_and(|f| f.iter().any(|f| f == NODE_FINALIZER));
            let annotate = !is_unmanaged(node);
            if remove_finalizer || annotate {
                NodeUpkeep::Release {
                    remove_finalizer,
                    annotate,
                }
            } else {
                NodeUpkeep::Leave
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::NODE_LABEL;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::SignedDuration;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn machine(name: &str, node: &str) -> Machine {
        let mut machine = Machine::new(name, Default::default());
        machine.metadata.labels = Some([(NODE_LABEL.to_owned(), node.to_owned())].into());
        machine
    }

    fn node(name: &str, age_minutes: i64, finalizer: bool, unmanaged: bool) -> Node {
        let mut node = Node::default();
        node.metadata.name = Some(name.into());
        node.metadata.creation_timestamp =
            Some(Time(now() - SignedDuration::from_mins(age_minutes)));
        if finalizer {
            node.metadata.finalizers = Some(vec![NODE_FINALIZER.into(), "other".into()]);
        }
        if unmanaged {
            node.metadata.annotations =
                Some([(NOT_MANAGED_BY_MCM_ANNOTATION.to_owned(), "1".to_owned())].into());
        }
        node
    }

    #[test]
    fn a_deleted_node_takes_only_its_own_machine() {
        let machines = [machine("m1", "n1"), machine("m2", "n2")];
        let deleted = machine_to_delete(&machines, &node("n1", 60, false, false));
        assert_eq!(
            deleted.map(|m| m.metadata.name.as_deref()),
            Some(Some("m1"))
        );
        assert!(machine_to_delete(&machines, &node("n3", 60, false, false)).is_none());
        // Not managed, claimed twice, or already going: nothing to delete.
        assert!(machine_to_delete(&machines, &node("n1", 60, false, true)).is_none());
        let twice = [machine("m1", "n1"), machine("m3", "n1")];
        assert!(machine_to_delete(&twice, &node("n1", 60, false, false)).is_none());
        let mut going = machine("m1", "n1");
        going.metadata.deletion_timestamp = Some(Time(now()));
        assert!(machine_to_delete([&going], &node("n1", 60, false, false)).is_none());
    }

    #[test]
    fn old_nodes_without_a_machine_are_released_and_young_ones_left() {
        let timeout = Duration::from_secs(20 * 60);
        let old = node("n1", 30, true, false);
        assert_eq!(
            upkeep(&old, NodeOwner::None, timeout, now()),
            NodeUpkeep::Release {
                remove_finalizer: true,
                annotate: true
            }
        );
        let young = node("n1", 10, true, false);
        assert_eq!(
            upkeep(&young, NodeOwner::None, timeout, now()),
            NodeUpkeep::Leave
        );
        let done = node("n1", 30, false, true);
        assert_eq!(
            upkeep(&done, NodeOwner::None, timeout, now()),
            NodeUpkeep::Leave
        );
        let claimed = machine("m1", "n1");
        assert_eq!(
            upkeep(&done, NodeOwner::One(&claimed), timeout, now()),
            NodeUpkeep::Reclaim
        );
        assert_eq!(
            upkeep(&old, NodeOwner::One(&claimed), timeout, now()),
            NodeUpkeep::Leave
        );
        assert_eq!(
            upkeep(&old, NodeOwner::Many, timeout, now()),
            NodeUpkeep::Leave
        );
    }
}
