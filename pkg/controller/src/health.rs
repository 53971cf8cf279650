//! MCM's health reconcile (`reconcileMachineHealth`): Node conditions copied to the
//! Machine, Pending -> Running once healthy, Running -> Unknown when not, and Failed when
//! the creation or health timeout runs out.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeCondition};
use kube::ResourceExt;
use kube::api::DeleteParams;
use tracing::{info, warn};

use mcm_provider_kubevirt::mcm::Machine;

use crate::bootstrap_token::delete_bootstrap_token;
use crate::context::{Context, Requeue, get_node, is_not_found, retry};
use crate::machine_settings::{
    creation_timeout, elapsed_since, health_timeout, health_timeout_disabled, node_conditions,
};
use crate::metrics::MachineDuration;
use crate::names::{
    CRITICAL_COMPONENTS_NOT_READY_TAINT, JOIN_DURATION_ANNOTATION, operation, phase, state,
};
use crate::status::{current_status, last_operation, phase_of, status_of, write_status};

/// How soon a Pending or Unknown machine is looked at again for its timeout.
pub const TIMEOUT_RECHECK: Duration = Duration::from_secs(60);

/// A condition added, removed or changed in status. Heartbeat times alone do not count:
/// copying every kubelet heartbeat would rewrite each Machine every few minutes.
pub fn conditions_changed(old: &[NodeCondition], new: &[NodeCondition]) -> bool {
    let status_of = |list: &[NodeCondition], type_: &str| {
        list.iter()
            .find(|c| c.type_ == type_)
            .map(|c| c.status.clone())
    };
    new.iter()
        .any(|c| status_of(old, &c.type_).as_ref() != Some(&c.status))
        || old.iter().any(|c| status_of(new, &c.type_).is_none())
}

/// Ready True and every configured problem condition False.
pub fn is_healthy(conditions: &[NodeCondition], problem_types: &[String]) -> bool {
    !conditions.is_empty()
        && conditions.iter().all(|c| {
            let ready_ok = c.type_ != "Ready" || c.status == "True";
            let problem_ok = !problem_types.contains(&c.type_) || c.status == "False";
            ready_ok && problem_ok
        })
}

fn critical_components_not_ready(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .any(|t| t.key == CRITICAL_COMPONENTS_NOT_READY_TAINT && t.effect == "NoSchedule")
}

fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    format!("{}h{}m{}s", seconds / 3600, seconds / 60 % 60, seconds % 60)
}

/// Returns `Err` to end the reconcile (after a status write or a failure), or `Ok` with
/// an optional earlier recheck for a running timeout.
pub async fn reconcile_health(
    ctx: &Context,
    machine: &Machine,
    node_name: &str,
    zone: &str,
) -> Result<Option<Duration>, Requeue> {
    let Some(nodes) = ctx.nodes() else {
        return Ok(None);
    };
    let name = machine.name_any();
    let node = get_node(&nodes, node_name).await?;
    if let Some(node) = &node
        && node.metadata.deletion_timestamp.is_some()
    {
        return Err(delete_machine_of_deleted_node(ctx, &name, node_name).await);
    }
    let mut status = status_of(machine);
    let current = phase_of(machine).to_owned();
    let mut annotated = None;
    let mut dirty = false;
    match &node {
        None => {
            if status.conditions.as_ref().is_some_and(|c| !c.is_empty())
                && current == phase::RUNNING
            {
                let description = format!(
                    "Node object went missing. Machine {name} is unhealthy - changing MachinePhase to Unknown"
                );
                warn!(machine = %name, "{description}");
                status.current_status = Some(current_status(phase::UNKNOWN, false));
                status.last_operation = Some(last_operation(
                    description,
                    state::PROCESSING,
                    operation::HEALTH_CHECK,
                ));
                dirty = true;
            }
        }
        Some(node) => {
            let node_conditions_now = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            if conditions_changed(
                status.conditions.as_deref().unwrap_or_default(),
                &node_conditions_now,
            ) {
                status.conditions = Some(node_conditions_now.clone());
                dirty = true;
            }
            let problems = node_conditions(machine, &ctx.options);
            if is_healthy(&node_conditions_now, &problems) {
                let held_back = current == phase::PENDING && critical_components_not_ready(node);
                if current != phase::RUNNING && !held_back {
                    let previous = status.last_operation.clone().unwrap_or_default();
                    let (description, op_type) = if previous.type_.as_deref()
                        == Some(operation::CREATE)
                        && previous.state.as_deref() != Some(state::SUCCESSFUL)
                    {
                        let joined = elapsed_since(machine.metadata.creation_timestamp.as_ref());
                        if let Err(error) = delete_bootstrap_token(ctx, &name).await {
                            warn!(machine = %name, "deleting the bootstrap token failed: {error}");
                        }
                        ctx.metrics
                            .machine_duration(MachineDuration::Join, machine, zone, joined);
                        annotated = Some(format_duration(joined));
                        (
                            format!(
                                "Machine {name} successfully joined the cluster in {}",
                                format_duration(joined)
                            ),
                            operation::CREATE,
                        )
                    } else {
                        (
                            format!("Machine {name} successfully re-joined the cluster"),
                            operation::HEALTH_CHECK,
                        )
                    };
                    info!(machine = %name, "{description}");
                    status.last_operation =
                        Some(last_operation(description, state::SUCCESSFUL, op_type));
                    status.current_status = Some(current_status(phase::RUNNING, false));
                    dirty = true;
                }
            } else if current == phase::RUNNING {
                let description = format!(
                    "Machine {name} is unhealthy - changing MachinePhase to Unknown. Node conditions: {}",
                    describe_conditions(&node_conditions_now)
                );
                warn!(machine = %name, "{description}");
                status.current_status = Some(current_status(phase::UNKNOWN, false));
                status.last_operation = Some(last_operation(
                    description,
                    state::PROCESSING,
                    operation::HEALTH_CHECK,
                ));
                dirty = true;
            }
        }
    }

    let mut recheck = None;
    if !dirty && (current == phase::PENDING || current == phase::UNKNOWN) {
        let pending = current == phase::PENDING;
        let (timeout, elapsed) = if pending {
            (
                creation_timeout(machine, &ctx.options),
                elapsed_since(machine.metadata.creation_timestamp.as_ref()),
            )
        } else {
            let since = status
                .current_status
                .as_ref()
                .and_then(|c| c.last_update_time.as_ref());
            (health_timeout(machine, &ctx.options), elapsed_since(since))
        };
        if elapsed > timeout {
            if pending {
                let description = format!(
                    "Machine {name} failed to join the cluster in {} minutes.",
                    format_duration(timeout)
                );
                warn!(machine = %name, "{description}");
                let op_type = status
                    .last_operation
                    .as_ref()
                    .and_then(|o| o.type_.clone())
                    .unwrap_or_else(|| operation::CREATE.to_owned());
                status.last_operation = Some(last_operation(description, state::FAILED, &op_type));
                status.current_status = Some(current_status(phase::FAILED, false));
                ctx.metrics.failed_join(machine, zone);
                dirty = true;
            } else if !health_timeout_disabled(machine) {
                let description = format!(
                    "Machine {name} health checks failing since last {} minutes. Updating machine phase to Failed. Node Conditions: {}",
                    format_duration(timeout),
                    describe_conditions(status.conditions.as_deref().unwrap_or_default())
                );
                warn!(machine = %name, "{description}");
                status.last_operation = Some(last_operation(
                    description,
                    state::FAILED,
                    operation::HEALTH_CHECK,
                ));
                status.current_status = Some(current_status(phase::FAILED, false));
                dirty = true;
            }
        } else {
            recheck = Some(TIMEOUT_RECHECK);
        }
    }

    if !dirty {
        return Ok(recheck);
    }
    let mut target = machine.clone();
    if let Some(joined) = annotated {
        // The annotation is metadata: written with the machine, before the status.
        target
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(JOIN_DURATION_ANNOTATION.to_owned(), joined);
        target = crate::status::replace_machine(ctx, &target).await?;
    }
    match write_status(ctx, &target, status).await {
        Ok(_) => Err(Requeue::after(
            retry::SHORT,
            "machine phase/conditions updated",
        )),
        Err(error) => Err(Requeue::api_failure(
            &error,
            "Update of Phase/Conditions failed",
        )),
    }
}

/// MCM's `triggerMachineDeletion`: a Node being deleted takes its Machine with it. The
/// Node's finalizer (set by node sync) holds it until the machine's deletion flow has
/// drained it and deleted the VM; without this the Node would stay Terminating and the
/// Machine Running on a lost Node.
async fn delete_machine_of_deleted_node(ctx: &Context, name: &str, node_name: &str) -> Requeue {
    info!(machine = %name, node = %node_name, "node is being deleted; triggering machine deletion");
    match ctx.machines().delete(name, &DeleteParams::default()).await {
        Ok(_) => Requeue::after(
            retry::SHORT,
            format!("node {node_name:?} is being deleted; machine deletion triggered"),
        ),
        Err(error) if is_not_found(&error) => Requeue::after(retry::LONG, "machine gone"),
        Err(error) => Requeue::api_failure(
            &error,
            "machine backing a deleted node could not be marked for deletion",
        ),
    }
}

fn describe_conditions(conditions: &[NodeCondition]) -> String {
    conditions
        .iter()
        .map(|c| format!("{}={}", c.type_, c.status))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(type_: &str, status: &str) -> NodeCondition {
        NodeCondition {
            type_: type_.into(),
            status: status.into(),
            ..Default::default()
        }
    }

    #[test]
    fn health_needs_ready_and_no_problem_condition() {
        let problems = vec!["DiskPressure".to_owned()];
        assert!(!is_healthy(&[], &problems));
        assert!(is_healthy(
            &[
                condition("Ready", "True"),
                condition("DiskPressure", "False")
            ],
            &problems
        ));
        assert!(!is_healthy(&[condition("Ready", "False")], &problems));
        assert!(!is_healthy(
            &[
                condition("Ready", "True"),
                condition("DiskPressure", "True")
            ],
            &problems
        ));
        assert!(!is_healthy(
            &[
                condition("Ready", "True"),
                condition("DiskPressure", "Unknown")
            ],
            &problems
        ));
        // Conditions not configured as problems are ignored.
        assert!(is_healthy(
            &[
                condition("Ready", "True"),
                condition("MemoryPressure", "True")
            ],
            &problems
        ));
    }

    #[test]
    fn only_type_and_status_changes_count() {
        let mut beat = condition("Ready", "True");
        beat.last_heartbeat_time = Some(crate::status::now());
        assert!(!conditions_changed(&[condition("Ready", "True")], &[beat]));
        assert!(conditions_changed(
            &[condition("Ready", "True")],
            &[condition("Ready", "False")]
        ));
        assert!(conditions_changed(&[], &[condition("Ready", "True")]));
        assert!(conditions_changed(
            &[
                condition("Ready", "True"),
                condition("DiskPressure", "False")
            ],
            &[condition("Ready", "True")]
        ));
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(format_duration(Duration::from_secs(20 * 60)), "0h20m0s");
        assert_eq!(format_duration(Duration::from_secs(3725)), "1h2m5s");
    }
}
