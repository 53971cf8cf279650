//! MCM's deletion flow (`triggerDeletionFlow`) as a step machine persisted in
//! `status.lastOperation.description`: each step ends by writing the next step's name,
//! so a restarted controller resumes where the last one stopped.

use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::Api;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams};
use tracing::{info, warn};

use mcm_provider_kubevirt::MachineCode;
use mcm_provider_kubevirt::driver::MachineRequest;
use mcm_provider_kubevirt::mcm::{CurrentStatus, Machine};

use crate::bootstrap_token::delete_bootstrap_token;
use crate::context::{Context, Requeue, get_node, is_not_found, retry};
use crate::creation::zone_of;
use crate::drain::{PDB_RETRY, drain_pass, forced_drain};
use crate::finalizers::{has_finalizer, set_finalizer};
use crate::machine_settings::elapsed_since;
use crate::metrics::MachineDuration;
use crate::names::{
    MACHINE_NAME_LABEL, MCM_FINALIZER, NODE_FINALIZER, NODE_LABEL, operation, phase, state, step,
};
use crate::status::{
    current_status, description_of, last_operation, node_name_of, phase_of, status_of,
    update_machine_status,
};

/// Writes the next step, keeping currentStatus (its lastUpdateTime times the drain).
async fn advance(
    ctx: &Context,
    machine: &Machine,
    description: String,
    op_state: &str,
    op_type: &str,
) -> Result<(), Requeue> {
    let status = status_of(machine);
    let current: CurrentStatus = status.current_status.clone().unwrap_or_default();
    update_machine_status(
        ctx,
        machine,
        last_operation(description, op_state, op_type),
        current,
        status.last_known_state,
    )
    .await
}

fn op_type_of(machine: &Machine) -> String {
    machine
        .status
        .as_ref()
        .and_then(|s| s.last_operation.as_ref())
        .and_then(|o| o.type_.clone())
        .unwrap_or_else(|| operation::DELETE.to_owned())
}

/// One deletion step for a machine with a deletionTimestamp.
pub async fn deletion_flow(ctx: &Context, request: &MachineRequest) -> Requeue {
    let machine = &request.machine;
    if !has_finalizer(machine, MCM_FINALIZER) {
        return Requeue::after(retry::LONG, "machine has no finalizer; nothing to do");
    }
    if phase_of(machine) != phase::TERMINATING {
        return set_terminating(ctx, machine).await;
    }
    let description = description_of(machine).to_owned();
    let result = if description.contains(step::GET_VM_STATUS) {
        find_node(ctx, request).await
    } else if description.contains(step::INITIATE_DRAIN) {
        drain(ctx, request).await
    } else if description.contains(step::DELETE_VOLUME_ATTACHMENTS) {
        delete_volume_attachments(ctx, machine).await
    } else if description.contains(step::INITIATE_VM_DELETION) {
        delete_vm(ctx, request).await
    } else if description.contains(step::INITIATE_NODE_DELETION) {
        delete_node(ctx, machine).await
    } else if description.contains(step::INITIATE_FINALIZER_REMOVAL) {
        remove_finalizer(ctx, machine).await
    } else {
        warn!(
            machine = machine.metadata.name.as_deref().unwrap_or_default(),
            "unable to decode deletion flow state; re-initiating termination"
        );
        return set_terminating(ctx, machine).await;
    };
    match result {
        Ok(requeue) | Err(requeue) => requeue,
    }
}

async fn set_terminating(ctx: &Context, machine: &Machine) -> Requeue {
    let known = status_of(machine).last_known_state;
    match update_machine_status(
        ctx,
        machine,
        last_operation(step::GET_VM_STATUS, state::PROCESSING, operation::DELETE),
        current_status(phase::TERMINATING, false),
        known,
    )
    .await
    {
        Ok(()) => Requeue::after(
            retry::SHORT,
            "Machine deletion in process. Phase set to termination",
        ),
        Err(requeue) => requeue,
    }
}

/// Finds the node to drain: the `node` label, a Node labelled with the machine name, or
/// the driver's answer.
async fn find_node(ctx: &Context, request: &MachineRequest) -> Result<Requeue, Requeue> {
    let machine = &request.machine;
    let name = machine.name_any();
    if ctx.target.is_none() {
        let description = format!(
            "Running without target cluster, skipping node drain and volume attachment deletion. {}",
            step::INITIATE_VM_DELETION
        );
        advance(
            ctx,
            machine,
            description,
            state::PROCESSING,
            operation::DELETE,
        )
        .await?;
        return Ok(Requeue::after(retry::SHORT, "skipping drain"));
    }
    let mut node_name = node_name_of(machine);
    if node_name.is_empty() {
        node_name = node_by_machine_label(ctx, &name).await.unwrap_or_default();
    }
    if node_name.is_empty() {
        let (description, op_state, after) = match ctx.driver.get_machine_status(request).await {
            Ok(found) if !found.node_name.is_empty() => {
                node_name = found.node_name;
                (String::new(), state::PROCESSING, retry::SHORT)
            }
            Ok(_) => (
                step::INITIATE_DRAIN.to_owned(),
                state::PROCESSING,
                retry::SHORT,
            ),
            Err(error) => match error.code {
                MachineCode::Unimplemented => (
                    step::INITIATE_DRAIN.to_owned(),
                    state::PROCESSING,
                    retry::SHORT,
                ),
                MachineCode::NotFound => (
                    format!(
                        "VM was not found at provider. Moving forward to node drain. {}",
                        step::INITIATE_DRAIN
                    ),
                    state::PROCESSING,
                    retry::SHORT,
                ),
                MachineCode::Uninitialized => (
                    format!(
                        "VM instance was not initialized. Moving forward to node drain. {}",
                        step::INITIATE_DRAIN
                    ),
                    state::PROCESSING,
                    retry::SHORT,
                ),
                code if retry::is_transient(code) => (
                    format!(
                        "Error occurred with decoding machine error status while getting VM status, aborting with retry. {}",
                        step::GET_VM_STATUS
                    ),
                    state::FAILED,
                    retry::SHORT,
                ),
                _ => (
                    format!(
                        "Error occurred with decoding machine error status while getting VM status, aborting without retry. machine code: {error} {}",
                        step::GET_VM_STATUS
                    ),
                    state::FAILED,
                    retry::MEDIUM,
                ),
            },
        };
        if node_name.is_empty() {
            advance(ctx, machine, description, op_state, operation::DELETE).await?;
            return Ok(Requeue::after(after, "machine deletion in process"));
        }
    }
    if node_name_of(machine) != node_name {
        let mut labelled = machine.clone();
        labelled
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(NODE_LABEL.to_owned(), node_name.clone());
        let stored = crate::status::replace_machine(ctx, &labelled).await?;
        advance(
            ctx,
            &stored,
            step::INITIATE_DRAIN.to_owned(),
            state::PROCESSING,
            operation::DELETE,
        )
        .await?;
    } else {
        advance(
            ctx,
            machine,
            step::INITIATE_DRAIN.to_owned(),
            state::PROCESSING,
            operation::DELETE,
        )
        .await?;
    }
    Ok(Requeue::after(
        retry::SHORT,
        "machine deletion in process. VM with matching ID found",
    ))
}

async fn node_by_machine_label(ctx: &Context, machine_name: &str) -> Option<String> {
    let nodes = ctx.nodes()?;
    let selector = format!("{MACHINE_NAME_LABEL}={machine_name}");
    let list = nodes
        .list(&ListParams::default().labels(&selector))
        .await
        .ok()?;
    list.items.into_iter().next().and_then(|n| n.metadata.name)
}

async fn drain(ctx: &Context, request: &MachineRequest) -> Result<Requeue, Requeue> {
    let machine = &request.machine;
    let node_name = node_name_of(machine);
    if node_name.is_empty() {
        let description = format!(
            "Skipping drain as nodeName is not a valid one for machine. {}",
            step::INITIATE_VM_DELETION
        );
        advance(
            ctx,
            machine,
            description,
            state::PROCESSING,
            operation::DELETE,
        )
        .await?;
        return Ok(Requeue::after(retry::SHORT, "no node to drain"));
    }
    let force = forced_drain(ctx, machine);
    let forced = force.is_some();
    match drain_pass(ctx, machine, &node_name, forced).await {
        Ok(_) if forced => {
            info!(node = %node_name, reason = force.as_deref().unwrap_or_default(), "forced drain");
            let description = format!(
                "Force Drain successful. {}",
                step::DELETE_VOLUME_ATTACHMENTS
            );
            advance(
                ctx,
                machine,
                description,
                state::PROCESSING,
                operation::DELETE,
            )
            .await?;
            Ok(Requeue::after(retry::SHORT, "force drain done"))
        }
        Ok(progress) if progress.done() => {
            ctx.metrics.machine_duration(
                MachineDuration::Drain,
                machine,
                "",
                elapsed_since(machine.metadata.deletion_timestamp.as_ref()),
            );
            let description = format!("Drain successful. {}", step::INITIATE_VM_DELETION);
            advance(
                ctx,
                machine,
                description,
                state::PROCESSING,
                operation::DELETE,
            )
            .await?;
            Ok(Requeue::after(retry::SHORT, "drain done"))
        }
        Ok(progress) => {
            let description = format!(
                "Drain in progress - {} pods remaining ({} blocked by PodDisruptionBudget), {} volumes attached. {}",
                progress.remaining,
                progress.blocked_by_pdb,
                progress.attached_volumes,
                step::INITIATE_DRAIN
            );
            advance(
                ctx,
                machine,
                description,
                state::PROCESSING,
                operation::DELETE,
            )
            .await?;
            let after = if progress.blocked_by_pdb > 0 {
                PDB_RETRY
            } else {
                retry::SHORT
            };
            Ok(Requeue::after(after, "drain in progress"))
        }
        Err(error) if forced => {
            let description = format!(
                "Drain failed due to - {error}. However, since it's a force deletion shall continue deletion of VM. {}",
                step::DELETE_VOLUME_ATTACHMENTS
            );
            advance(
                ctx,
                machine,
                description,
                state::PROCESSING,
                operation::DELETE,
            )
            .await?;
            Ok(Requeue::after(
                retry::SHORT,
                "force drain failed; continuing",
            ))
        }
        Err(error) => {
            let description = format!(
                "Drain failed due to - {error}. Will retry in next sync. {}",
                step::INITIATE_DRAIN
            );
            advance(ctx, machine, description, state::FAILED, operation::DELETE).await?;
            Err(Requeue::failure(retry::SHORT, error))
        }
    }
}

async fn delete_volume_attachments(ctx: &Context, machine: &Machine) -> Result<Requeue, Requeue> {
    let node_name = node_name_of(machine);
    let op_type = op_type_of(machine);
    let Some(client) = ctx.target.clone() else {
        let description = format!(
            "No target cluster. Moving to VM Deletion. {}",
            step::INITIATE_VM_DELETION
        );
        advance(ctx, machine, description, state::PROCESSING, &op_type).await?;
        return Ok(Requeue::after(retry::SHORT, "no target"));
    };
    let nodes = ctx
        .nodes()
        .ok_or_else(|| Requeue::failure(retry::SHORT, "no target cluster"))?;
    let node = get_node(&nodes, &node_name).await?;
    let description = match node {
        None => format!(
            "Skipping deleteNodeVolAttachments due to - node {node_name:?} not found. Moving to VM Deletion. {}",
            step::INITIATE_VM_DELETION
        ),
        Some(node)
            if node
                .status
                .as_ref()
                .and_then(|s| s.volumes_attached.as_ref())
                .is_none_or(Vec::is_empty) =>
        {
            format!(
                "Node Volumes for node: {node_name} are already detached. Moving to VM Deletion. {}",
                step::INITIATE_VM_DELETION
            )
        }
        Some(_) => {
            let attachments: Api<VolumeAttachment> = Api::all(client);
            let list = attachments
                .list(&ListParams::default())
                .await
                .map_err(|error| {
                    Requeue::failure(retry::SHORT, format!("listing VolumeAttachments: {error}"))
                })?;
            let live: Vec<String> = list
                .items
                .into_iter()
                .filter(|va| {
                    va.spec.node_name == node_name && va.metadata.deletion_timestamp.is_none()
                })
                .filter_map(|va| va.metadata.name)
                .collect();
            if !live.is_empty() {
                for name in &live {
                    if let Err(error) = attachments.delete(name, &DeleteParams::default()).await
                        && !is_not_found(&error)
                    {
                        warn!(volume_attachment = %name, "delete failed: {error}");
                    }
                }
                return Ok(Requeue::after(
                    retry::SHORT,
                    "volume attachments deleted; waiting for them to go",
                ));
            }
            format!(
                "No Live VolumeAttachments for node: {node_name}. Moving to VM Deletion. {}",
                step::INITIATE_VM_DELETION
            )
        }
    };
    advance(ctx, machine, description, state::PROCESSING, &op_type).await?;
    Ok(Requeue::after(retry::SHORT, "volume attachments handled"))
}

async fn delete_vm(ctx: &Context, request: &MachineRequest) -> Result<Requeue, Requeue> {
    let machine = &request.machine;
    let (description, op_state, after, last_known_state, failed) = match ctx
        .driver
        .delete_machine(request)
        .await
    {
        Ok(response) => {
            ctx.metrics.machine_duration(
                MachineDuration::Delete,
                machine,
                &zone_of(&request.machine_class),
                elapsed_since(machine.metadata.deletion_timestamp.as_ref()),
            );
            (
                format!(
                    "VM deletion was successful. {}",
                    step::INITIATE_NODE_DELETION
                ),
                state::PROCESSING,
                retry::SHORT,
                Some(response.last_known_state).filter(|s| !s.is_empty()),
                false,
            )
        }
        Err(error) => match error.code {
            MachineCode::NotFound => (
                format!(
                    "VM not found. Continuing deletion flow. {}",
                    step::INITIATE_NODE_DELETION
                ),
                state::PROCESSING,
                retry::SHORT,
                None,
                false,
            ),
            code if retry::is_transient(code) => (
                format!(
                    "VM deletion failed due to - {error}. However, will re-try in the next resync. {}",
                    step::INITIATE_VM_DELETION
                ),
                state::FAILED,
                retry::SHORT,
                None,
                true,
            ),
            _ => (
                format!(
                    "VM deletion failed due to - {error}. Aborting operation. {}",
                    step::INITIATE_VM_DELETION
                ),
                state::FAILED,
                retry::LONG,
                None,
                true,
            ),
        },
    };
    let current = status_of(machine).current_status.unwrap_or_default();
    update_machine_status(
        ctx,
        machine,
        last_operation(description.clone(), op_state, operation::DELETE),
        current,
        last_known_state,
    )
    .await?;
    Ok(if failed {
        Requeue::failure(after, description)
    } else {
        Requeue::after(after, description)
    })
}

async fn delete_node(ctx: &Context, machine: &Machine) -> Result<Requeue, Requeue> {
    let node_name = node_name_of(machine);
    let description = match ctx.nodes() {
        None => format!(
            "No target cluster, continuing deletion flow. {}",
            step::INITIATE_FINALIZER_REMOVAL
        ),
        Some(_) if node_name.is_empty() => format!(
            "Label {NODE_LABEL:?} not present on machine {:?}, continuing deletion flow. {}",
            machine.metadata.name.as_deref().unwrap_or_default(),
            step::INITIATE_FINALIZER_REMOVAL
        ),
        Some(nodes) => match nodes.get_opt(&node_name).await {
            Ok(None) => format!(
                "No node object found for {node_name:?}, continuing deletion flow. {}",
                step::INITIATE_FINALIZER_REMOVAL
            ),
            Err(error) => {
                let description = format!(
                    "Retrieval of Node Object {node_name:?} failed due to error: {error}, Retrying. {}",
                    step::INITIATE_NODE_DELETION
                );
                advance(
                    ctx,
                    machine,
                    description.clone(),
                    state::FAILED,
                    operation::DELETE,
                )
                .await?;
                return Err(Requeue::failure(retry::SHORT, description));
            }
            Ok(Some(node)) => {
                if let Err(error) = set_finalizer(&nodes, &node, NODE_FINALIZER, false).await {
                    let description = format!(
                        "Removal of finalizers from Node Object {node_name:?} failed due to error: {error}, Retrying. {}",
                        step::INITIATE_NODE_DELETION
                    );
                    advance(
                        ctx,
                        machine,
                        description.clone(),
                        state::FAILED,
                        operation::DELETE,
                    )
                    .await?;
                    return Err(Requeue::failure(retry::SHORT, description));
                }
                match nodes.delete(&node_name, &DeleteParams::default()).await {
                    Ok(_) => format!(
                        "Deletion of Node Object {node_name:?} is successful. {}",
                        step::INITIATE_FINALIZER_REMOVAL
                    ),
                    Err(error) if is_not_found(&error) => format!(
                        "No node object found for {node_name:?}, continuing deletion flow. {}",
                        step::INITIATE_FINALIZER_REMOVAL
                    ),
                    Err(error) => {
                        let description = format!(
                            "Deletion of Node Object {node_name:?} failed due to error: {error}. {}",
                            step::INITIATE_NODE_DELETION
                        );
                        advance(
                            ctx,
                            machine,
                            description.clone(),
                            state::FAILED,
                            operation::DELETE,
                        )
                        .await?;
                        return Err(Requeue::failure(retry::SHORT, description));
                    }
                }
            }
        },
    };
    advance(
        ctx,
        machine,
        description.clone(),
        state::PROCESSING,
        operation::DELETE,
    )
    .await?;
    Ok(Requeue::after(retry::SHORT, description))
}

async fn remove_finalizer(ctx: &Context, machine: &Machine) -> Result<Requeue, Requeue> {
    let name = machine.name_any();
    // A machine that never joined still has its bootstrap token; do not leave it behind.
    if let Err(error) = delete_bootstrap_token(ctx, &name).await {
        return Err(Requeue::failure(
            retry::SHORT,
            format!("deleting bootstrap token: {error}"),
        ));
    }
    match set_finalizer(&ctx.machines(), machine, MCM_FINALIZER, false).await {
        Ok(_) => {
            info!(machine = %name, "machine finalizer removed; deletion complete");
            Ok(Requeue::after(retry::LONG, "machine deleted"))
        }
        Err(error) if is_not_found(&error) => Ok(Requeue::after(retry::LONG, "machine gone")),
        Err(error) => Err(Requeue::api_failure(
            &error,
            "Machine finalizer REMOVAL failed",
        )),
    }
}
