//! The machine reconcile (MCM's `reconcileClusterMachineKey` and its termination twin):
//! finalizer first, then deletion, freeze, health, node sync and in-place updates, then
//! the creation flow.
//! Each flow lives in a module of its own; this one only dispatches.

pub mod bootstrap_token;
pub mod creation;
pub mod deletion;
pub mod health;
pub mod in_place;
pub mod node_sync;
pub mod preservation;
pub mod settings;
pub mod status;

use std::ops::ControlFlow;

use mcm_provider_kubevirt::driver::MachineRequest;
use mcm_provider_kubevirt::mcm::Machine;

use crate::context::Context;
use crate::error::{ApiError, ReconcileError, Requeue, retry};
use crate::machine::creation::creation_flow;
use crate::machine::deletion::deletion_flow;
use crate::machine::health::reconcile_health;
use crate::machine::in_place::reconcile_in_place;
use crate::machine::node_sync::sync_node;
use crate::machine::preservation::manage_preservation;
use crate::machine::status::{node_name_of, phase_of};
use crate::machine_class::class_of;
use crate::names::{MCM_FINALIZER, phase};
use crate::util::finalizers::set_finalizer;

/// MCM's Machine validation: the class reference needs its kind and name.
fn invalid_class_reference(machine: &Machine) -> Option<String> {
    let class = &machine.spec.class;
    let mut missing = Vec::new();
    if class.kind.as_deref().unwrap_or_default().is_empty() {
        missing.push("spec.class.kind: Required value");
    }
    if class.name.is_empty() {
        missing.push("spec.class.name: Required value");
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// One reconcile of one machine: when to look again, or the stage that failed.
pub async fn reconcile_machine(
    ctx: &Context,
    machine: &Machine,
) -> Result<Requeue, ReconcileError> {
    if machine.metadata.deletion_timestamp.is_some() {
        let (class, secret) = class_of(ctx, machine).await?;
        let request = MachineRequest {
            machine: machine.clone(),
            machine_class: class,
            secret,
        };
        return deletion_flow(ctx, &request).await;
    }
    let added = set_finalizer(&ctx.machines(), machine, MCM_FINALIZER, true)
        .await
        .map_err(|error| {
            ReconcileError::Finalizer(ApiError::new("Failed to add finalizers", error))
        })?;
    if added.is_some() {
        return Ok(Requeue::after(
            retry::SHORT,
            "Machine creation in process. Machine finalizers are UPDATED",
        ));
    }
    if ctx.is_frozen() {
        return Err(ReconcileError::Frozen);
    }
    if let Some(invalid) = invalid_class_reference(machine) {
        return Err(ReconcileError::InvalidMachine(invalid));
    }
    let (class, secret) = class_of(ctx, machine).await?;

    let node_name = node_name_of(machine);
    let current = phase_of(machine);
    let mut recheck = None;
    // The Node as the steps above last read it, so preservation need not read it again.
    let mut known_node = None;
    if !node_name.is_empty() && !current.is_empty() {
        match reconcile_health(ctx, machine, &node_name, &class).await? {
            ControlFlow::Break(requeue) => return Ok(requeue),
            ControlFlow::Continue(after) => recheck = after,
        }
        let node = match sync_node(ctx, machine, &class, &node_name).await? {
            ControlFlow::Break(requeue) => return Ok(requeue),
            ControlFlow::Continue(node) => node,
        };
        if let Some(node) = node {
            match reconcile_in_place(ctx, machine, node).await? {
                ControlFlow::Break(mut requeue) => {
                    // The InPlaceUpdating timeout's recheck is not to wait for the update's requeue.
                    requeue.after = recheck.map_or(requeue.after, |r| r.min(requeue.after));
                    return Ok(requeue);
                }
                ControlFlow::Continue(node) => known_node = Some(node),
            }
        }
    }
    if let ControlFlow::Break(requeue) = manage_preservation(ctx, machine, known_node).await? {
        return Ok(requeue);
    }
    let provider_id = machine.spec.provider_id.as_deref().unwrap_or_default();
    if provider_id.is_empty() || current.is_empty() || current == phase::CRASH_LOOP_BACK_OFF {
        return creation_flow(ctx, machine, &class, secret).await;
    }
    let after = recheck.map_or(retry::LONG, |r: std::time::Duration| r.min(retry::LONG));
    Ok(Requeue::after(after, "periodic reconcile"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_class_reference_needs_kind_and_name() {
        let mut machine = Machine::new("m1", Default::default());
        assert_eq!(
            invalid_class_reference(&machine).as_deref(),
            Some("spec.class.kind: Required value, spec.class.name: Required value")
        );
        machine.spec.class.kind = Some("MachineClass".into());
        machine.spec.class.name = "class-a".into();
        assert_eq!(invalid_class_reference(&machine), None);
    }
}
