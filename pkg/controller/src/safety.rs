//! MCM's safety controller: orphan VM collection (VMs the driver lists whose Machine is
//! gone) and the API server reachability check that freezes the machine controller.

use std::time::{Duration, Instant};

use kube::ResourceExt;
use tracing::{error, info, warn};

use mcm_provider_kubevirt::driver::{ListMachinesRequest, MachineRequest};
use mcm_provider_kubevirt::mcm::{Machine, MachineClass};

use crate::cache::cached;
use crate::context::{Context, is_not_found};
use crate::machine::status::{current_status, last_operation, phase_of, status_of, write_status};
use crate::names::{operation, phase, state};
use crate::secrets::secret_data;

/// A name no Machine or Node can have, for reachability GETs answered 404.
const PROBE_NAME: &str = "machine-controller-reachability-probe";

/// Counts of one orphan collection.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OrphanReport {
    pub listed: usize,
    pub deleted: usize,
    pub failed: usize,
}

/// Deletes VMs listed by the driver whose Machine does not exist. A VM whose Machine
/// exists is left alone whatever the machine's phase or providerID: VM names are machine
/// names here, so that VM is the machine's own (MCM also deletes on a providerID mismatch).
pub async fn collect_orphans(ctx: &Context) -> Result<OrphanReport, kube::Error> {
    let classes = ctx.list_machine_classes().await?;
    let mut report = OrphanReport::default();
    for class in classes {
        collect_orphans_of(ctx, &class, &mut report).await?;
    }
    if report.deleted > 0 || report.failed > 0 {
        info!(
            listed = report.listed,
            deleted = report.deleted,
            failed = report.failed,
            "orphan VM collection"
        );
    }
    Ok(report)
}

async fn collect_orphans_of(
    ctx: &Context,
    class: &MachineClass,
    report: &mut OrphanReport,
) -> Result<(), kube::Error> {
    let class_name = class.name_any();
    let secret = secret_data(ctx, class).await?;
    let listed = match ctx
        .driver
        .list_machines(&ListMachinesRequest {
            machine_class: class.clone(),
            secret: secret.clone(),
        })
        .await
    {
        Ok(listed) => listed.machine_list,
        Err(error) => {
            warn!(machine_class = %class_name, "listing VMs failed: {error}");
            return Ok(());
        }
    };
    for (provider_id, machine_name) in listed {
        report.listed += 1;
        if machine_exists(ctx, &machine_name).await? {
            continue;
        }
        let mut orphan = Machine::new(&machine_name, Default::default());
        orphan.metadata.namespace = class.metadata.namespace.clone();
        orphan.spec.provider_id = Some(provider_id.clone());
        let request = MachineRequest {
            machine: orphan,
            machine_class: class.clone(),
            secret: secret.clone(),
        };
        match ctx.driver.delete_machine(&request).await {
            Ok(_) => {
                report.deleted += 1;
                info!(machine = %machine_name, %provider_id, "orphan VM deleted");
            }
            Err(error) => {
                report.failed += 1;
                error!(machine = %machine_name, "deleting orphan VM failed, retried next period: {error}");
            }
        }
    }
    Ok(())
}

/// Whether the Machine exists. The store answers for the Machines it has; one it lacks is
/// asked for at the API server before its VM goes, as the store may lag behind a Machine
/// created a moment ago, whose VM must not be taken for an orphan.
async fn machine_exists(ctx: &Context, name: &str) -> Result<bool, kube::Error> {
    if let Some(caches) = ctx.caches()
        && let Some(Some(_)) = cached(&caches.machines, name, Some(ctx.namespace())).await
    {
        return Ok(true);
    }
    Ok(ctx.machines().get_opt(name).await?.is_some())
}

async fn reachable(ctx: &Context) -> bool {
    let control = match ctx.machines().get_opt(PROBE_NAME).await {
        Ok(_) => true,
        Err(error) => is_not_found(&error),
    };
    let target = match ctx.nodes() {
        None => true,
        Some(nodes) => match nodes.get_opt(PROBE_NAME).await {
            Ok(_) => true,
            Err(error) => is_not_found(&error),
        },
    };
    control && target
}

/// State of the API server check between periods.
#[derive(Debug, Default)]
pub struct ApiServerWatch {
    unreachable_since: Option<Instant>,
}

impl ApiServerWatch {
    /// One check. Returns how long to wait before the next.
    pub async fn check(&mut self, ctx: &Context) -> Duration {
        let period = ctx
            .options
            .safety
            .machine_safety_apiserver_statuscheck_period;
        let timeout = ctx
            .options
            .safety
            .machine_safety_apiserver_statuscheck_timeout;
        let up = reachable(ctx).await;
        if ctx.is_frozen() {
            if up {
                unfreeze(ctx).await;
                self.unreachable_since = None;
            }
            return period;
        }
        if up {
            self.unreachable_since = None;
            return period;
        }
        let since = *self.unreachable_since.get_or_insert_with(Instant::now);
        if since.elapsed() > timeout {
            warn!(
                "SafetyController: Freezing Machine Controller: API servers unreachable for over {timeout:?}"
            );
            ctx.set_frozen(true);
        }
        timeout / 5
    }
}

/// Machines left Unknown while the API servers were away get their health timeout reset.
async fn unfreeze(ctx: &Context) {
    let machines = match ctx.list_machines().await {
        Ok(machines) => machines,
        Err(error) => {
            warn!("SafetyController: unable to LIST machines: {error}");
            return;
        }
    };
    for machine in machines.iter().filter(|m| phase_of(m) == phase::UNKNOWN) {
        let mut status = status_of(machine);
        status.current_status = Some(current_status(phase::RUNNING, false));
        status.last_operation = Some(last_operation(
            "Machine Health Timeout was reset due to APIServer being unreachable",
            state::SUCCESSFUL,
            operation::HEALTH_CHECK,
        ));
        if let Err(error) = write_status(ctx, machine, status).await {
            warn!("SafetyController: unable to UPDATE machine/status: {error}");
            return;
        }
    }
    ctx.set_frozen(false);
    info!("SafetyController: UnFreezing Machine Controller");
}
