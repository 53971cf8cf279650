//! MCM's creation flow (`triggerCreationFlow`): find the VM with GetMachineStatus, create
//! it when missing, record node name and providerID on the Machine, initialize it, and
//! move the machine to Pending. Each step persists before the next, so a retry after any
//! failure continues where the last attempt stopped.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use tracing::{info, warn};

use mcm_provider_kubevirt::driver::{CreateMachineResponse, MachineRequest};
use mcm_provider_kubevirt::mcm::{Machine, MachineClass};
use mcm_provider_kubevirt::{MachineCode, MachineError};

use crate::bootstrap_token::prepare_user_data;
use crate::context::{Context, Requeue, retry};
use crate::machine_settings::{creation_timeout, elapsed_since};
use crate::metrics::MachineDuration;
use crate::names::{MACHINE_PRIORITY_ANNOTATION, NODE_LABEL, operation, phase, state, step};
use crate::status::{
    current_status, last_operation, node_name_of, phase_of, replace_machine, status_of,
    update_machine_status,
};

/// Failed, once the creation timeout has passed since the Machine was created; until
/// then CrashLoopBackOff, which the creation flow retries.
pub fn create_failure_phase(ctx: &Context, machine: &Machine) -> &'static str {
    let age = elapsed_since(machine.metadata.creation_timestamp.as_ref());
    if age > creation_timeout(machine, &ctx.options) {
        phase::FAILED
    } else {
        phase::CRASH_LOOP_BACK_OFF
    }
}

/// The zone label of the duration metrics: the providerSpec's zone, if any.
pub fn zone_of(class: &MachineClass) -> String {
    class.provider_spec["zone"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// MCM's `machineCreateErrorHandler`: records the driver's error and picks the retry by code.
async fn create_failed(
    ctx: &Context,
    machine: &Machine,
    response: Option<&CreateMachineResponse>,
    error: MachineError,
) -> Requeue {
    let status = status_of(machine);
    let (after, keep_state) = match error.code {
        MachineCode::ResourceExhausted => (ctx.options.effective_resource_exhausted_retry(), true),
        code if retry::is_transient(code) => (retry::SHORT, true),
        _ => (retry::MEDIUM, false),
    };
    let mut last_known_state = if keep_state {
        status.last_known_state.clone()
    } else {
        None
    };
    if let Some(state) = response
        .map(|r| r.last_known_state.clone())
        .filter(|s| !s.is_empty())
    {
        last_known_state = Some(state);
    }
    let mut operation = last_operation(
        format!("Cloud provider message - {error}"),
        state::FAILED,
        operation::CREATE,
    );
    operation.error_code = Some(error.code.name().to_owned());
    let current = current_status(create_failure_phase(ctx, machine), false);
    if let Err(requeue) =
        update_machine_status(ctx, machine, operation, current, last_known_state).await
    {
        return requeue;
    }
    Requeue::failure(after, error.to_string())
}

/// Sets the `node` label, the default priority annotation and `spec.providerID`.
/// Returns the stored machine and whether anything was written.
async fn record_node_and_provider_id(
    ctx: &Context,
    machine: &Machine,
    node_name: &str,
    provider_id: &str,
) -> Result<(Machine, bool), Requeue> {
    let mut updated = machine.clone();
    let labels = updated.metadata.labels.get_or_insert_with(Default::default);
    let mut changed = false;
    if ctx.target.is_some() && !labels.contains_key(NODE_LABEL) {
        labels.insert(NODE_LABEL.to_owned(), node_name.to_owned());
        changed = true;
    }
    let annotations = updated
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    if annotations
        .get(MACHINE_PRIORITY_ANNOTATION)
        .is_none_or(String::is_empty)
    {
        annotations.insert(MACHINE_PRIORITY_ANNOTATION.to_owned(), "3".to_owned());
        changed = true;
    }
    if updated
        .spec
        .provider_id
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        updated.spec.provider_id = Some(provider_id.to_owned());
        changed = true;
    }
    if !changed {
        return Ok((machine.clone(), false));
    }
    let stored = replace_machine(ctx, &updated).await?;
    Ok((stored, true))
}

/// Runs InitializeMachine; Unimplemented counts as done.
async fn initialize(ctx: &Context, request: &MachineRequest) -> Result<(), Requeue> {
    let started = std::time::Instant::now();
    match ctx.driver.initialize_machine(request).await {
        Ok(_) => {
            ctx.metrics.machine_duration(
                MachineDuration::Initialize,
                &request.machine,
                &zone_of(&request.machine_class),
                started.elapsed(),
            );
            Ok(())
        }
        Err(error) if error.code == MachineCode::Unimplemented => Ok(()),
        Err(error) => {
            let machine = &request.machine;
            let mut operation = last_operation(
                format!("Provider error: {error}. {}", step::INSTANCE_INITIALIZATION),
                state::FAILED,
                operation::CREATE,
            );
            operation.error_code = Some(error.code.name().to_owned());
            let current = current_status(create_failure_phase(ctx, machine), false);
            let known = status_of(machine).last_known_state;
            update_machine_status(ctx, machine, operation, current, known).await?;
            Err(Requeue::failure(retry::SHORT, error.to_string()))
        }
    }
}

/// A Node with the new VM's node name that is not this machine's: the VM would join as a
/// stale node. MCM deletes the VM and fails the machine so a fresh one replaces it.
async fn stale_node_exists(ctx: &Context, machine_name: &str, node_name: &str) -> bool {
    match ctx.nodes() {
        Some(nodes) if node_name != machine_name => {
            matches!(nodes.get_opt(node_name).await, Ok(Some(_)))
        }
        _ => false,
    }
}

/// The creation flow for a machine without a providerID, or in phase "" or CrashLoopBackOff.
pub async fn creation_flow(
    ctx: &Context,
    machine: &Machine,
    class: &MachineClass,
    secret: Secret,
) -> Requeue {
    let name = machine.name_any();
    let mut secret = secret;
    if let Err(requeue) = prepare_user_data(ctx, machine, &mut secret).await {
        return requeue;
    }
    let request = MachineRequest {
        machine: machine.clone(),
        machine_class: class.clone(),
        secret,
    };
    let node_name;
    let provider_id;
    let mut uninitialized = false;
    match ctx.driver.get_machine_status(&request).await {
        Ok(found) => {
            node_name = found.node_name;
            provider_id = found.provider_id;
        }
        Err(error)
            if matches!(
                error.code,
                MachineCode::NotFound | MachineCode::Unimplemented
            ) =>
        {
            let known_provider_id = machine.spec.provider_id.clone().unwrap_or_default();
            if known_provider_id.is_empty() {
                info!(machine = %name, "creating VM");
                let created = match ctx.driver.create_machine(&request).await {
                    Ok(created) => created,
                    Err(error) => return create_failed(ctx, machine, None, error).await,
                };
                ctx.metrics.machine_duration(
                    MachineDuration::Create,
                    machine,
                    &zone_of(class),
                    elapsed_since(machine.metadata.creation_timestamp.as_ref()),
                );
                if stale_node_exists(ctx, &name, &created.node_name).await {
                    warn!(machine = %name, node = %created.node_name, "a node of that name already exists; deleting the new VM");
                    let mut doomed = request.clone();
                    doomed.machine.spec.provider_id = Some(created.provider_id.clone());
                    if let Err(error) = ctx.driver.delete_machine(&doomed).await {
                        warn!(machine = %name, "deleting the VM of a stale node failed, will be retried: {error}");
                    }
                    let operation =
                        last_operation("VM using old node obj", state::FAILED, operation::CREATE);
                    let known = status_of(machine).last_known_state;
                    if let Err(requeue) = update_machine_status(
                        ctx,
                        machine,
                        operation,
                        current_status(phase::FAILED, false),
                        known,
                    )
                    .await
                    {
                        return requeue;
                    }
                    return Requeue::failure(
                        retry::SHORT,
                        "machine marked Failed: its VM would use a stale node object",
                    );
                }
                node_name = created.node_name;
                provider_id = created.provider_id;
                uninitialized = true;
            } else {
                node_name = node_name_of(machine);
                provider_id = known_provider_id;
            }
        }
        Err(error) if error.code == MachineCode::Uninitialized => {
            let found = error.uninitialized.clone().unwrap_or_default();
            node_name = found.node_name;
            provider_id = found.provider_id;
            uninitialized = true;
        }
        Err(error) => return create_failed(ctx, machine, None, error).await,
    }

    if (ctx.target.is_some() && node_name.is_empty()) || provider_id.is_empty() {
        return Requeue::failure(
            retry::MEDIUM,
            MachineError::internal(format!(
                "machine {name:?}: nodeName ({node_name:?}) or providerID ({provider_id:?}) is empty after creation flow"
            ))
            .to_string(),
        );
    }

    let (stored, relabelled) =
        match record_node_and_provider_id(ctx, machine, &node_name, &provider_id).await {
            Ok(result) => result,
            Err(requeue) if uninitialized => {
                // MCM initializes even when the label write failed; the write is retried next time.
                warn!(machine = %name, "{}", requeue.reason);
                (machine.clone(), false)
            }
            Err(requeue) => return requeue,
        };
    if uninitialized {
        let request = MachineRequest {
            machine: stored,
            ..request
        };
        if let Err(requeue) = initialize(ctx, &request).await {
            return requeue;
        }
        return Requeue::after(
            retry::SHORT,
            "machine creation in process. Machine initialization (if required) is successful",
        );
    }
    if relabelled {
        return Requeue::after(
            retry::SHORT,
            "machine creation in process. Machine labels/annotations update is successful",
        );
    }

    let current_phase = phase_of(machine);
    if current_phase.is_empty() || current_phase == phase::CRASH_LOOP_BACK_OFF {
        let (operation, current) = if ctx.target.is_some() {
            (
                last_operation(
                    "Creating machine on cloud provider",
                    state::PROCESSING,
                    operation::CREATE,
                ),
                current_status(phase::PENDING, true),
            )
        } else {
            (
                last_operation(
                    "Created machine on cloud provider",
                    state::SUCCESSFUL,
                    operation::CREATE,
                ),
                current_status(phase::AVAILABLE, false),
            )
        };
        let known = status_of(machine).last_known_state;
        if let Err(requeue) = update_machine_status(ctx, &stored, operation, current, known).await {
            return requeue;
        }
        return Requeue::after(
            retry::SHORT,
            "machine creation in process. Machine/Status UPDATE successful",
        );
    }
    Requeue::after(retry::LONG, "machine created")
}
