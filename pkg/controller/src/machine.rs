//! The machine reconcile (MCM's `reconcileClusterMachineKey` and its termination twin):
//! finalizer first, then deletion, freeze, health and node sync, then the creation flow.

use std::time::Duration;

use mcm_provider_kubevirt::driver::MachineRequest;
use mcm_provider_kubevirt::mcm::Machine;

use crate::context::{Context, Requeue, retry};
use crate::creation::{creation_flow, zone_of};
use crate::deletion::deletion_flow;
use crate::finalizers::set_finalizer;
use crate::health::reconcile_health;
use crate::machine_class::class_of;
use crate::names::{MCM_FINALIZER, phase};
use crate::node_sync::sync_node;
use crate::status::{node_name_of, phase_of};

/// One reconcile of one machine; always answers when to look again.
pub async fn reconcile_machine(ctx: &Context, machine: &Machine) -> Requeue {
    if machine.metadata.deletion_timestamp.is_some() {
        let (class, secret) = match class_of(ctx, machine).await {
            Ok(found) => found,
            Err(requeue) => return requeue,
        };
        let request = MachineRequest {
            machine: machine.clone(),
            machine_class: class,
            secret,
        };
        return deletion_flow(ctx, &request).await;
    }
    match set_finalizer(&ctx.machines(), machine, MCM_FINALIZER, true).await {
        Ok(Some(_)) => {
            return Requeue::after(
                retry::SHORT,
                "Machine creation in process. Machine finalizers are UPDATED",
            );
        }
        Ok(None) => {}
        Err(error) => return Requeue::api_failure(&error, "Failed to add finalizers"),
    }
    if ctx.is_frozen() {
        return Requeue::failure(
            retry::LONG,
            "Machine controller has frozen. Retrying reconcile after resync period",
        );
    }
    if machine.spec.class.name.is_empty() {
        return Requeue::failure(
            retry::LONG,
            "validation of Machine failed: spec.class.name: Required value",
        );
    }
    let (class, secret) = match class_of(ctx, machine).await {
        Ok(found) => found,
        Err(requeue) => return requeue,
    };

    let node_name = node_name_of(machine);
    let current = phase_of(machine);
    let mut recheck: Option<Duration> = None;
    if !node_name.is_empty() && !current.is_empty() {
        match reconcile_health(ctx, machine, &node_name, &zone_of(&class)).await {
            Ok(after) => recheck = after,
            Err(requeue) => return requeue,
        }
        if let Err(requeue) = sync_node(ctx, machine, &node_name).await {
            return requeue;
        }
    }
    let provider_id = machine.spec.provider_id.as_deref().unwrap_or_default();
    if provider_id.is_empty() || current.is_empty() || current == phase::CRASH_LOOP_BACK_OFF {
        return creation_flow(ctx, machine, &class, secret).await;
    }
    let after = recheck.map_or(retry::LONG, |r| r.min(retry::LONG));
    Requeue::after(after, "periodic reconcile")
}
