//! The health decision, without I/O: given the Machine, its Node (if any), the machine's
//! health settings and the time, what the Machine's status becomes and what else follows.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use mcm_provider_kubevirt::mcm::{Machine, MachineStatus};

use crate::machine::in_place::plan::{update_failed_reason, update_result_of};
use crate::machine::preservation::expiry_of;
use crate::machine::settings::elapsed_until;
use crate::machine::status::{current_status_at, last_operation_at, phase_of, status_of};
use crate::names::{
    CRITICAL_COMPONENTS_NOT_READY_TAINT, IN_PLACE_UPDATE_CONDITION, operation, phase, state,
    update_result,
};
use crate::util::go_duration::format_go_duration;

/// How soon a Pending or Unknown machine is looked at again for its timeout.
pub const TIMEOUT_RECHECK: Duration = Duration::from_secs(60);

/// What health is judged on.
#[derive(Debug, Clone)]
pub struct HealthInputs<'a> {
    pub machine: &'a Machine,
    pub node: Option<&'a Node>,
    /// Condition types that make a Node unhealthy when not False.
    pub problem_conditions: &'a [String],
    pub creation_timeout: Duration,
    pub health_timeout: Duration,
    pub health_timeout_disabled: bool,
    /// How long a machine may stay InPlaceUpdating.
    pub in_place_update_timeout: Duration,
    pub now: Timestamp,
}

/// The decision.
#[derive(Debug, Clone, PartialEq)]
pub enum HealthAssessment {
    /// The Node is being deleted; its Machine goes with it (MCM's triggerMachineDeletion).
    NodeDeleted,
    /// Nothing to write; look again after `recheck` while a timeout is running.
    Unchanged { recheck: Option<Duration> },
    /// The health timeout ran out: write the Failed `status` if no other machine of the
    /// MachineDeployment is being replaced ([`MAX_REPLACEMENTS`]), else wait.
    Replace { status: Box<MachineStatus> },
    /// Write `status`. `joined`: the node joined after this long (record it, drop the
    /// bootstrap token); `failed_join`: the creation timeout ran out.
    Changed {
        status: Box<MachineStatus>,
        joined: Option<Duration>,
        failed_join: bool,
    },
}

/// MCM replaces at most this many machines of one MachineDeployment at a time
/// (`maxReplacements`): an outage of a zone does not fail a whole pool at once.
pub const MAX_REPLACEMENTS: usize = 1;

/// Machines of a MachineDeployment counted as being replaced (MCM's canMarkMachineFailed):
/// every phase but Running and Unknown, and Terminating twice, since the replacement of a
/// terminating machine may not exist yet. A preserved machine is not being replaced, so
/// it counts only if Terminating (and then once).
pub fn replacements_in_progress<'a>(machines: impl IntoIterator<Item = &'a Machine>) -> usize {
    machines
        .into_iter()
        .map(|machine| {
            let unpreserved = usize::from(expiry_of(machine).is_none());
            match phase_of(machine) {
                phase::RUNNING | phase::UNKNOWN => 0,
                phase::TERMINATING => unpreserved + 1,
                _ => unpreserved,
            }
        })
        .sum()
}

/// MCM's `reconcileMachineHealth` as a decision.
pub fn assess(inputs: &HealthInputs) -> HealthAssessment {
    if inputs
        .node
        .is_some_and(|n| n.metadata.deletion_timestamp.is_some())
    {
        return HealthAssessment::NodeDeleted;
    }
    let mut status = status_of(inputs.machine);
    let (mut changed, joined) = match inputs.node {
        None => (missing_node(inputs, &mut status), None),
        Some(node) => present_node(inputs, node, &mut status),
    };
    if !changed && let Some(node) = inputs.node {
        changed = in_place_result(inputs, node, &mut status);
    }
    if changed {
        return HealthAssessment::Changed {
            status: Box::new(status),
            joined,
            failed_join: false,
        };
    }
    timeout(inputs, status)
}

/// A Running machine whose Node went missing becomes Unknown.
fn missing_node(inputs: &HealthInputs, status: &mut MachineStatus) -> bool {
    let had_conditions = status.conditions.as_ref().is_some_and(|c| !c.is_empty());
    if !had_conditions || phase_of(inputs.machine) != phase::RUNNING {
        return false;
    }
    let name = inputs.machine.metadata.name.as_deref().unwrap_or_default();
    let description = format!(
        "Node object went missing. Machine {name} is unhealthy - changing MachinePhase to Unknown"
    );
    set_unknown(inputs, status, description);
    true
}

/// Conditions copied from the Node; Running when healthy, Unknown when a Running one is not.
fn present_node(
    inputs: &HealthInputs,
    node: &Node,
    status: &mut MachineStatus,
) -> (bool, Option<Duration>) {
    let conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut changed = false;
    if conditions_changed(
        status.conditions.as_deref().unwrap_or_default(),
        &conditions,
    ) {
        status.conditions = Some(conditions.clone());
        changed = true;
    }
    let current = phase_of(inputs.machine);
    // MCM: while updated in place, or after a failed update, health says nothing definite.
    if in_place_unsettled(current) {
        return (changed, None);
    }
    let name = inputs.machine.metadata.name.as_deref().unwrap_or_default();
    if !is_healthy(&conditions, inputs.problem_conditions) {
        if current == phase::RUNNING {
            let description = format!(
                "Machine {name} is unhealthy - changing MachinePhase to Unknown. Node conditions: {}",
                describe_conditions(&conditions)
            );
            set_unknown(inputs, status, description);
            changed = true;
        }
        return (changed, None);
    }
    let held_back = current == phase::PENDING && critical_components_not_ready(node);
    if current == phase::RUNNING || held_back {
        return (changed, None);
    }
    let previous = status.last_operation.clone().unwrap_or_default();
    let first_join = previous.type_.as_deref() == Some(operation::CREATE)
        && previous.state.as_deref() != Some(state::SUCCESSFUL);
    let joined = first_join.then(|| {
        elapsed_until(
            inputs.machine.metadata.creation_timestamp.as_ref(),
            inputs.now,
        )
    });
    let (description, op_type) = match joined {
        Some(after) => (
            format!(
                "Machine {name} successfully joined the cluster in {}",
                format_go_duration(after)
            ),
            operation::CREATE,
        ),
        None => (
            format!("Machine {name} successfully re-joined the cluster"),
            operation::HEALTH_CHECK,
        ),
    };
    set(
        inputs,
        status,
        phase::RUNNING,
        description,
        state::SUCCESSFUL,
        op_type,
    );
    (true, joined)
}

/// An in-place update under way or failed: the phases health leaves alone.
fn in_place_unsettled(current: &str) -> bool {
    current == phase::IN_PLACE_UPDATING || current == phase::IN_PLACE_UPDATE_FAILED
}

/// The Node's update-result label settles an InPlaceUpdating (or failed) machine: success
/// at any time, failure once.
fn in_place_result(inputs: &HealthInputs, node: &Node, status: &mut MachineStatus) -> bool {
    let current = phase_of(inputs.machine);
    if !in_place_unsettled(current) {
        return false;
    }
    let name = inputs.machine.metadata.name.as_deref().unwrap_or_default();
    let (new_phase, description, op_state) = match update_result_of(node) {
        Some(update_result::SUCCESSFUL) => (
            phase::IN_PLACE_UPDATE_SUCCESSFUL,
            format!("Machine {name} successfully updated dependencies"),
            state::SUCCESSFUL,
        ),
        Some(update_result::FAILED) if current != phase::IN_PLACE_UPDATE_FAILED => (
            phase::IN_PLACE_UPDATE_FAILED,
            format!(
                "Machine {name} failed to update dependencies: {}",
                update_failed_reason(node)
            ),
            state::FAILED,
        ),
        _ => return false,
    };
    let op_type = operation::IN_PLACE_UPDATE;
    set(inputs, status, new_phase, description, op_state, op_type);
    true
}

/// The timeout a phase runs against, and since when; none for phases without one.
fn timeout_of<'a>(inputs: &'a HealthInputs, current: &str) -> Option<(Duration, Option<&'a Time>)> {
    let last_update = inputs
        .machine
        .status
        .as_ref()
        .and_then(|s| s.current_status.as_ref())
        .and_then(|c| c.last_update_time.as_ref());
    match current {
        phase::PENDING => Some((
            inputs.creation_timeout,
            inputs.machine.metadata.creation_timestamp.as_ref(),
        )),
        phase::IN_PLACE_UPDATING => Some((inputs.in_place_update_timeout, last_update)),
        phase::UNKNOWN | phase::IN_PLACE_UPDATE_FAILED => {
            Some((inputs.health_timeout, last_update))
        }
        _ => None,
    }
}

/// Pending past the creation timeout, or Unknown or InPlaceUpdateFailed past the health
/// timeout, is Failed; InPlaceUpdating past the in-place update timeout is
/// InPlaceUpdateFailed.
fn timeout(inputs: &HealthInputs, mut status: MachineStatus) -> HealthAssessment {
    let current = phase_of(inputs.machine);
    let Some((limit, since)) = timeout_of(inputs, current) else {
        return HealthAssessment::Unchanged { recheck: None };
    };
    if elapsed_until(since, inputs.now) <= limit {
        return HealthAssessment::Unchanged {
            recheck: Some(TIMEOUT_RECHECK),
        };
    }
    let name = inputs.machine.metadata.name.as_deref().unwrap_or_default();
    let limit_text = format_go_duration(limit);
    if current == phase::PENDING {
        let description =
            format!("Machine {name} failed to join the cluster in {limit_text} minutes.");
        let op_type = status
            .last_operation
            .as_ref()
            .and_then(|o| o.type_.clone())
            .unwrap_or_else(|| operation::CREATE.to_owned());
        set(
            inputs,
            &mut status,
            phase::FAILED,
            description,
            state::FAILED,
            &op_type,
        );
        return changed_to(status, true);
    }
    if current == phase::IN_PLACE_UPDATING {
        let description =
            format!("Machine {name} failed to in-place update in {limit_text} minutes.");
        set(
            inputs,
            &mut status,
            phase::IN_PLACE_UPDATE_FAILED,
            description,
            state::FAILED,
            operation::IN_PLACE_UPDATE,
        );
        return changed_to(status, false);
    }
    if inputs.health_timeout_disabled {
        return HealthAssessment::Unchanged { recheck: None };
    }
    let description = format!(
        "Machine {name} health checks failing since last {limit_text} minutes. Updating machine phase to Failed. Node Conditions: {}",
        describe_conditions(status.conditions.as_deref().unwrap_or_default())
    );
    set(
        inputs,
        &mut status,
        phase::FAILED,
        description,
        state::FAILED,
        operation::HEALTH_CHECK,
    );
    HealthAssessment::Replace {
        status: Box::new(status),
    }
}

fn changed_to(status: MachineStatus, failed_join: bool) -> HealthAssessment {
    HealthAssessment::Changed {
        status: Box::new(status),
        joined: None,
        failed_join,
    }
}

/// Unknown: the health check found the Node unhealthy or missing.
fn set_unknown(inputs: &HealthInputs, status: &mut MachineStatus, description: String) {
    set(
        inputs,
        status,
        phase::UNKNOWN,
        description,
        state::PROCESSING,
        operation::HEALTH_CHECK,
    );
}

fn set(
    inputs: &HealthInputs,
    status: &mut MachineStatus,
    new_phase: &str,
    description: String,
    op_state: &str,
    op_type: &str,
) {
    status.current_status = Some(current_status_at(inputs.now, new_phase, false));
    status.last_operation = Some(last_operation_at(
        inputs.now,
        description,
        op_state,
        op_type,
    ));
}

/// A condition added, removed or changed in status (and the InPlaceUpdate condition in
/// reason too: its reason is the update's step, which MCM's MachineDeployment controller
/// reads from the Machine). Heartbeat times alone do not count: copying every kubelet
/// heartbeat would rewrite each Machine every few minutes.
pub fn conditions_changed(old: &[NodeCondition], new: &[NodeCondition]) -> bool {
    fn find<'a>(list: &'a [NodeCondition], type_: &str) -> Option<&'a NodeCondition> {
        list.iter().find(|c| c.type_ == type_)
    }
    let differs = |before: &NodeCondition, now: &NodeCondition| {
        before.status != now.status
            || (now.type_ == IN_PLACE_UPDATE_CONDITION && before.reason != now.reason)
    };
    new.iter()
        .any(|c| find(old, &c.type_).is_none_or(|before| differs(before, c)))
        || old.iter().any(|c| find(new, &c.type_).is_none())
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
    use crate::names::{UPDATE_FAILED_REASON_ANNOTATION, UPDATE_RESULT_LABEL};
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus, Taint};
    use k8s_openapi::jiff::SignedDuration;

    fn condition(type_: &str, status: &str) -> NodeCondition {
        NodeCondition {
            type_: type_.into(),
            status: status.into(),
            ..Default::default()
        }
    }

    /// A fixed clock: every test judges at the same instant.
    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn ago(minutes: i64) -> Time {
        Time(now() - SignedDuration::from_mins(minutes))
    }

    fn machine(current: &str, op_type: &str, op_state: &str, created_minutes_ago: i64) -> Machine {
        let mut machine = Machine::new("m1", Default::default());
        machine.metadata.creation_timestamp = Some(ago(created_minutes_ago));
        machine.status = Some(MachineStatus {
            current_status: Some(current_status_at(ago(1).0, current, false)),
            last_operation: Some(last_operation_at(ago(1).0, "before", op_state, op_type)),
            ..Default::default()
        });
        machine
    }

    fn node(conditions: &[(&str, &str)]) -> Node {
        Node {
            status: Some(NodeStatus {
                conditions: Some(conditions.iter().map(|(t, s)| condition(t, s)).collect()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn inputs<'a>(
        machine: &'a Machine,
        node: Option<&'a Node>,
        problems: &'a [String],
    ) -> HealthInputs<'a> {
        HealthInputs {
            machine,
            node,
            problem_conditions: problems,
            creation_timeout: Duration::from_secs(20 * 60),
            health_timeout: Duration::from_secs(10 * 60),
            health_timeout_disabled: false,
            in_place_update_timeout: Duration::from_secs(20 * 60),
            now: now(),
        }
    }

    fn changed(assessment: HealthAssessment) -> (MachineStatus, Option<Duration>, bool) {
        match assessment {
            HealthAssessment::Changed {
                status,
                joined,
                failed_join,
            } => (*status, joined, failed_join),
            other => panic!("expected a change, got {other:?}"),
        }
    }

    fn phase(status: &MachineStatus) -> &str {
        status
            .current_status
            .as_ref()
            .and_then(|c| c.phase.as_deref())
            .unwrap()
    }

    #[test]
    fn a_pending_machine_with_a_ready_node_joins_with_its_join_time() {
        let m = machine(phase::PENDING, operation::CREATE, state::PROCESSING, 7);
        let n = node(&[("Ready", "True")]);
        let (status, joined, failed_join) = changed(assess(&inputs(&m, Some(&n), &[])));
        assert_eq!(phase(&status), phase::RUNNING);
        assert_eq!(joined, Some(Duration::from_secs(7 * 60)));
        assert!(!failed_join);
        let op = status.last_operation.unwrap();
        assert_eq!(
            op.description.unwrap(),
            "Machine m1 successfully joined the cluster in 7m0s"
        );
        assert_eq!(op.last_update_time, Some(Time(now())));
    }

    #[test]
    fn join_and_timeout_descriptions_print_durations_as_go() {
        let mut m = machine(phase::PENDING, operation::CREATE, state::PROCESSING, 0);
        m.metadata.creation_timestamp = Some(Time(now() - SignedDuration::from_millis(90_500)));
        let n = node(&[("Ready", "True")]);
        let (status, joined, _) = changed(assess(&inputs(&m, Some(&n), &[])));
        assert_eq!(joined, Some(Duration::from_millis(90_500)));
        assert_eq!(
            status.last_operation.unwrap().description.unwrap(),
            "Machine m1 successfully joined the cluster in 1m30.5s"
        );
        let late = machine(phase::PENDING, operation::CREATE, state::PROCESSING, 30);
        let (status, ..) = changed(assess(&inputs(&late, None, &[])));
        assert_eq!(
            status.last_operation.unwrap().description.unwrap(),
            "Machine m1 failed to join the cluster in 20m0s minutes."
        );
    }

    #[test]
    fn critical_components_taint_holds_a_pending_machine_back() {
        let m = machine(phase::PENDING, operation::CREATE, state::PROCESSING, 7);
        let mut n = node(&[("Ready", "True")]);
        n.spec = Some(NodeSpec {
            taints: Some(vec![Taint {
                key: CRITICAL_COMPONENTS_NOT_READY_TAINT.into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        // The conditions are new to the Machine, so they are written, but it stays Pending.
        let (status, joined, _) = changed(assess(&inputs(&m, Some(&n), &[])));
        assert_eq!(phase(&status), phase::PENDING);
        assert_eq!(joined, None);
    }

    #[test]
    fn a_running_machine_turns_unknown_on_a_problem_condition_or_a_lost_node() {
        let problems = vec!["DiskPressure".to_owned()];
        let mut m = machine(phase::RUNNING, operation::CREATE, state::SUCCESSFUL, 60);
        let n = node(&[("Ready", "True"), ("DiskPressure", "True")]);
        let (status, ..) = changed(assess(&inputs(&m, Some(&n), &problems)));
        assert_eq!(phase(&status), phase::UNKNOWN);
        assert!(
            status
                .last_operation
                .unwrap()
                .description
                .unwrap()
                .contains("DiskPressure=True")
        );

        m.status.as_mut().unwrap().conditions = Some(vec![condition("Ready", "True")]);
        let (status, ..) = changed(assess(&inputs(&m, None, &problems)));
        assert_eq!(phase(&status), phase::UNKNOWN);
        assert!(
            status
                .last_operation
                .unwrap()
                .description
                .unwrap()
                .starts_with("Node object went missing")
        );
    }

    #[test]
    fn timeouts_fail_pending_and_unknown_machines_only_once_passed() {
        let m = machine(phase::PENDING, operation::CREATE, state::PROCESSING, 19);
        assert_eq!(
            assess(&inputs(&m, None, &[])),
            HealthAssessment::Unchanged {
                recheck: Some(TIMEOUT_RECHECK)
            }
        );
        let m = machine(phase::PENDING, operation::CREATE, state::PROCESSING, 21);
        let (status, _, failed_join) = changed(assess(&inputs(&m, None, &[])));
        assert_eq!(phase(&status), phase::FAILED);
        assert!(failed_join);

        let mut m = machine(
            phase::UNKNOWN,
            operation::HEALTH_CHECK,
            state::PROCESSING,
            600,
        );
        m.status.as_mut().unwrap().current_status =
            Some(current_status_at(ago(11).0, phase::UNKNOWN, false));
        let HealthAssessment::Replace { status } = assess(&inputs(&m, None, &[])) else {
            panic!("an Unknown machine past its health timeout is to be replaced");
        };
        assert_eq!(phase(&status), phase::FAILED);
        let mut disabled = inputs(&m, None, &[]);
        disabled.health_timeout_disabled = true;
        assert_eq!(
            assess(&disabled),
            HealthAssessment::Unchanged { recheck: None }
        );
    }

    #[test]
    fn replacements_count_every_phase_but_running_and_unknown_and_terminating_twice() {
        let with_phase = |p: &str| machine(p, operation::CREATE, state::PROCESSING, 60);
        let pool = [
            with_phase(phase::RUNNING),
            with_phase(phase::UNKNOWN),
            with_phase(phase::RUNNING),
        ];
        assert_eq!(replacements_in_progress(&pool), 0);
        assert_eq!(replacements_in_progress(&[with_phase(phase::PENDING)]), 1);
        assert_eq!(replacements_in_progress(&[with_phase(phase::FAILED)]), 1);
        assert_eq!(
            replacements_in_progress(&[with_phase(phase::TERMINATING)]),
            2
        );
        assert_eq!(
            replacements_in_progress(&[Machine::new("fresh", Default::default())]),
            1
        );
        // A preserved Failed machine is kept, not replaced.
        let mut preserved = with_phase(phase::FAILED);
        if let Some(current) = preserved
            .status
            .as_mut()
            .and_then(|s| s.current_status.as_mut())
        {
            current.preserve_expiry_time = Some(crate::machine::status::now());
        }
        assert_eq!(replacements_in_progress(&[preserved]), 0);
    }

    #[test]
    fn a_node_being_deleted_takes_the_machine() {
        let m = machine(phase::RUNNING, operation::CREATE, state::SUCCESSFUL, 60);
        let mut n = node(&[("Ready", "True")]);
        n.metadata.deletion_timestamp = Some(ago(0));
        assert_eq!(
            assess(&inputs(&m, Some(&n), &[])),
            HealthAssessment::NodeDeleted
        );
    }

    /// A machine in `current` whose status already has the node's conditions, and the node
    /// (Ready `ready`) with `labels`.
    fn in_place(current: &str, ready: &str, labels: &[(&str, &str)]) -> (Machine, Node) {
        let mut n = node(&[("Ready", ready)]);
        n.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let mut m = machine(current, operation::IN_PLACE_UPDATE, state::PROCESSING, 600);
        m.status.as_mut().unwrap().conditions = n.status.as_ref().unwrap().conditions.clone();
        (m, n)
    }

    fn description(status: &MachineStatus) -> String {
        status
            .last_operation
            .as_ref()
            .and_then(|o| o.description.clone())
            .unwrap()
    }

    #[test]
    fn health_leaves_an_updating_machine_alone_until_its_in_place_timeout() {
        // Unhealthy while updating: not Unknown, only the in-place timeout runs.
        let (mut m, n) = in_place(phase::IN_PLACE_UPDATING, "False", &[]);
        assert_eq!(
            assess(&inputs(&m, Some(&n), &[])),
            HealthAssessment::Unchanged {
                recheck: Some(TIMEOUT_RECHECK)
            }
        );
        m.status.as_mut().unwrap().current_status = Some(current_status_at(
            ago(21).0,
            phase::IN_PLACE_UPDATING,
            false,
        ));
        let (status, _, failed_join) = changed(assess(&inputs(&m, Some(&n), &[])));
        assert!(!failed_join);
        assert_eq!(phase(&status), "InPlaceUpdateFailed");
        assert_eq!(
            description(&status),
            "Machine m1 failed to in-place update in 20m0s minutes."
        );
        let op = status.last_operation.unwrap();
        assert_eq!(op.state.as_deref(), Some("Failed"));
        assert_eq!(op.type_.as_deref(), Some("InPlaceUpdate"));
        // Healthy while updating is not Running yet either.
        let (m, n) = in_place(phase::IN_PLACE_UPDATING, "True", &[]);
        assert!(matches!(
            assess(&inputs(&m, Some(&n), &[])),
            HealthAssessment::Unchanged { .. }
        ));
    }

    #[test]
    fn the_update_result_label_settles_the_machine() {
        let (m, n) = in_place(
            phase::IN_PLACE_UPDATING,
            "True",
            &[(UPDATE_RESULT_LABEL, "successful")],
        );
        let (status, ..) = changed(assess(&inputs(&m, Some(&n), &[])));
        assert_eq!(phase(&status), "InPlaceUpdateSuccessful");
        assert_eq!(
            description(&status),
            "Machine m1 successfully updated dependencies"
        );
        assert_eq!(
            status.last_operation.unwrap().state.as_deref(),
            Some("Successful")
        );

        let (m, mut n) = in_place(
            phase::IN_PLACE_UPDATING,
            "True",
            &[(UPDATE_RESULT_LABEL, "failed")],
        );
        n.metadata.annotations = Some(
            [(
                UPDATE_FAILED_REASON_ANNOTATION.to_owned(),
                "os image rejected".to_owned(),
            )]
            .into(),
        );
        let (status, ..) = changed(assess(&inputs(&m, Some(&n), &[])));
        assert_eq!(phase(&status), "InPlaceUpdateFailed");
        assert_eq!(
            description(&status),
            "Machine m1 failed to update dependencies: os image rejected"
        );

        // A late success still counts after a failure.
        let (m, n) = in_place(
            phase::IN_PLACE_UPDATE_FAILED,
            "True",
            &[(UPDATE_RESULT_LABEL, "successful")],
        );
        let (status, ..) = changed(assess(&inputs(&m, Some(&n), &[])));
        assert_eq!(phase(&status), "InPlaceUpdateSuccessful");
    }

    #[test]
    fn a_failed_update_runs_against_the_health_timeout_and_is_replaced() {
        let (mut m, n) = in_place(
            phase::IN_PLACE_UPDATE_FAILED,
            "True",
            &[(UPDATE_RESULT_LABEL, "failed")],
        );
        assert_eq!(
            assess(&inputs(&m, Some(&n), &[])),
            HealthAssessment::Unchanged {
                recheck: Some(TIMEOUT_RECHECK)
            }
        );
        m.status.as_mut().unwrap().current_status = Some(current_status_at(
            ago(11).0,
            phase::IN_PLACE_UPDATE_FAILED,
            false,
        ));
        let HealthAssessment::Replace { status } = assess(&inputs(&m, Some(&n), &[])) else {
            panic!("a failed update past the health timeout is replaced");
        };
        assert_eq!(phase(&status), phase::FAILED);
        let mut disabled = inputs(&m, Some(&n), &[]);
        disabled.health_timeout_disabled = true;
        assert_eq!(
            assess(&disabled),
            HealthAssessment::Unchanged { recheck: None }
        );
    }

    #[test]
    fn a_successfully_updated_machine_rejoins_as_running() {
        let (m, n) = in_place(phase::IN_PLACE_UPDATE_SUCCESSFUL, "True", &[]);
        let (status, joined, _) = changed(assess(&inputs(&m, Some(&n), &[])));
        assert_eq!(phase(&status), phase::RUNNING);
        assert_eq!(joined, None);
        assert_eq!(
            description(&status),
            "Machine m1 successfully re-joined the cluster"
        );
    }

    #[test]
    fn the_in_place_condition_changes_with_its_reason() {
        let with_reason = |type_: &str, reason: &str| NodeCondition {
            reason: Some(reason.into()),
            ..condition(type_, "True")
        };
        assert!(conditions_changed(
            &[with_reason("InPlaceUpdate", "CandidateForUpdate")],
            &[with_reason("InPlaceUpdate", "SelectedForUpdate")]
        ));
        assert!(!conditions_changed(
            &[with_reason("Ready", "KubeletReady")],
            &[with_reason("Ready", "KubeletHasSufficientMemory")]
        ));
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
        beat.last_heartbeat_time = Some(Time(now()));
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
}
