//! MCM's health reconcile (`reconcileMachineHealth`): Node conditions copied to the
//! Machine, Pending -> Running once healthy, Running -> Unknown when not, and Failed when
//! the creation or health timeout runs out. [`assessment`] decides; this module reads the
//! Node and applies the decision.

pub mod assessment;
pub mod permits;

use std::ops::ControlFlow;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams};
use mcm_provider_kubevirt::mcm::{Machine, MachineClass, MachineStatus};
use tracing::{info, warn};

use crate::context::{Context, is_not_found};
use crate::error::{ApiError, HealthError, ReconcileError, Requeue, retry};
use crate::machine::bootstrap_token::delete_bootstrap_token;
use crate::machine::settings::{
    creation_timeout, health_timeout, health_timeout_disabled, in_place_update_timeout,
    node_conditions,
};
use crate::machine::status::{replace_machine, status_of, write_status};
use crate::names::{DEPLOYMENT_NAME_LABEL, JOIN_DURATION_ANNOTATION, phase};
use crate::runtime::metrics::MachineDuration;
use crate::util::go_duration::format_go_duration;
use assessment::{
    HealthAssessment, HealthInputs, MAX_REPLACEMENTS, assess, replacements_in_progress,
};
use permits::PERMIT_TIMEOUT;

/// Breaks with the requeue after a write (or a deleted Node), or continues with an
/// earlier recheck for a running timeout.
pub async fn reconcile_health(
    ctx: &Context,
    machine: &Machine,
    node_name: &str,
    class: &MachineClass,
) -> Result<ControlFlow<Requeue, Option<Duration>>, ReconcileError> {
    if ctx.nodes().is_none() {
        return Ok(ControlFlow::Continue(None));
    }
    let node = ctx.node(node_name).await.map_err(HealthError::Api)?;
    let problem_conditions = node_conditions(machine, &ctx.options);
    let inputs = HealthInputs {
        machine,
        node: node.as_ref(),
        problem_conditions: &problem_conditions,
        creation_timeout: creation_timeout(machine, &ctx.options),
        health_timeout: health_timeout(machine, &ctx.options),
        health_timeout_disabled: health_timeout_disabled(machine),
        in_place_update_timeout: in_place_update_timeout(machine, &ctx.options),
        now: Timestamp::now(),
    };
    match assess(&inputs) {
        HealthAssessment::NodeDeleted => delete_machine_of_deleted_node(ctx, machine, node_name)
            .await
            .map(ControlFlow::Break),
        HealthAssessment::Unchanged { recheck } => Ok(ControlFlow::Continue(recheck)),
        HealthAssessment::Replace { status } => {
            replace(ctx, machine, class, *status).await?;
            Ok(ControlFlow::Break(Requeue::after(
                retry::SHORT,
                "machine phase/conditions updated",
            )))
        }
        HealthAssessment::Changed {
            status,
            joined,
            failed_join,
        } => {
            apply(ctx, machine, class, *status, joined, failed_join).await?;
            Ok(ControlFlow::Break(Requeue::after(
                retry::SHORT,
                "machine phase/conditions updated",
            )))
        }
    }
}

/// Fails a machine whose health timeout ran out, unless another machine of its
/// MachineDeployment is being replaced (MCM's tryMarkingMachineFailed). The count is read
/// from the API server, not a cache, so it already sees a replacement just written.
async fn replace(
    ctx: &Context,
    machine: &Machine,
    class: &MachineClass,
    status: MachineStatus,
) -> Result<(), ReconcileError> {
    let name = machine.name_any();
    let deployment = machine
        .labels()
        .get(DEPLOYMENT_NAME_LABEL)
        .cloned()
        .unwrap_or_default();
    let Some(_permit) = ctx
        .replacement_permits
        .acquire(&deployment, PERMIT_TIMEOUT)
        .await
    else {
        return Err(HealthError::PermitTimeout { machine: name }.into());
    };
    // Machines outside a MachineDeployment are not limited (MCM finds no siblings for them).
    // Listed from the API server, not the store: the permit's previous holder may have
    // failed a sibling a moment ago, and the store may not show that write yet.
    if !deployment.is_empty() {
        let selector = format!("{DEPLOYMENT_NAME_LABEL}={deployment}");
        let pool = ctx
            .machines()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|error| {
                HealthError::Api(ApiError::new(
                    "listing the machines of its deployment",
                    error,
                ))
            })?;
        let in_progress = replacements_in_progress(&pool.items);
        if in_progress >= MAX_REPLACEMENTS {
            info!(machine = %name, %deployment, in_progress, "not failing the machine yet: another one of its deployment is being replaced");
            return Err(HealthError::ReplacementLimit { machine: name }.into());
        }
    }
    apply(ctx, machine, class, status, None, false).await
}

/// Writes the assessed status, after what a join or a failed join brings with it.
async fn apply(
    ctx: &Context,
    machine: &Machine,
    class: &MachineClass,
    status: MachineStatus,
    joined: Option<Duration>,
    failed_join: bool,
) -> Result<(), ReconcileError> {
    let name = machine.name_any();
    if status.last_operation != status_of(machine).last_operation {
        log_transition(&name, &status);
    }
    let mut target = machine.clone();
    if let Some(joined) = joined {
        if let Err(error) = delete_bootstrap_token(ctx, &name).await {
            warn!(machine = %name, "deleting the bootstrap token failed: {error}");
        }
        ctx.metrics
            .machine_duration(MachineDuration::Join, machine, Some(class), joined);
        // The annotation is metadata: written with the machine, before the status.
        target
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                JOIN_DURATION_ANNOTATION.to_owned(),
                format_go_duration(joined),
            );
        target = replace_machine(ctx, &target)
            .await
            .map_err(HealthError::Api)?;
    }
    if failed_join {
        ctx.metrics.failed_join(machine, class);
    }
    write_status(ctx, &target, status).await.map_err(|error| {
        HealthError::Api(ApiError::new("Update of Phase/Conditions failed", error))
    })?;
    Ok(())
}

fn log_transition(name: &str, status: &MachineStatus) {
    let description = status
        .last_operation
        .as_ref()
        .and_then(|o| o.description.as_deref())
        .unwrap_or_default();
    let new_phase = status
        .current_status
        .as_ref()
        .and_then(|c| c.phase.as_deref())
        .unwrap_or_default();
    match new_phase {
        phase::RUNNING | phase::IN_PLACE_UPDATE_SUCCESSFUL => {
            info!(machine = %name, "{description}")
        }
        phase::UNKNOWN | phase::FAILED | phase::IN_PLACE_UPDATE_FAILED => {
            warn!(machine = %name, "{description}")
        }
        _ => {}
    }
}

/// MCM's `triggerMachineDeletion`: a Node being deleted takes its Machine with it. The
/// Node's finalizer (set by node sync) holds it until the machine's deletion flow has
/// drained it and deleted the VM; without this the Node would stay Terminating and the
/// Machine Running on a lost Node.
async fn delete_machine_of_deleted_node(
    ctx: &Context,
    machine: &Machine,
    node_name: &str,
) -> Result<Requeue, ReconcileError> {
    let name = machine.name_any();
    info!(machine = %name, node = %node_name, "node is being deleted; triggering machine deletion");
    match ctx.machines().delete(&name, &DeleteParams::default()).await {
        Ok(_) => Ok(Requeue::after(
            retry::SHORT,
            format!("node {node_name:?} is being deleted; machine deletion triggered"),
        )),
        Err(error) if is_not_found(&error) => Ok(Requeue::after(retry::LONG, "machine gone")),
        Err(error) => Err(HealthError::Api(ApiError::new(
            "machine backing a deleted node could not be marked for deletion",
            error,
        ))
        .into()),
    }
}
