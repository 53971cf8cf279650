//! The deletion steps around the Node: finding it, deleting its VolumeAttachments, and
//! deleting the Node object once its VM is gone.

use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, ResourceExt};
use tracing::warn;

use mcm_provider_kubevirt::driver::MachineRequest;
use mcm_provider_kubevirt::mcm::Machine;

use crate::context::{Context, is_not_found};
use crate::error::{ApiError, DeletionError, Requeue, retry};
use crate::machine::status::{node_name_of, op_type_of, replace_machine};
use crate::names::{MACHINE_NAME_LABEL, NODE_FINALIZER, NODE_LABEL};
use crate::util::finalizers::set_finalizer;

use super::steps::{
    AttachmentDecision, DeletionStep, Transition, VmStatusDecision, after_vm_status,
    live_attachments, volume_attachments_of,
};
use super::{StepEnd, persist};

/// Finds the node to drain: the `node` label, a Node labelled with the machine name, or
/// the driver's answer; records it in the `node` label.
pub async fn find_node(ctx: &Context, request: &MachineRequest) -> Result<StepEnd, DeletionError> {
    let machine = &request.machine;
    if ctx.target.is_none() {
        let skip = Transition::to(
            DeletionStep::DeleteVm,
            "Running without target cluster, skipping node drain and volume attachment deletion.",
        );
        return persist(ctx, machine, skip).await;
    }
    let mut node_name = node_name_of(machine);
    if node_name.is_empty() {
        node_name = node_by_machine_label(ctx, &machine.name_any())
            .await
            .unwrap_or_default();
    }
    if node_name.is_empty() {
        match after_vm_status(ctx.driver.get_machine_status(request).await) {
            VmStatusDecision::Node(found) => node_name = found,
            VmStatusDecision::Next(next) => return persist(ctx, machine, next).await,
        }
    }
    let mut stored = machine.clone();
    if node_name_of(machine) != node_name {
        stored
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(NODE_LABEL.to_owned(), node_name);
        stored = replace_machine(ctx, &stored)
            .await
            .map_err(DeletionError::Api)?;
    }
    persist(ctx, &stored, Transition::to(DeletionStep::Drain, "")).await
}

async fn node_by_machine_label(ctx: &Context, machine_name: &str) -> Option<String> {
    let nodes = ctx.list_nodes().await.ok()?;
    nodes
        .iter()
        .find(|node| {
            node.labels().get(MACHINE_NAME_LABEL).map(String::as_str) == Some(machine_name)
        })
        .map(|node| node.name_any())
}

/// Deletes the node's live VolumeAttachments and waits for them to go.
pub async fn delete_volume_attachments(
    ctx: &Context,
    machine: &Machine,
) -> Result<StepEnd, DeletionError> {
    let node_name = node_name_of(machine);
    let with_type = |mut next: Transition| {
        next.op_type = op_type_of(machine);
        next
    };
    let (Some(client), Some(_)) = (ctx.target.clone(), ctx.nodes()) else {
        let skip = Transition::to(
            DeletionStep::DeleteVm,
            "No target cluster. Moving to VM Deletion.",
        );
        return persist(ctx, machine, with_type(skip)).await;
    };
    let node = ctx.node(&node_name).await.map_err(DeletionError::Api)?;
    if let AttachmentDecision::Next(next) = volume_attachments_of(node.as_ref(), &node_name) {
        return persist(ctx, machine, with_type(next)).await;
    }
    let attachments: Api<VolumeAttachment> = Api::all(client);
    let list = attachments
        .list(&ListParams::default())
        .await
        .map_err(|error| DeletionError::Api(ApiError::new("listing VolumeAttachments", error)))?;
    let live = live_attachments(list.items, &node_name);
    if live.is_empty() {
        let next = Transition::to(
            DeletionStep::DeleteVm,
            &format!("No Live VolumeAttachments for node: {node_name}. Moving to VM Deletion."),
        );
        return persist(ctx, machine, with_type(next)).await;
    }
    for name in &live {
        if let Err(error) = attachments.delete(name, &DeleteParams::default()).await
            && !is_not_found(&error)
        {
            warn!(volume_attachment = %name, "delete failed: {error}");
        }
    }
    Ok(StepEnd::waiting(
        Requeue::after(
            retry::SHORT,
            "volume attachments deleted; waiting for them to go",
        ),
        machine,
    ))
}

/// Releases the Node's finalizer and deletes it; a missing Node or label moves on.
pub async fn delete_node(ctx: &Context, machine: &Machine) -> Result<StepEnd, DeletionError> {
    let node_name = node_name_of(machine);
    let next = |what: String| Transition::to(DeletionStep::RemoveFinalizer, &what);
    let Some(nodes) = ctx.nodes() else {
        let skip = next("No target cluster, continuing deletion flow.".to_owned());
        return persist(ctx, machine, skip).await;
    };
    if node_name.is_empty() {
        let skip = next(format!(
            "Label {NODE_LABEL:?} not present on machine {:?}, continuing deletion flow.",
            machine.name_any()
        ));
        return persist(ctx, machine, skip).await;
    }
    let missing = || {
        next(format!(
            "No node object found for {node_name:?}, continuing deletion flow."
        ))
    };
    // Read from the API server: a Node the store does not show yet must not be left behind.
    let deleted = match nodes.get_opt(&node_name).await {
        Ok(None) => return persist(ctx, machine, missing()).await,
        Err(error) => {
            let what = format!(
                "Retrieval of Node Object {node_name:?} failed due to error: {error}, Retrying."
            );
            return node_failed(ctx, machine, &what, error).await;
        }
        Ok(Some(node)) => match set_finalizer(&nodes, &node, NODE_FINALIZER, false).await {
            Err(error) => {
                let what = format!(
                    "Removal of finalizers from Node Object {node_name:?} failed due to error: {error}, Retrying."
                );
                return node_failed(ctx, machine, &what, error).await;
            }
            Ok(_) => nodes.delete(&node_name, &DeleteParams::default()).await,
        },
    };
    match deleted {
        Ok(_) => {
            let done = next(format!(
                "Deletion of Node Object {node_name:?} is successful."
            ));
            persist(ctx, machine, done).await
        }
        Err(error) if is_not_found(&error) => persist(ctx, machine, missing()).await,
        Err(error) => {
            let what =
                format!("Deletion of Node Object {node_name:?} failed due to error: {error}.");
            node_failed(ctx, machine, &what, error).await
        }
    }
}

/// Records a failed Node step for a retry and fails the reconcile with it.
async fn node_failed(
    ctx: &Context,
    machine: &Machine,
    what: &str,
    source: kube::Error,
) -> Result<StepEnd, DeletionError> {
    let retry_step = Transition::retry(DeletionStep::DeleteNode, what, retry::SHORT);
    let description = retry_step.description.clone();
    persist(ctx, machine, retry_step).await?;
    Err(DeletionError::Node {
        description,
        source,
    })
}
