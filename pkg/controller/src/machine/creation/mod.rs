//! MCM's creation flow (`triggerCreationFlow`): find the VM with GetMachineStatus, create
//! it when missing, record node name and providerID on the Machine, initialize it, and
//! move the machine to Pending. Each step persists before the next, so a retry after any
//! failure continues where the last attempt stopped. [`plan`] decides; this module calls
//! the driver and writes.

pub mod plan;

use std::time::Instant;

use k8s_openapi::api::core::v1::{NodeAddress, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use tracing::{info, warn};

use mcm_provider_kubevirt::MachineError;
use mcm_provider_kubevirt::driver::MachineRequest;
use mcm_provider_kubevirt::mcm::{Machine, MachineClass};

use crate::context::Context;
use crate::error::{ApiError, CreationError, ReconcileError, Requeue, retry};
use crate::machine::bootstrap_token::prepare_user_data;
use crate::machine::settings::{creation_timeout, elapsed_since};
use crate::machine::status::{
    current_status, last_operation, replace_machine, status_of, update_machine_status, write_status,
};
use crate::names::{operation, phase, state};
use crate::runtime::metrics::MachineDuration;
use plan::{
    NextStep, VmIdentity, address_status, after_status, create_failure, created_status,
    failure_phase,
};

/// The creation flow for a machine without a providerID, or in phase "" or CrashLoopBackOff.
pub async fn creation_flow(
    ctx: &Context,
    machine: &Machine,
    class: &MachineClass,
    secret: Secret,
) -> Result<Requeue, ReconcileError> {
    let mut secret = secret;
    prepare_user_data(ctx, machine, &mut secret).await?;
    let request = MachineRequest {
        machine: machine.clone(),
        machine_class: class.clone(),
        secret,
    };
    let found = ctx.driver.get_machine_status(&request).await;
    let (vm, initialize) = match after_status(machine, found) {
        NextStep::Create => (create(ctx, &request).await?, true),
        NextStep::Record { vm, initialize } => (vm, initialize),
        NextStep::Fail(error) => return Err(create_failed(ctx, machine, error).await),
    };
    if plan::is_incomplete(&vm, ctx.target.is_some()) {
        return Err(CreationError::Incomplete {
            machine: machine.name_any(),
            node_name: vm.node_name,
            provider_id: vm.provider_id,
        }
        .into());
    }
    record_and_finish(ctx, machine, request, &vm, initialize).await
}

/// Records the VM on the Machine, then initializes it or moves the machine on.
async fn record_and_finish(
    ctx: &Context,
    machine: &Machine,
    request: MachineRequest,
    vm: &VmIdentity,
    initialize: bool,
) -> Result<Requeue, ReconcileError> {
    let recorded = match plan::with_vm_recorded(machine, vm, ctx.target.is_some()) {
        Some(updated) => match replace_machine(ctx, &updated).await {
            Ok(stored) => Some(stored),
            Err(error) if initialize => {
                // MCM initializes even when the label write failed; the write is retried next time.
                warn!(machine = %machine.name_any(), "{error}");
                None
            }
            Err(error) => return Err(CreationError::Api(error).into()),
        },
        None => None,
    };
    if initialize {
        let request = MachineRequest {
            machine: recorded.unwrap_or_else(|| machine.clone()),
            ..request
        };
        let initialized = initialize_vm(ctx, &request).await?;
        if ctx.target.is_none() {
            // Without a Node to read them from, the Machine reports where the VM is.
            let reported = [vm.addresses.as_slice(), initialized.as_slice()].concat();
            record_addresses(ctx, &request.machine, &reported, &vm.node_name).await?;
        }
        return Ok(Requeue::after(
            retry::SHORT,
            "machine creation in process. Machine initialization (if required) is successful",
        ));
    }
    if recorded.is_some() {
        return Ok(Requeue::after(
            retry::SHORT,
            "machine creation in process. Machine labels/annotations update is successful",
        ));
    }
    set_created(ctx, machine, vm).await
}

/// The Machine's `status.addresses` with `reported` merged in (MCM: only without a target).
fn merged_addresses(
    machine: &Machine,
    reported: &[NodeAddress],
    node_name: &str,
) -> Vec<NodeAddress> {
    let recorded = status_of(machine).addresses.unwrap_or_default();
    address_status(&recorded, reported, node_name)
}

async fn record_addresses(
    ctx: &Context,
    machine: &Machine,
    reported: &[NodeAddress],
    node_name: &str,
) -> Result<(), ReconcileError> {
    let mut status = status_of(machine);
    status.addresses = Some(merged_addresses(machine, reported, node_name));
    write_status(ctx, machine, status).await.map_err(|error| {
        CreationError::Api(ApiError::new(
            "failed to persist status addresses after initialization was successful",
            error,
        ))
    })?;
    Ok(())
}

/// Pending once the VM is recorded; without a target cluster Available, with the VM's
/// addresses.
async fn set_created(
    ctx: &Context,
    machine: &Machine,
    vm: &VmIdentity,
) -> Result<Requeue, ReconcileError> {
    let Some((operation, current)) =
        created_status(machine, ctx.target.is_some(), Timestamp::now())
    else {
        return Ok(Requeue::after(retry::LONG, "machine created"));
    };
    if ctx.target.is_none() {
        let mut status = status_of(machine);
        status.last_operation = Some(operation);
        status.current_status = Some(current);
        status.addresses = Some(merged_addresses(machine, &vm.addresses, &vm.node_name));
        write_status(ctx, machine, status).await.map_err(|error| {
            CreationError::Api(ApiError::new("Machine/status UPDATE failed", error))
        })?;
        return Ok(Requeue::after(
            retry::SHORT,
            "machine creation in process. Machine/Status UPDATE successful",
        ));
    }
    let known = status_of(machine).last_known_state;
    update_machine_status(ctx, machine, operation, current, known)
        .await
        .map_err(CreationError::Api)?;
    Ok(Requeue::after(
        retry::SHORT,
        "machine creation in process. Machine/Status UPDATE successful",
    ))
}

/// CreateMachine; a VM that would join under a stale Node's name is deleted again and the
/// machine failed, so a fresh one replaces it.
async fn create(ctx: &Context, request: &MachineRequest) -> Result<VmIdentity, ReconcileError> {
    let machine = &request.machine;
    let name = machine.name_any();
    info!(machine = %name, "creating VM");
    let created = match ctx.driver.create_machine(request).await {
        Ok(created) => created,
        Err(error) => return Err(create_failed(ctx, machine, error).await),
    };
    ctx.metrics.machine_duration(
        MachineDuration::Create,
        machine,
        Some(&request.machine_class),
        elapsed_since(machine.metadata.creation_timestamp.as_ref()),
    );
    if stale_node_exists(ctx, &name, &created.node_name).await {
        warn!(machine = %name, node = %created.node_name, "a node of that name already exists; deleting the new VM");
        let mut doomed = request.clone();
        doomed.machine.spec.provider_id = Some(created.provider_id.clone());
        if let Err(error) = ctx.driver.delete_machine(&doomed).await {
            warn!(machine = %name, "deleting the VM of a stale node failed, will be retried: {error}");
        }
        let operation = last_operation("VM using old node obj", state::FAILED, operation::CREATE);
        let known = status_of(machine).last_known_state;
        update_machine_status(
            ctx,
            machine,
            operation,
            current_status(phase::FAILED, false),
            known,
        )
        .await
        .map_err(CreationError::Api)?;
        return Err(CreationError::StaleNode.into());
    }
    Ok(VmIdentity {
        node_name: created.node_name,
        provider_id: created.provider_id,
        addresses: created.addresses,
    })
}

/// Records the driver's error on the Machine; the error is what the reconcile fails with
/// (its code picks the retry), unless the record itself could not be written.
async fn create_failed(ctx: &Context, machine: &Machine, error: MachineError) -> ReconcileError {
    let now = Timestamp::now();
    let phase = failure_phase(machine, creation_timeout(machine, &ctx.options), now);
    let failure = create_failure(machine, &error, phase, now);
    match update_machine_status(
        ctx,
        machine,
        failure.operation,
        failure.current,
        failure.last_known_state,
    )
    .await
    {
        Ok(_) => CreationError::Driver(error).into(),
        Err(write) => CreationError::Api(write).into(),
    }
}

/// Runs InitializeMachine; Unimplemented counts as done, and is timed like a success as
/// MCM times it. Returns the addresses the driver reported.
async fn initialize_vm(
    ctx: &Context,
    request: &MachineRequest,
) -> Result<Vec<NodeAddress>, ReconcileError> {
    let started = Instant::now();
    let result = ctx.driver.initialize_machine(request).await;
    let done = match &result {
        Ok(_) => true,
        Err(error) => error.code == mcm_provider_kubevirt::MachineCode::Unimplemented,
    };
    if done {
        ctx.metrics.machine_duration(
            MachineDuration::Initialize,
            &request.machine,
            Some(&request.machine_class),
            started.elapsed(),
        );
    }
    match result {
        Err(error) if !done => {
            let machine = &request.machine;
            let now = Timestamp::now();
            let phase = failure_phase(machine, creation_timeout(machine, &ctx.options), now);
            let (operation, current) = plan::initialize_failure(&error, phase, now);
            let known = status_of(machine).last_known_state;
            update_machine_status(ctx, machine, operation, current, known)
                .await
                .map_err(CreationError::Api)?;
            Err(CreationError::Initialize(error).into())
        }
        Ok(response) => Ok(response.addresses),
        Err(_) => Ok(Vec::new()),
    }
}

/// A Node with the new VM's node name that is not this machine's: the VM would join as a
/// stale node. MCM deletes the VM and fails the machine so a fresh one replaces it.
async fn stale_node_exists(ctx: &Context, machine_name: &str, node_name: &str) -> bool {
    node_name != machine_name && matches!(ctx.node(node_name).await, Ok(Some(_)))
}
