//! Keeping a Machine's Node in line with it: the machine-name label, the finalizer, and
//! the machine's nodeTemplate labels, annotations and taints. What the template applied
//! last is remembered on the Node (MCM's last-applied annotation), so keys removed from
//! the template are removed from the Node and nobody else's are touched.
//! [`template`] decides what the Node should carry; this module reads and writes it.

pub mod template;

use std::ops::ControlFlow;

use k8s_openapi::api::core::v1::Node;
use kube::api::PostParams;
use tracing::info;

use mcm_provider_kubevirt::mcm::{Machine, MachineClass};

use crate::context::Context;
use crate::error::{ApiError, ReconcileError, Requeue, retry};
use template::{
    apply_to_node, apply_virtual_capacity, record_virtual_capacity, virtual_capacity_of,
};

/// Syncs the machine's Node; a missing Node is not an error (it may not have joined yet).
/// Breaks with the requeue after a write, so the next reconcile sees the written Node;
/// otherwise continues with the Node as read (none if missing or being deleted), so the
/// steps after this one need not read it again.
pub async fn sync_node(
    ctx: &Context,
    machine: &Machine,
    class: &MachineClass,
    node_name: &str,
) -> Result<ControlFlow<Requeue, Option<Node>>, ReconcileError> {
    let Some(nodes) = ctx.nodes() else {
        return Ok(ControlFlow::Continue(None));
    };
    let node = ctx
        .node(node_name)
        .await
        .map_err(ReconcileError::NodeSync)?;
    let Some(mut node) = node else {
        return Ok(ControlFlow::Continue(None));
    };
    if node.metadata.deletion_timestamp.is_some() {
        return Ok(ControlFlow::Continue(None));
    }
    let failed = |what, error| ReconcileError::NodeSync(ApiError::new(what, error));
    let capacity = virtual_capacity_of(class.node_template.as_ref());
    let capacity_written = apply_virtual_capacity(&capacity, &mut node);
    if capacity_written {
        // Capacity is status: written through /status, which leaves metadata alone.
        node = nodes
            .replace_status(node_name, &PostParams::default(), &node)
            .await
            .map_err(|error| failed("node capacity update failed", error))?;
    }
    let template_changed = apply_to_node(machine, &mut node);
    let recorded = record_virtual_capacity(&capacity, &mut node);
    if template_changed || recorded {
        nodes
            .replace(node_name, &PostParams::default(), &node)
            .await
            .map_err(|error| failed("node update failed", error))?;
    }
    if !(capacity_written || template_changed || recorded) {
        return Ok(ControlFlow::Continue(Some(node)));
    }
    info!(
        node = node_name,
        "node labels, annotations, taints, finalizer and virtual capacity synced"
    );
    Ok(ControlFlow::Break(Requeue::after(
        retry::SHORT,
        "node template synced",
    )))
}
