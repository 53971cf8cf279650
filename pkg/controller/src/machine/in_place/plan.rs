//! The in-place update decisions, without I/O: which InPlaceUpdate condition the Node's
//! labels call for (MCM's updateNodeConditionBasedOnLabel), what the condition's reason
//! asks of the machine controller (MCM's inPlaceUpdate), whether the drain is forced and
//! what a drain pass means (MCM's drainNodeForInPlace), and the statuses written.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use mcm_provider_kubevirt::mcm::{CurrentStatus, LastOperation, Machine};

use crate::error::retry;
use crate::machine::deletion::drain::{DrainProgress, PDB_RETRY, node_unhealthy_reason};
use crate::machine::settings::elapsed_until;
use crate::machine::status::{current_status_at, last_operation_at};
use crate::names::{
    CANDIDATE_FOR_UPDATE_LABEL, FORCE_DRAIN_LABEL, IN_PLACE_UPDATE_CONDITION,
    SELECTED_FOR_UPDATE_LABEL, UPDATE_FAILED_REASON_ANNOTATION, UPDATE_RESULT_LABEL,
    in_place_reason as reason, operation, phase, state, step, update_result,
};

/// The Node's InPlaceUpdate condition, if it has one.
pub fn in_place_condition(node: &Node) -> Option<&NodeCondition> {
    crate::context::node_condition(node, IN_PLACE_UPDATE_CONDITION)
}

fn reason_of(condition: Option<&NodeCondition>) -> &str {
    condition
        .and_then(|c| c.reason.as_deref())
        .unwrap_or_default()
}

fn label<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

/// The result the Node's agent reported ([`update_result`] values), if any yet.
pub fn update_result_of(node: &Node) -> Option<&str> {
    label(node, UPDATE_RESULT_LABEL)
}

/// Why the agent says the update failed; empty when it does not say.
pub fn update_failed_reason(node: &Node) -> &str {
    node.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(UPDATE_FAILED_REASON_ANNOTATION))
        .map(String::as_str)
        .unwrap_or_default()
}

/// The InPlaceUpdate condition with `reason` as of `now` (always status True, as MCM sets it).
pub fn condition(reason: &str, message: impl Into<String>, now: Timestamp) -> NodeCondition {
    NodeCondition {
        type_: IN_PLACE_UPDATE_CONDITION.to_owned(),
        status: "True".to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.into()),
        last_transition_time: Some(Time(now)),
        last_heartbeat_time: None,
    }
}

/// The condition the Node's labels call for, when it differs from the one it has. Only a
/// candidate Node is looked at. A missing condition, or a success of an earlier update
/// whose result label is gone, starts over as candidate; the selected label moves a
/// candidate on; the result label ends the update. A Node selected but not drained yet
/// waits for the drain, whatever its result label says.
pub fn condition_for_labels(node: &Node, now: Timestamp) -> Option<NodeCondition> {
    label(node, CANDIDATE_FOR_UPDATE_LABEL)?;
    let current = in_place_condition(node);
    let current_reason = reason_of(current);
    let result = update_result_of(node);
    if current.is_none() || (current_reason == reason::UPDATE_SUCCESSFUL && result.is_none()) {
        return Some(condition(
            reason::CANDIDATE_FOR_UPDATE,
            "Node is a candidate for in-place update",
            now,
        ));
    }
    if label(node, SELECTED_FOR_UPDATE_LABEL).is_some() {
        match current_reason {
            reason::CANDIDATE_FOR_UPDATE => {
                return Some(condition(
                    reason::SELECTED_FOR_UPDATE,
                    "Node is selected for in-place update",
                    now,
                ));
            }
            reason::SELECTED_FOR_UPDATE => return None,
            _ => {}
        }
    }
    match result {
        Some(update_result::SUCCESSFUL) if current_reason != reason::UPDATE_SUCCESSFUL => {
            Some(condition(
                reason::UPDATE_SUCCESSFUL,
                "Node in-place update successful",
                now,
            ))
        }
        Some(update_result::FAILED) if current_reason != reason::UPDATE_FAILED => Some(condition(
            reason::UPDATE_FAILED,
            format!(
                "Node in-place update failed: {}",
                update_failed_reason(node)
            ),
            now,
        )),
        _ => None,
    }
}

/// What the machine controller does for the condition's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InPlaceStep {
    /// No update is under way, or it is not the controller's turn.
    Nothing,
    /// Selected: drain the Node, then mark the machine InPlaceUpdating.
    Drain,
    /// Drained: tell the Node's agent it may update (ReadyForUpdate).
    MarkReady,
    /// Ready: the agent updates the Node; look again later.
    AwaitUpdate,
}

pub fn step_for(condition: Option<&NodeCondition>) -> InPlaceStep {
    match reason_of(condition) {
        reason::SELECTED_FOR_UPDATE => InPlaceStep::Drain,
        reason::DRAIN_SUCCESSFUL => InPlaceStep::MarkReady,
        reason::READY_FOR_UPDATE => InPlaceStep::AwaitUpdate,
        _ => InPlaceStep::Nothing,
    }
}

/// The requeue while the Node's agent applies the update (MCM's medium retry).
pub fn awaiting_update(node_name: &str) -> (Duration, String) {
    (
        retry::MEDIUM,
        format!("node {node_name} is ready for in-place update"),
    )
}

/// Why the in-place drain is forced, if it is: the machine's `force-drain=True` label, the
/// drain timeout passed since the Node was selected, or a Node unhealthy for 5 minutes.
pub fn force_reason(
    machine: &Machine,
    selected: Option<&NodeCondition>,
    drain_timeout: Duration,
    now: Timestamp,
) -> Option<String> {
    let labels = machine.metadata.labels.as_ref();
    if labels
        .and_then(|l| l.get(FORCE_DRAIN_LABEL))
        .map(String::as_str)
        == Some("True")
    {
        return Some(format!("label {FORCE_DRAIN_LABEL} is set"));
    }
    let since = selected
        .filter(|c| c.reason.as_deref() == Some(reason::SELECTED_FOR_UPDATE))
        .and_then(|c| c.last_transition_time.as_ref());
    if since.is_some() && elapsed_until(since, now) > drain_timeout {
        return Some(format!(
            "drain timeout of {}s passed since the node was selected for update",
            drain_timeout.as_secs()
        ));
    }
    node_unhealthy_reason(machine, now)
}

/// What one in-place drain pass comes to.
#[derive(Debug, Clone, PartialEq)]
pub enum DrainOutcome {
    /// The Node is empty (or a forced pass went through): the update may start.
    Drained,
    /// Pods or volumes remain: look again after this long.
    InProgress { after: Duration, reason: String },
    /// The drain failed; recorded in lastOperation and retried (forced or not, as MCM).
    Failed(String),
}

pub fn after_drain(pass: Result<DrainProgress, String>, forced: bool) -> DrainOutcome {
    match pass {
        Ok(progress) if forced || progress.done() => DrainOutcome::Drained,
        Ok(progress) => DrainOutcome::InProgress {
            after: if progress.blocked_by_pdb > 0 {
                PDB_RETRY
            } else {
                retry::SHORT
            },
            reason: format!(
                "in-place drain in progress - {} pods remaining ({} blocked by PodDisruptionBudget), {} volumes attached",
                progress.remaining, progress.blocked_by_pdb, progress.attached_volumes
            ),
        },
        Err(error) => DrainOutcome::Failed(error),
    }
}

/// The lastOperation of a failed drain; the currentStatus stays as it is.
pub fn drain_failed(error: &str, now: Timestamp) -> LastOperation {
    last_operation_at(
        now,
        format!(
            "Drain failed due to - {error}. Will retry in next sync. {}",
            step::INITIATE_DRAIN
        ),
        state::PROCESSING,
        operation::DRAIN_NODE,
    )
}

/// The status once drained: InPlaceUpdating, whose lastUpdateTime starts the in-place
/// update timeout.
pub fn updating(machine_name: &str, now: Timestamp) -> (LastOperation, CurrentStatus) {
    (
        last_operation_at(
            now,
            format!("Machine {machine_name} is undergoing an in-place update"),
            state::PROCESSING,
            operation::IN_PLACE_UPDATE,
        ),
        current_status_at(now, phase::IN_PLACE_UPDATING, false),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeStatus;
    use k8s_openapi::jiff::SignedDuration;
    use std::collections::BTreeMap;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn node(labels: &[(&str, &str)], current: Option<&str>) -> Node {
        let mut node = Node::default();
        node.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        );
        let earlier = now() - SignedDuration::from_mins(5);
        node.status = Some(NodeStatus {
            conditions: Some(
                current
                    .map(|r| condition(r, "before", earlier))
                    .into_iter()
                    .collect(),
            ),
            ..Default::default()
        });
        node
    }

    fn new_reason(node: &Node) -> Option<String> {
        condition_for_labels(node, now()).and_then(|c| c.reason)
    }

    const CANDIDATE: (&str, &str) = (CANDIDATE_FOR_UPDATE_LABEL, "true");
    const SELECTED: (&str, &str) = (SELECTED_FOR_UPDATE_LABEL, "true");
    const SUCCEEDED: (&str, &str) = (UPDATE_RESULT_LABEL, "successful");
    const FAILED: (&str, &str) = (UPDATE_RESULT_LABEL, "failed");

    #[test]
    fn only_candidates_get_the_condition_and_they_start_as_candidates() {
        assert_eq!(new_reason(&node(&[SELECTED, SUCCEEDED], None)), None);
        let written = condition_for_labels(&node(&[CANDIDATE], None), now()).unwrap();
        assert_eq!(written.type_, "InPlaceUpdate");
        assert_eq!(written.status, "True");
        assert_eq!(written.reason.as_deref(), Some("CandidateForUpdate"));
        assert_eq!(
            written.message.as_deref(),
            Some("Node is a candidate for in-place update")
        );
        assert_eq!(written.last_transition_time, Some(Time(now())));
        // Already a candidate: nothing to write.
        assert_eq!(
            new_reason(&node(&[CANDIDATE], Some("CandidateForUpdate"))),
            None
        );
    }

    #[test]
    fn selection_moves_a_candidate_on_and_then_waits_for_the_drain() {
        assert_eq!(
            new_reason(&node(&[CANDIDATE, SELECTED], Some("CandidateForUpdate"))).as_deref(),
            Some("SelectedForUpdate")
        );
        // Selected and not drained yet: even a result label does not end it.
        assert_eq!(
            new_reason(&node(
                &[CANDIDATE, SELECTED, SUCCEEDED],
                Some("SelectedForUpdate")
            )),
            None
        );
    }

    #[test]
    fn the_result_label_ends_the_update_once() {
        let succeeded = node(&[CANDIDATE, SELECTED, SUCCEEDED], Some("ReadyForUpdate"));
        let written = condition_for_labels(&succeeded, now()).unwrap();
        assert_eq!(written.reason.as_deref(), Some("UpdateSuccessful"));
        assert_eq!(
            written.message.as_deref(),
            Some("Node in-place update successful")
        );
        assert_eq!(
            new_reason(&node(
                &[CANDIDATE, SELECTED, SUCCEEDED],
                Some("UpdateSuccessful")
            )),
            None
        );

        let mut failed = node(&[CANDIDATE, SELECTED, FAILED], Some("ReadyForUpdate"));
        failed.metadata.annotations = Some(
            [(
                UPDATE_FAILED_REASON_ANNOTATION.to_owned(),
                "kubelet did not restart".to_owned(),
            )]
            .into(),
        );
        let written = condition_for_labels(&failed, now()).unwrap();
        assert_eq!(written.reason.as_deref(), Some("UpdateFailed"));
        assert_eq!(
            written.message.as_deref(),
            Some("Node in-place update failed: kubelet did not restart")
        );
        assert_eq!(
            new_reason(&node(&[CANDIDATE, FAILED], Some("UpdateFailed"))),
            None
        );
    }

    #[test]
    fn a_new_update_after_a_successful_one_starts_as_candidate() {
        // The result label of the last update was removed: a new round begins.
        assert_eq!(
            new_reason(&node(&[CANDIDATE], Some("UpdateSuccessful"))).as_deref(),
            Some("CandidateForUpdate")
        );
        // A failed one is not restarted by the labels alone.
        assert_eq!(new_reason(&node(&[CANDIDATE], Some("UpdateFailed"))), None);
    }

    #[test]
    fn the_reason_says_what_the_controller_does() {
        let with = |r: &str| condition(r, "", now());
        assert_eq!(step_for(None), InPlaceStep::Nothing);
        assert_eq!(
            step_for(Some(&with("CandidateForUpdate"))),
            InPlaceStep::Nothing
        );
        assert_eq!(
            step_for(Some(&with("SelectedForUpdate"))),
            InPlaceStep::Drain
        );
        assert_eq!(
            step_for(Some(&with("DrainSuccessful"))),
            InPlaceStep::MarkReady
        );
        assert_eq!(
            step_for(Some(&with("ReadyForUpdate"))),
            InPlaceStep::AwaitUpdate
        );
        assert_eq!(
            step_for(Some(&with("UpdateSuccessful"))),
            InPlaceStep::Nothing
        );
    }

    #[test]
    fn the_drain_is_forced_by_label_timeout_since_selection_or_an_unhealthy_node() {
        let hour = Duration::from_secs(3600);
        let mut machine = Machine::new("m", Default::default());
        let selected = |minutes: i64| {
            condition(
                "SelectedForUpdate",
                "",
                now() - SignedDuration::from_mins(minutes),
            )
        };
        assert_eq!(
            force_reason(&machine, Some(&selected(59)), hour, now()),
            None
        );
        assert!(
            force_reason(&machine, Some(&selected(61)), hour, now())
                .unwrap()
                .contains("selected for update")
        );
        // The deletion label is not the in-place one, and MCM compares the value exactly.
        machine.metadata.labels = Some([("force-deletion".to_owned(), "True".to_owned())].into());
        assert_eq!(force_reason(&machine, None, hour, now()), None);
        machine.metadata.labels = Some([("force-drain".to_owned(), "true".to_owned())].into());
        assert_eq!(force_reason(&machine, None, hour, now()), None);
        machine.metadata.labels = Some([("force-drain".to_owned(), "True".to_owned())].into());
        assert!(force_reason(&machine, None, hour, now()).is_some());
        machine.metadata.labels = None;
        machine.status = Some(
            serde_json::from_value(serde_json::json!({"conditions": [
                {"type": "Ready", "status": "False",
                 "lastTransitionTime": Time(now() - SignedDuration::from_mins(6))}]}))
            .unwrap(),
        );
        assert!(
            force_reason(&machine, None, hour, now())
                .unwrap()
                .contains("Ready")
        );
    }

    #[test]
    fn a_pass_drains_waits_or_fails_even_when_forced() {
        let remaining = DrainProgress {
            remaining: 2,
            blocked_by_pdb: 1,
            attached_volumes: 0,
        };
        assert_eq!(
            after_drain(Ok(DrainProgress::default()), false),
            DrainOutcome::Drained
        );
        assert_eq!(
            after_drain(Ok(DrainProgress::default()), true),
            DrainOutcome::Drained
        );
        let DrainOutcome::InProgress { after, .. } = after_drain(Ok(remaining), false) else {
            panic!("pods remain");
        };
        assert_eq!(after, PDB_RETRY);
        assert_eq!(
            after_drain(Err("boom".into()), true),
            DrainOutcome::Failed("boom".into())
        );
        let failed = drain_failed("boom", now());
        assert_eq!(
            failed.description.as_deref(),
            Some("Drain failed due to - boom. Will retry in next sync. Initiate node drain")
        );
        assert_eq!(failed.type_.as_deref(), Some("DrainNode"));
        assert_eq!(failed.state.as_deref(), Some("Processing"));
    }
}
