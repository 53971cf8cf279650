//! MCM's deletion flow (`triggerDeletionFlow`) as a step machine persisted in
//! `status.lastOperation.description`: each step ends by writing the next step's name,
//! so a restarted controller resumes where the last one stopped. [`steps`] decides;
//! this module and [`node`] do the calls and persist each [`Transition`].

pub mod drain;
pub mod drain_plan;
pub mod node;
pub mod steps;

use kube::ResourceExt;
use tracing::{info, warn};

use mcm_provider_kubevirt::driver::MachineRequest;
use mcm_provider_kubevirt::mcm::Machine;

use crate::context::{Context, is_not_found};
use crate::error::{ApiError, DeletionError, ReconcileError, Requeue, retry};
use crate::machine::bootstrap_token::delete_bootstrap_token;
use crate::machine::settings::elapsed_since;
use crate::machine::status::{
    current_status, description_of, last_operation, phase_of, status_of, update_machine_status,
};
use crate::names::{MCM_FINALIZER, operation, phase, state};
use crate::runtime::metrics::MachineDuration;
use crate::util::finalizers::{has_finalizer, set_finalizer};
use drain::{DrainPurpose, drain_pass, forced_drain, save_drain_state};
pub use steps::{DeletionStep, KnownState, Transition};

/// One deletion step for a machine with a deletionTimestamp.
pub async fn deletion_flow(
    ctx: &Context,
    request: &MachineRequest,
) -> Result<Requeue, ReconcileError> {
    let machine = &request.machine;
    if !has_finalizer(machine, MCM_FINALIZER) {
        return Ok(Requeue::after(
            retry::LONG,
            "machine has no finalizer; nothing to do",
        ));
    }
    let step = if phase_of(machine) == phase::TERMINATING {
        DeletionStep::parse(description_of(machine))
    } else {
        DeletionStep::Terminate
    };
    let result = match step {
        DeletionStep::Terminate => set_terminating(ctx, machine).await,
        DeletionStep::GetVmStatus => node::find_node(ctx, request).await,
        DeletionStep::Drain => drain(ctx, request).await,
        DeletionStep::DeleteVolumeAttachments => {
            node::delete_volume_attachments(ctx, machine).await
        }
        DeletionStep::DeleteVm => delete_vm(ctx, request).await,
        DeletionStep::DeleteNode => node::delete_node(ctx, machine).await,
        DeletionStep::RemoveFinalizer => remove_finalizer(ctx, machine).await,
    };
    result.map_err(|source| ReconcileError::deletion(step, source))
}

/// Writes a step's transition, keeping currentStatus (its lastUpdateTime times the drain),
/// and answers its requeue.
async fn persist(
    ctx: &Context,
    machine: &Machine,
    transition: Transition,
) -> Result<Requeue, DeletionError> {
    let status = status_of(machine);
    let known = match transition.known_state {
        KnownState::Keep => status.last_known_state,
        KnownState::Replace(known) => known,
    };
    update_machine_status(
        ctx,
        machine,
        last_operation(
            transition.description.clone(),
            transition.state,
            &transition.op_type,
        ),
        status.current_status.unwrap_or_default(),
        known,
    )
    .await
    .map_err(DeletionError::Api)?;
    Ok(Requeue::after(transition.after, transition.description))
}

async fn set_terminating(ctx: &Context, machine: &Machine) -> Result<Requeue, DeletionError> {
    if phase_of(machine) == phase::TERMINATING {
        warn!(
            machine = %machine.name_any(),
            "unable to decode deletion flow state; re-initiating termination"
        );
    }
    let known = status_of(machine).last_known_state;
    update_machine_status(
        ctx,
        machine,
        last_operation(
            DeletionStep::GetVmStatus.marker(),
            state::PROCESSING,
            operation::DELETE,
        ),
        current_status(phase::TERMINATING, false),
        known,
    )
    .await
    .map_err(DeletionError::Api)?;
    Ok(Requeue::after(
        retry::SHORT,
        "Machine deletion in process. Phase set to termination",
    ))
}

async fn drain(ctx: &Context, request: &MachineRequest) -> Result<Requeue, DeletionError> {
    let machine = &request.machine;
    let node_name = crate::machine::status::node_name_of(machine);
    if node_name.is_empty() {
        let skip = Transition::to(
            DeletionStep::DeleteVm,
            "Skipping drain as nodeName is not a valid one for machine.",
        );
        return persist(ctx, machine, skip).await;
    }
    let force = forced_drain(ctx, machine);
    let pass = drain_pass(
        ctx,
        machine,
        &node_name,
        force.is_some(),
        DrainPurpose::Deletion,
    )
    .await;
    // The state first: the status write below needs the Machine as stored.
    let machine = &save_drain_state(ctx, machine, &pass.state)
        .await
        .map_err(DeletionError::Api)?;
    let decision = steps::after_drain(pass.result, force.is_some());
    if let Some(reason) = &force {
        info!(node = %node_name, reason = %reason, "forced drain");
    }
    if decision.completed {
        ctx.metrics.machine_duration(
            MachineDuration::Drain,
            machine,
            None,
            elapsed_since(machine.metadata.deletion_timestamp.as_ref()),
        );
    }
    let requeue = persist(ctx, machine, decision.next).await?;
    match decision.error {
        Some(error) => Err(DeletionError::Drain(error)),
        None => Ok(requeue),
    }
}

async fn delete_vm(ctx: &Context, request: &MachineRequest) -> Result<Requeue, DeletionError> {
    let machine = &request.machine;
    let deleted = ctx.driver.delete_machine(request).await;
    if deleted.is_ok() {
        ctx.metrics.machine_duration(
            MachineDuration::Delete,
            machine,
            Some(&request.machine_class),
            elapsed_since(machine.metadata.deletion_timestamp.as_ref()),
        );
    }
    let (next, error) = steps::after_vm_deletion(deleted);
    let description = next.description.clone();
    let requeue = persist(ctx, machine, next).await?;
    match error {
        Some(source) => Err(DeletionError::Driver {
            description,
            source,
        }),
        None => Ok(requeue),
    }
}

async fn remove_finalizer(ctx: &Context, machine: &Machine) -> Result<Requeue, DeletionError> {
    let name = machine.name_any();
    // A machine that never joined still has its bootstrap token; do not leave it behind.
    delete_bootstrap_token(ctx, &name)
        .await
        .map_err(DeletionError::BootstrapToken)?;
    match set_finalizer(&ctx.machines(), machine, MCM_FINALIZER, false).await {
        Ok(_) => {
            info!(machine = %name, "machine finalizer removed; deletion complete");
            Ok(Requeue::after(retry::LONG, "machine deleted"))
        }
        Err(error) if is_not_found(&error) => Ok(Requeue::after(retry::LONG, "machine gone")),
        Err(error) => Err(DeletionError::Api(ApiError::new(
            "Machine finalizer REMOVAL failed",
            error,
        ))),
    }
}
