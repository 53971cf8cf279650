//! Machine preservation (MCM v0.62): a Machine or Node annotated
//! `node.machine.sapcloud.io/preserve` is kept (not replaced by the machine-set controller)
//! until `currentStatus.preserveExpiryTime`, `--machine-preserve-timeout` or the
//! machine's `machinePreserveTimeout` after it started. While preserved, the Node carries
//! the cluster-autoscaler's scale-down-disabled annotation and a `Preserved` condition; a
//! Failed machine's Node is tainted `node.machine.sapcloud.io/preserved:NoSchedule` and
//! drained first. [`decision`] decides; this module reads and writes.
//!
//! Unlike MCM, the drain does not block the reconcile: each pass does what is due and the
//! machine is requeued until the Node is empty (the condition is written once it is).

pub mod decision;

use std::ops::ControlFlow;

use k8s_openapi::api::core::v1::{Node, NodeCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use tracing::{info, warn};

use mcm_provider_kubevirt::mcm::Machine;

use crate::context::{Context, is_not_found, node_condition, set_node_condition};
use crate::error::{ApiError, PreservationError, Requeue, retry};
use crate::machine::deletion::drain::{DrainPurpose, drain_pass, save_drain_state};
use crate::machine::settings::{drain_timeout, preserve_timeout};
use crate::machine::status::{
    continue_after_write, node_name_of, patch_machine_annotations, phase_of,
};
use crate::names::{
    CA_SCALE_DOWN_DISABLED_ANNOTATION, CA_SCALE_DOWN_DISABLED_BY_MCM_ANNOTATION,
    LAST_APPLIED_NODE_PRESERVE_ANNOTATION, PRESERVE_ANNOTATION, PRESERVED_CONDITION,
    PRESERVED_TAINT,
};
use decision::{
    NodeAnnotation, PreservationAction, PreservationDecision, PreserveInputs, PreserveValue,
    PreservedDrain, already_preserved, decide, drain_required, preserved_condition,
    stopped_condition,
};

type Flow = Result<ControlFlow<Requeue>, PreservationError>;

const ANNOTATIONS_FAILED: &str = "Machine preserve annotations UPDATE failed";

/// The Preserved condition, merged by type with the kubelet's conditions.
async fn set_condition(
    nodes: &Api<Node>,
    node_name: &str,
    condition: NodeCondition,
) -> Result<(), ApiError> {
    set_node_condition(nodes, node_name, condition)
        .await
        .map_err(|error| {
            ApiError::new(
                format!("node {node_name:?} Preserved condition UPDATE failed"),
                error,
            )
        })
}

/// The machine's `preserveExpiryTime`, if preserved.
pub fn expiry_of(machine: &Machine) -> Option<Timestamp> {
    machine
        .status
        .as_ref()
        .and_then(|s| s.current_status.as_ref())
        .and_then(|c| c.preserve_expiry_time.as_ref())
        .map(|t| t.0)
}

/// The Node as the decision sees it. `found` is None when no Node is named (or there is
/// no target cluster), Some(None) when the named one does not exist. A Node that could
/// not be read counts as unannotated: that matters only to a preservation-bound machine,
/// which then fails with the read error.
fn node_annotation(found: &Option<Option<Node>>, unreadable: bool) -> NodeAnnotation<'_> {
    match found {
        _ if unreadable => NodeAnnotation::Found(None),
        None => NodeAnnotation::NoNode,
        Some(None) => NodeAnnotation::NodeNotFound,
        Some(Some(node)) => NodeAnnotation::Found(
            node.annotations()
                .get(PRESERVE_ANNOTATION)
                .map(String::as_str),
        ),
    }
}

/// MCM's manageMachinePreservation, run for every machine not being deleted. `known` is
/// the machine's Node if this reconcile already read it (it is read here otherwise).
pub async fn manage_preservation(ctx: &Context, original: &Machine, known: Option<Node>) -> Flow {
    let machine = original;
    let node_name = node_name_of(machine);
    let nodes = ctx.nodes();
    let (found, lookup_error) = match (known, &nodes, node_name.is_empty()) {
        (Some(node), _, _) => (Some(Some(node)), None),
        (None, Some(_), false) => match ctx.node(&node_name).await {
            Ok(found) => (Some(found), None),
            Err(error) => (Some(None), Some(error)),
        },
        _ => (None, None),
    };
    let node = found.as_ref().and_then(Option::as_ref);
    let annotations = machine.annotations();
    let inputs = PreserveInputs {
        machine_value: annotations.get(PRESERVE_ANNOTATION).map(String::as_str),
        last_applied_node_value: annotations
            .get(LAST_APPLIED_NODE_PRESERVE_ANNOTATION)
            .map_or("", String::as_str),
        node: node_annotation(&found, lookup_error.is_some()),
        phase: phase_of(machine),
        expiry: expiry_of(machine),
        now: Timestamp::now(),
    };
    let (action, untaint_when_running, record_node_value) = match decide(&inputs) {
        PreservationDecision::NotBound => return Ok(ControlFlow::Continue(())),
        PreservationDecision::InvalidNodeValue(value) => {
            warn!(machine = %machine.name_any(), node = %node_name, %value, "invalid {PRESERVE_ANNOTATION} on node; ignored");
            return Ok(ControlFlow::Continue(()));
        }
        PreservationDecision::Act {
            action,
            untaint_when_running,
            record_node_value,
        } => (action, untaint_when_running, record_node_value),
    };
    if let Some(error) = lookup_error {
        return Err(error.into());
    }
    let mut machine = machine.clone();
    match action {
        PreservationAction::Preserve(value) => {
            if let ControlFlow::Break(requeue) = preserve(ctx, &mut machine, node, value).await? {
                return Ok(ControlFlow::Break(requeue));
            }
        }
        PreservationAction::Stop { remove_annotations } => {
            stop(ctx, &mut machine, node, remove_annotations).await?;
        }
    }
    if let (true, Some(node), Some(nodes)) = (untaint_when_running, node, &nodes) {
        set_preserved_taint(nodes, node, false).await?;
    }
    if let Some(value) = record_node_value {
        let annotations = json!({
            PRESERVE_ANNOTATION: null,
            LAST_APPLIED_NODE_PRESERVE_ANNOTATION: value,
        });
        patch_machine_annotations(ctx, &machine, annotations, ANNOTATIONS_FAILED).await?;
        return Ok(ControlFlow::Break(continue_after_write(
            "preserve annotation recorded",
        )));
    }
    // The flows after this one write the Machine with the version they were given.
    if machine.resource_version() != original.resource_version() {
        return Ok(ControlFlow::Break(continue_after_write(
            "machine preservation updated",
        )));
    }
    Ok(ControlFlow::Continue(()))
}

/// MCM's preserveMachine: expiry first, then the Node's annotation, drain and condition.
async fn preserve(
    ctx: &Context,
    machine: &mut Machine,
    node: Option<&Node>,
    value: PreserveValue,
) -> Flow {
    let now = Timestamp::now();
    let expiry = match expiry_of(machine) {
        Some(expiry) => expiry,
        None => {
            let timeout = SignedDuration::try_from(preserve_timeout(machine, &ctx.options))
                .unwrap_or(SignedDuration::MAX);
            let expiry = now.checked_add(timeout).unwrap_or(Timestamp::MAX);
            *machine = write_expiry(ctx, machine, Some(expiry), now).await?;
            info!(machine = %machine.name_any(), until = %expiry, "machine preserved");
            expiry
        }
    };
    let (Some(node), Some(nodes)) = (node, ctx.nodes()) else {
        return Ok(ControlFlow::Continue(()));
    };
    let phase = phase_of(machine).to_owned();
    let existing = node_condition(node, PRESERVED_CONDITION);
    if already_preserved(existing, &phase) {
        return Ok(ControlFlow::Continue(()));
    }
    let node_name = node.name_any();
    disable_scale_down(&nodes, node).await?;
    let mut drain_error = None;
    let drain = if drain_required(existing, &phase) {
        set_preserved_taint(&nodes, node, true).await?;
        match drain_preserved(ctx, machine, &node_name).await? {
            ControlFlow::Break(requeue) => return Ok(ControlFlow::Break(requeue)),
            ControlFlow::Continue(Ok(())) => PreservedDrain::Drained,
            ControlFlow::Continue(Err(error)) => {
                drain_error = Some(error);
                PreservedDrain::Failed
            }
        }
    } else {
        PreservedDrain::NotNeeded
    };
    if let Some(condition) = preserved_condition(existing, value, drain, Some(expiry), now) {
        set_condition(&nodes, &node_name, condition).await?;
    }
    match drain_error {
        Some(error) => Err(PreservationError::Drain {
            node: node_name,
            error,
        }),
        None => Ok(ControlFlow::Continue(())),
    }
}

/// One drain pass: Break while pods remain, else the drain's result.
async fn drain_preserved(
    ctx: &Context,
    machine: &mut Machine,
    node_name: &str,
) -> Result<ControlFlow<Requeue, Result<(), String>>, PreservationError> {
    let timeout = drain_timeout(machine, &ctx.options);
    let force = decision::force_reason(machine, timeout, Timestamp::now());
    let purpose = DrainPurpose::Preservation;
    let pass = drain_pass(ctx, machine, node_name, force.is_some(), purpose).await;
    *machine = save_drain_state(ctx, machine, &pass.state).await?;
    match pass.result {
        Ok(progress) if !progress.done() && force.is_none() => Ok(ControlFlow::Break(
            Requeue::after(retry::SHORT, "draining the preserved machine's node"),
        )),
        Ok(_) => Ok(ControlFlow::Continue(Ok(()))),
        Err(error) => Ok(ControlFlow::Continue(Err(error))),
    }
}

/// MCM's stopPreservationIfActive: the Node's condition, annotations and taint, then the
/// expiry last (its absence is what says the machine is not preserved).
async fn stop(
    ctx: &Context,
    machine: &mut Machine,
    node: Option<&Node>,
    remove_annotations: bool,
) -> Result<(), PreservationError> {
    if expiry_of(machine).is_none() {
        return Ok(());
    }
    let now = Timestamp::now();
    if let (Some(node), Some(nodes)) = (node, ctx.nodes()) {
        let node_name = node.name_any();
        set_condition(&nodes, &node_name, stopped_condition(now)).await?;
        release_node_annotations(&nodes, node, remove_annotations).await?;
        set_preserved_taint(&nodes, node, false).await?;
    }
    let annotations = machine.annotations();
    if remove_annotations
        && (annotations.contains_key(PRESERVE_ANNOTATION)
            || annotations.contains_key(LAST_APPLIED_NODE_PRESERVE_ANNOTATION))
    {
        let annotations = json!({
            PRESERVE_ANNOTATION: null,
            LAST_APPLIED_NODE_PRESERVE_ANNOTATION: null,
        });
        *machine = patch_machine_annotations(ctx, machine, annotations, ANNOTATIONS_FAILED).await?;
    }
    *machine = write_expiry(ctx, machine, None, now).await?;
    info!(machine = %machine.name_any(), "machine preservation stopped");
    Ok(())
}

/// Sets or clears `preserveExpiryTime` with a patch of the status (MCM also stamps
/// lastUpdateTime), so a write never touches what else the status holds.
async fn write_expiry(
    ctx: &Context,
    machine: &Machine,
    expiry: Option<Timestamp>,
    now: Timestamp,
) -> Result<Machine, ApiError> {
    let patch = json!({"status": {"currentStatus": {
        "preserveExpiryTime": expiry.map(Time),
        "lastUpdateTime": Time(now),
    }}});
    ctx.machines()
        .patch_status(
            &machine.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .map_err(|error| ApiError::new("Machine/status preserveExpiryTime UPDATE failed", error))
}

/// Keeps the cluster-autoscaler from scaling the Node down, noting that MCM asked for it.
async fn disable_scale_down(nodes: &Api<Node>, node: &Node) -> Result<(), ApiError> {
    if node
        .annotations()
        .get(CA_SCALE_DOWN_DISABLED_ANNOTATION)
        .is_some_and(|v| v == "true")
    {
        return Ok(());
    }
    let annotations = json!({
        CA_SCALE_DOWN_DISABLED_ANNOTATION: "true",
        CA_SCALE_DOWN_DISABLED_BY_MCM_ANNOTATION: "true",
    });
    patch_node_annotations(nodes, node, annotations).await
}

/// Removes the scale-down annotation if MCM set it (someone else's stays), and the
/// Node's preserve annotation when asked.
async fn release_node_annotations(
    nodes: &Api<Node>,
    node: &Node,
    remove_preserve: bool,
) -> Result<(), ApiError> {
    let annotations = node.annotations();
    let mut removed = serde_json::Map::new();
    if annotations
        .get(CA_SCALE_DOWN_DISABLED_BY_MCM_ANNOTATION)
        .is_some_and(|v| v == "true")
    {
        removed.insert(CA_SCALE_DOWN_DISABLED_ANNOTATION.into(), Value::Null);
        removed.insert(CA_SCALE_DOWN_DISABLED_BY_MCM_ANNOTATION.into(), Value::Null);
    }
    if remove_preserve
        && annotations
            .get(PRESERVE_ANNOTATION)
            .is_some_and(|v| !v.is_empty())
    {
        removed.insert(PRESERVE_ANNOTATION.into(), Value::Null);
    }
    if removed.is_empty() {
        return Ok(());
    }
    patch_node_annotations(nodes, node, Value::Object(removed)).await
}

/// Merges `annotations` (null removes a key) into the Node's.
async fn patch_node_annotations(
    nodes: &Api<Node>,
    node: &Node,
    annotations: Value,
) -> Result<(), ApiError> {
    let name = node.name_any();
    let patch = json!({"metadata": {"annotations": annotations}});
    nodes
        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(drop)
        .map_err(|error| ApiError::new(format!("node {name:?} annotation UPDATE failed"), error))
}

fn is_preserved_taint(taint: &Taint) -> bool {
    taint.key == PRESERVED_TAINT && taint.effect == "NoSchedule"
}

fn has_preserved_taint(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|taints| taints.iter().any(is_preserved_taint))
}

/// Adds or removes the preserved NoSchedule taint; nothing is read or written when the
/// Node as this reconcile read it (`known`) already is as wanted (no one else sets this
/// taint). The taint list is replaced whole, so it is read afresh and the write carries
/// the resourceVersion it was read at: a concurrent change conflicts and is retried
/// rather than lost.
async fn set_preserved_taint(
    nodes: &Api<Node>,
    known: &Node,
    present: bool,
) -> Result<(), ApiError> {
    if has_preserved_taint(known) == present {
        return Ok(());
    }
    let node_name = known.name_any();
    let failed = |error| ApiError::new(format!("node {node_name:?} taint UPDATE failed"), error);
    let node = match nodes.get(&node_name).await {
        Ok(node) => node,
        Err(error) if is_not_found(&error) => return Ok(()),
        Err(error) => return Err(failed(error)),
    };
    let mut taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    if has_preserved_taint(&node) == present {
        return Ok(());
    }
    if present {
        taints.push(Taint {
            key: PRESERVED_TAINT.to_owned(),
            effect: "NoSchedule".to_owned(),
            time_added: Some(Time(Timestamp::now())),
            value: None,
        });
    } else {
        taints.retain(|t| !is_preserved_taint(t));
    }
    let patch = json!({
        "metadata": {"resourceVersion": node.resource_version()},
        "spec": {"taints": taints},
    });
    nodes
        .patch(&node_name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(drop)
        .map_err(failed)
}
