//! MCM's deletion flow (`triggerDeletionFlow`) as a step machine persisted in
//! `status.lastOperation.description`: a step ends by writing the next step's name, so a
//! restarted controller resumes where the last one stopped. Unlike MCM, a step that
//! succeeds and leads on is followed in the same reconcile without that write (see
//! [`steps::moves_on_at_once`]): what waits or fails is written, what goes through is not.
//! [`steps`] decides; this module and [`node`] do the calls and persist each [`Transition`].

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
    updated_status, write_if_changed, write_status,
};
use crate::names::{MCM_FINALIZER, operation, phase, state};
use crate::runtime::metrics::MachineDuration;
use crate::util::finalizers::{has_finalizer, set_finalizer};
use drain::{DrainPurpose, drain_pass, forced_drain, save_drain_state};
pub use steps::{DeletionStep, KnownState, Transition, moves_on_at_once};

/// How a deletion step ended.
pub enum StepEnd {
    /// With this requeue. `unwritten`: the Machine with the status the step reached, when
    /// that is not what is stored (`None`: it is, or nothing is left to store).
    Requeue {
        requeue: Requeue,
        unwritten: Option<Box<Machine>>,
    },
    /// On to a later step at once, the Machine's status updated in memory only.
    MovedOn(Box<Machine>),
}

impl StepEnd {
    /// A step that stored what it reached (or removed the Machine's finalizer: nothing is
    /// left to store).
    fn written(requeue: Requeue) -> Self {
        StepEnd::Requeue {
            requeue,
            unwritten: None,
        }
    }

    /// A step that waits in `machine`'s step without writing.
    fn waiting(requeue: Requeue, machine: &Machine) -> Self {
        StepEnd::Requeue {
            requeue,
            unwritten: Some(Box::new(machine.clone())),
        }
    }
}

/// Steps one reconcile runs at most: all six after Terminate, so the loop always ends.
const MAX_STEPS_PER_RECONCILE: usize = 6;

/// The deletion steps for a machine with a deletionTimestamp, from the one its status
/// names, as far as they go without waiting.
pub async fn deletion_flow(
    ctx: &Context,
    request: &MachineRequest,
) -> Result<Requeue, ReconcileError> {
    if !has_finalizer(&request.machine, MCM_FINALIZER) {
        return Ok(Requeue::after(
            retry::LONG,
            "machine has no finalizer; nothing to do",
        ));
    }
    let mut request = request.clone();
    let mut moved_on = false;
    for _ in 0..MAX_STEPS_PER_RECONCILE {
        let step = current_step(&request.machine);
        match run_step(ctx, &request, step).await {
            Ok(StepEnd::MovedOn(machine)) => {
                request.machine = *machine;
                moved_on = true;
            }
            Ok(StepEnd::Requeue { requeue, unwritten }) => {
                // Unwritten progress is written when the reconcile stops, even if MCM's
                // similarity rule took the last transition for no change: it compared
                // with the status in memory, not the one stored.
                if moved_on && let Some(reached) = unwritten {
                    write_progress(ctx, &reached).await;
                }
                return Ok(requeue);
            }
            Err(source) => return Err(ReconcileError::deletion(step, source)),
        }
    }
    write_progress(ctx, &request.machine).await;
    Ok(Requeue::after(retry::SHORT, "machine deletion in process"))
}

fn current_step(machine: &Machine) -> DeletionStep {
    if phase_of(machine) == phase::TERMINATING {
        DeletionStep::parse(description_of(machine))
    } else {
        DeletionStep::Terminate
    }
}

async fn run_step(
    ctx: &Context,
    request: &MachineRequest,
    step: DeletionStep,
) -> Result<StepEnd, DeletionError> {
    let machine = &request.machine;
    match step {
        DeletionStep::Terminate => set_terminating(ctx, machine).await.map(StepEnd::written),
        DeletionStep::GetVmStatus => node::find_node(ctx, request).await,
        DeletionStep::Drain => drain(ctx, request).await,
        DeletionStep::DeleteVolumeAttachments => {
            node::delete_volume_attachments(ctx, machine).await
        }
        DeletionStep::DeleteVm => delete_vm(ctx, request).await,
        DeletionStep::DeleteNode => node::delete_node(ctx, machine).await,
        DeletionStep::RemoveFinalizer => remove_finalizer(ctx, machine).await.map(StepEnd::written),
    }
}

/// Writes the step reached in memory when the reconcile ends waiting in a later step
/// without a write of its own; a failure only means those steps are repeated next time.
async fn write_progress(ctx: &Context, machine: &Machine) {
    if let Err(error) = write_status(ctx, machine, status_of(machine)).await {
        warn!(machine = %machine.name_any(), "writing the deletion progress failed: {error}");
    }
}

/// A step's transition: followed at once when it succeeded and leads on, written and
/// answered with its requeue otherwise. Keeps currentStatus (its lastUpdateTime times the
/// drain).
async fn persist(
    ctx: &Context,
    machine: &Machine,
    transition: Transition,
) -> Result<StepEnd, DeletionError> {
    let moves_on = moves_on_at_once(current_step(machine), &transition);
    let status = status_of(machine);
    let known = match transition.known_state {
        KnownState::Keep => status.last_known_state,
        KnownState::Replace(known) => known,
    };
    let operation = last_operation(
        transition.description.clone(),
        transition.state,
        &transition.op_type,
    );
    let current = status.current_status.unwrap_or_default();
    let new = updated_status(machine, operation, current, known);
    let reached = |status| {
        let mut reached = machine.clone();
        reached.status = Some(status);
        Box::new(reached)
    };
    if moves_on {
        return Ok(StepEnd::MovedOn(reached(new)));
    }
    let written = write_if_changed(ctx, machine, new.clone())
        .await
        .map_err(DeletionError::Api)?;
    Ok(StepEnd::Requeue {
        requeue: Requeue::after(transition.after, transition.description),
        unwritten: (!written).then(|| reached(new)),
    })
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

async fn drain(ctx: &Context, request: &MachineRequest) -> Result<StepEnd, DeletionError> {
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
    let end = persist(ctx, machine, decision.next).await?;
    match decision.error {
        Some(error) => Err(DeletionError::Drain(error)),
        None => Ok(end),
    }
}

async fn delete_vm(ctx: &Context, request: &MachineRequest) -> Result<StepEnd, DeletionError> {
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
    let end = persist(ctx, machine, next).await?;
    match error {
        Some(source) => Err(DeletionError::Driver {
            description,
            source,
        }),
        None => Ok(end),
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
