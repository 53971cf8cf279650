//! Nodes without a live Machine: a Node deleted from the target cluster deletes its
//! Machine (MCM's deleteNode handler; a Node held Terminating by our finalizer is handled
//! by the health reconcile), and the safety pass releases Nodes no Machine claims (MCM's
//! AnnotateNodesUnmanagedByMCM), so such a Node never stays Terminating on our finalizer.
//! [`decisions`] decides; this module reads and writes.

pub mod decisions;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use mcm_provider_kubevirt::mcm::Machine;

use crate::context::{Context, is_not_found};
use crate::names::{NODE_FINALIZER, NOT_MANAGED_BY_MCM_ANNOTATION};
use decisions::{NodeUpkeep, machine_to_delete, owner_of, upkeep};

/// Deletes the Machine of a Node that was deleted; returns its name.
pub async fn delete_machine_of_deleted_node(
    ctx: &Context,
    machines: &[&Machine],
    node: &Node,
) -> Result<Option<String>, kube::Error> {
    let Some(machine) = machine_to_delete(machines.iter().copied(), node) else {
        return Ok(None);
    };
    let name = machine.name_any();
    info!(machine = %name, node = %node.name_any(), "node has been deleted; triggering machine deletion");
    match ctx.machines().delete(&name, &DeleteParams::default()).await {
        Ok(_) => Ok(Some(name)),
        Err(error) if is_not_found(&error) => Ok(None),
        Err(error) => Err(error),
    }
}

/// What one safety pass over the Nodes did.
#[derive(Debug, Default, PartialEq)]
pub struct NodeUpkeepReport {
    pub released: usize,
    pub reclaimed: usize,
}

/// Releases Nodes no Machine claims and unmarks claimed ones; nothing without a target.
pub async fn release_unmanaged_nodes(ctx: &Context) -> Result<NodeUpkeepReport, kube::Error> {
    let mut report = NodeUpkeepReport::default();
    let Some(nodes) = ctx.nodes() else {
        return Ok(report);
    };
    let machines = ctx.list_machines().await?;
    let now = Timestamp::now();
    let timeout = ctx.options.machines.machine_creation_timeout;
    for node in ctx.list_nodes().await? {
        let owner = owner_of(machines.iter().map(AsRef::as_ref), &node.name_any());
        let decided = upkeep(&node, owner, timeout, now);
        if decided == NodeUpkeep::Leave {
            continue;
        }
        if let Err(error) = apply(&nodes, &node, &decided).await {
            warn!(node = %node.name_any(), "node upkeep failed: {error}");
            continue;
        }
        match decided {
            NodeUpkeep::Release { .. } => report.released += 1,
            NodeUpkeep::Reclaim => report.reclaimed += 1,
            NodeUpkeep::Leave => {}
        }
    }
    if report != NodeUpkeepReport::default() {
        info!(
            released = report.released,
            reclaimed = report.reclaimed,
            "nodes without a machine"
        );
    }
    Ok(report)
}

/// One merge patch with the Node's resourceVersion, so a concurrent change is not lost.
async fn apply(nodes: &Api<Node>, node: &Node, decided: &NodeUpkeep) -> Result<(), kube::Error> {
    let mut metadata = json!({ "resourceVersion": node.resource_version() });
    match decided {
        NodeUpkeep::Leave => return Ok(()),
        NodeUpkeep::Release {
            remove_finalizer,
            annotate,
        } => {
            if *remove_finalizer {
                let kept: Vec<&String> = node
                    .finalizers()
                    .iter()
                    .filter(|f| *f != NODE_FINALIZER)
                    .collect();
                metadata["finalizers"] = json!(kept);
            }
            if *annotate {
                metadata["annotations"] = json!({ NOT_MANAGED_BY_MCM_ANNOTATION: "1" });
            }
        }
        NodeUpkeep::Reclaim => {
            metadata["annotations"] = json!({ NOT_MANAGED_BY_MCM_ANNOTATION: null });
        }
    }
    let patch = json!({ "metadata": metadata });
    nodes
        .patch(
            &node.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}
