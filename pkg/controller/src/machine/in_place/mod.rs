//! The machine controller's part of MCM's in-place updates: MCM's MachineDeployment
//! controller labels a Node candidate, then selected; this module keeps the Node's
//! InPlaceUpdate condition in line with those labels, drains a selected Node (cordon and
//! evictions, no Terminating condition), marks the Machine InPlaceUpdating and the Node
//! ReadyForUpdate, and then waits for the Node's agent to set the update-result label,
//! which the health reconcile turns into InPlaceUpdateSuccessful or InPlaceUpdateFailed.
//! [`plan`] decides; this module reads and writes.

pub mod plan;

use std::ops::ControlFlow;

use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use tracing::info;

use mcm_provider_kubevirt::mcm::Machine;

use crate::context::{Context, get_node};
use crate::error::{ApiError, InPlaceError, ReconcileError, Requeue, retry};
use crate::machine::deletion::drain::{DrainPurpose, drain_pass, save_drain_state};
use crate::machine::settings::{drain_timeout, elapsed_until};
use crate::machine::status::{status_of, update_machine_status};
use crate::names::{IN_PLACE_UPDATE_CONDITION, in_place_reason};
use crate::runtime::metrics::MachineDuration;
use plan::{
    DrainOutcome, InPlaceStep, after_drain, awaiting_update, condition, condition_for_labels,
    drain_failed, force_reason, in_place_condition, step_for, updating,
};

/// The in-place steps for the machine's `node` (as just read). Continues when no update
/// needs the controller; breaks with the requeue while it drains or waits for the update.
pub async fn reconcile_in_place(
    ctx: &Context,
    machine: &Machine,
    node: Node,
) -> Result<ControlFlow<Requeue, Node>, ReconcileError> {
    let Some(nodes) = ctx.nodes() else {
        return Ok(ControlFlow::Continue(node));
    };
    let mut node = node;
    if let Some(wanted) = condition_for_labels(&node, Timestamp::now()) {
        info!(node = %node.name_any(), reason = ?wanted.reason, "in-place update condition from the node's labels");
        node = set_condition(&nodes, node, wanted).await?;
    }
    let node_name = node.name_any();
    match step_for(in_place_condition(&node)) {
        // The Node as it now is, for the steps after this one.
        InPlaceStep::Nothing => Ok(ControlFlow::Continue(node)),
        InPlaceStep::AwaitUpdate => Ok(ControlFlow::Break(await_update(&node_name))),
        InPlaceStep::MarkReady => {
            mark_ready(&nodes, node).await?;
            Ok(ControlFlow::Break(await_update(&node_name)))
        }
        InPlaceStep::Drain => drain(ctx, machine, &nodes, &node)
            .await
            .map(ControlFlow::Break),
    }
}

fn await_update(node_name: &str) -> Requeue {
    let (after, reason) = awaiting_update(node_name);
    Requeue::after(after, reason)
}

/// Puts `wanted` in place of the Node's InPlaceUpdate condition through `/status`, with the
/// Node's resourceVersion (as MCM's UpdateStatus: a conflict retries on a fresh read).
async fn set_condition(
    nodes: &Api<Node>,
    mut node: Node,
    wanted: NodeCondition,
) -> Result<Node, InPlaceError> {
    let name = node.name_any();
    let conditions = node
        .status
        .get_or_insert_with(Default::default)
        .conditions
        .get_or_insert_with(Vec::new);
    conditions.retain(|c| c.type_ != IN_PLACE_UPDATE_CONDITION);
    conditions.push(wanted);
    nodes
        .replace_status(&name, &PostParams::default(), &node)
        .await
        .map_err(|error| {
            InPlaceError::Api(ApiError::new(
                format!("updating the {IN_PLACE_UPDATE_CONDITION} condition of node {name:?}"),
                error,
            ))
        })
}

/// Drained: the Node's agent may now apply the update.
async fn mark_ready(nodes: &Api<Node>, node: Node) -> Result<Node, InPlaceError> {
    let ready = condition(
        in_place_reason::READY_FOR_UPDATE,
        "Node is ready for in-place update",
        Timestamp::now(),
    );
    set_condition(nodes, node, ready).await
}

/// One pass of the drain before the update. Once the Node is empty: the Machine becomes
/// InPlaceUpdating, and the Node DrainSuccessful, then ReadyForUpdate (each step is
/// redone harmlessly if a later write fails).
async fn drain(
    ctx: &Context,
    machine: &Machine,
    nodes: &Api<Node>,
    node: &Node,
) -> Result<Requeue, ReconcileError> {
    let node_name = node.name_any();
    let now = Timestamp::now();
    let selected = in_place_condition(node).cloned();
    let timeout = drain_timeout(machine, &ctx.options);
    let force = force_reason(machine, selected.as_ref(), timeout, now);
    if let Some(reason) = &force {
        info!(node = %node_name, reason = %reason, "forced in-place drain");
    }
    let purpose = DrainPurpose::InPlaceUpdate;
    let pass = drain_pass(ctx, machine, &node_name, force.is_some(), purpose).await;
    // The state first: the status write below needs the Machine as stored.
    let machine = &save_drain_state(ctx, machine, &pass.state)
        .await
        .map_err(InPlaceError::Api)?;
    let known = status_of(machine).last_known_state;
    match after_drain(pass.result, force.is_some()) {
        DrainOutcome::InProgress { after, reason } => Ok(Requeue::after(after, reason)),
        DrainOutcome::Failed(error) => {
            let current = status_of(machine).current_status.unwrap_or_default();
            update_machine_status(ctx, machine, drain_failed(&error, now), current, known)
                .await
                .map_err(InPlaceError::Api)?;
            Err(InPlaceError::Drain(error).into())
        }
        DrainOutcome::Drained => {
            let since = selected.and_then(|c| c.last_transition_time);
            let took = elapsed_until(since.as_ref(), now);
            ctx.metrics
                .machine_duration(MachineDuration::Drain, machine, None, took);
            let (operation, current) = updating(&machine.name_any(), now);
            update_machine_status(ctx, machine, operation, current, known)
                .await
                .map_err(InPlaceError::Api)?;
            info!(machine = %machine.name_any(), node = %node_name, "drained; machine is undergoing an in-place update");
            let drained = condition(
                in_place_reason::DRAIN_SUCCESSFUL,
                "Node draining successful",
                now,
            );
            // Read again: the drain cordoned the Node, so the one read before is stale.
            let fresh = get_node(nodes, &node_name)
                .await
                .map_err(InPlaceError::Api)?;
            let Some(node) = fresh else {
                return Ok(Requeue::after(retry::SHORT, "node gone after its drain"));
            };
            let node = set_condition(nodes, node, drained).await?;
            mark_ready(nodes, node).await?;
            Ok(await_update(&node_name))
        }
    }
}
