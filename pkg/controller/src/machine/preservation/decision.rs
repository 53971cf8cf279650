//! MCM v0.62's preservation as a decision (`manageMachinePreservation`): from the preserve
//! annotations on the Machine and its Node, the value last taken from the Node, the
//! machine's phase and `preserveExpiryTime`, whether to preserve, to stop preserving, and
//! which annotations to move onto the Machine. Plain values in, no client.

use k8s_openapi::api::core::v1::NodeCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use std::time::Duration;

use mcm_provider_kubevirt::mcm::Machine;

use crate::machine::deletion::drain::node_unhealthy_reason;
use crate::machine::settings::elapsed_until;
use crate::names::{FORCE_DRAIN_LABEL, PRESERVED_CONDITION, phase};

/// Condition reasons and messages, as MCM writes them (other tools match on them).
pub const PRESERVED_BY_MCM: &str = "Preserved by MCM.";
pub const PRESERVED_BY_USER: &str = "Preserved by user.";
pub const PRESERVATION_STOPPED: &str = "Preservation stopped.";
pub const DRAIN_SUCCESSFUL: &str = "Preserved node drained successfully.";
pub const DRAIN_UNSUCCESSFUL: &str = "Preserved node could not be drained.";
const PRESERVED_UNTIL: &str = "Machine preserved until";

/// A valid value of the preserve annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreserveValue {
    /// Preserve at once, whatever the phase.
    Now,
    /// Preserve once the machine is Failed.
    WhenFailed,
    /// Set by MCM's machine-set controller: preserved while Failed.
    AutoPreserved,
    /// Never preserve; stops a running preservation.
    False,
}

impl PreserveValue {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "now" => Some(PreserveValue::Now),
            "when-failed" => Some(PreserveValue::WhenFailed),
            "auto-preserved" => Some(PreserveValue::AutoPreserved),
            "false" => Some(PreserveValue::False),
            _ => None,
        }
    }
}

/// What the Node lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeAnnotation<'a> {
    /// The machine names no Node.
    NoNode,
    /// It names one that does not exist.
    NodeNotFound,
    /// The Node's preserve annotation, if it has one.
    Found(Option<&'a str>),
}

/// The facts the decision needs.
#[derive(Debug, Clone, Copy)]
pub struct PreserveInputs<'a> {
    /// The Machine's preserve annotation, if it has one (valid or not).
    pub machine_value: Option<&'a str>,
    /// The Machine's last-applied-node-preserve-value annotation ("" when absent).
    pub last_applied_node_value: &'a str,
    pub node: NodeAnnotation<'a>,
    pub phase: &'a str,
    pub expiry: Option<Timestamp>,
    pub now: Timestamp,
}

/// The preservation step to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreservationAction {
    Preserve(PreserveValue),
    /// Stop preserving (a no-op when not preserved); with `remove_annotations` the preserve
    /// annotations go too, so an expired or recovered machine is not preserved again.
    Stop {
        remove_annotations: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreservationDecision {
    /// No preservation state anywhere: the machine is none of preservation's business.
    NotBound,
    /// The Node's annotation has a value MCM does not know: nothing is done until it is fixed.
    InvalidNodeValue(String),
    Act {
        action: PreservationAction,
        /// A preserved machine back in Running gets its Node untainted.
        untaint_when_running: bool,
        /// The Node's value to record on the Machine (its own annotation then removed),
        /// when the Node's annotation is in control and changed.
        record_node_value: Option<String>,
    },
}

fn is_expired(inputs: &PreserveInputs) -> bool {
    inputs.expiry.is_some_and(|expiry| expiry <= inputs.now)
}

/// The value in force: the Machine's, unless the Node's annotation is or was in control
/// (then the Node's, even when removed, which stops the preservation).
fn effective_value<'a>(inputs: &PreserveInputs<'a>, machine_value: &'a str) -> &'a str {
    match inputs.node {
        NodeAnnotation::NodeNotFound => machine_value,
        NodeAnnotation::NoNode | NodeAnnotation::Found(None) | NodeAnnotation::Found(Some(""))
            if inputs.last_applied_node_value.is_empty() =>
        {
            machine_value
        }
        NodeAnnotation::Found(value) => value.unwrap_or_default(),
        NodeAnnotation::NoNode => "",
    }
}

fn action_for(value: Option<PreserveValue>, inputs: &PreserveInputs) -> PreservationAction {
    let failed = inputs.phase == phase::FAILED;
    let expired = is_expired(inputs);
    let stop = |remove_annotations| PreservationAction::Stop { remove_annotations };
    match value {
        None | Some(PreserveValue::False) => stop(false),
        Some(PreserveValue::WhenFailed) if expired => stop(true),
        Some(PreserveValue::WhenFailed) if !failed => stop(false),
        Some(PreserveValue::Now) if expired => stop(true),
        Some(PreserveValue::AutoPreserved) if !failed || expired => stop(true),
        Some(value) => PreservationAction::Preserve(value),
    }
}

pub fn decide(inputs: &PreserveInputs) -> PreservationDecision {
    // An invalid value on the Machine counts as none (MCM logs and goes on).
    let machine_value = inputs
        .machine_value
        .filter(|value| PreserveValue::parse(value).is_some());
    let node_value = match inputs.node {
        NodeAnnotation::Found(value) => value,
        _ => None,
    };
    if let Some(value) = node_value.filter(|value| PreserveValue::parse(value).is_none()) {
        return PreservationDecision::InvalidNodeValue(value.to_owned());
    }
    let bound = inputs.expiry.is_some()
        || node_value.is_some()
        || machine_value.is_some()
        || !inputs.last_applied_node_value.is_empty();
    if !bound {
        return PreservationDecision::NotBound;
    }
    let effective = effective_value(inputs, machine_value.unwrap_or_default());
    let action = action_for(PreserveValue::parse(effective), inputs);
    let removed = matches!(
        action,
        PreservationAction::Stop {
            remove_annotations: true
        }
    );
    let node_in_control = node_value.is_some() || !inputs.last_applied_node_value.is_empty();
    let node_changed = node_value.unwrap_or_default() != inputs.last_applied_node_value;
    let record = !removed && node_in_control && (node_changed || machine_value.is_some());
    PreservationDecision::Act {
        untaint_when_running: matches!(action, PreservationAction::Preserve(_))
            && inputs.phase == phase::RUNNING,
        action,
        record_node_value: record.then(|| node_value.unwrap_or_default().to_owned()),
    }
}

/// A Failed machine's Node is drained until the Preserved condition says it was.
pub fn drain_required(existing: Option<&NodeCondition>, machine_phase: &str) -> bool {
    machine_phase == phase::FAILED
        && !existing.is_some_and(|c| {
            c.message
                .as_deref()
                .is_some_and(|m| m.contains(DRAIN_SUCCESSFUL))
        })
}

/// Preservation is complete: the condition is True and no drain is owed.
pub fn already_preserved(existing: Option<&NodeCondition>, machine_phase: &str) -> bool {
    existing.is_some_and(|c| c.status == "True") && !drain_required(existing, machine_phase)
}

/// Why the drain of a preserved machine's Node is forced, if it is (MCM's
/// drainPreservedNode): the `force-drain=True` label, the drain timeout counted from the
/// status's last update (MCM's stand-in for the time of failure), or a node unhealthy
/// for over 5 minutes.
pub fn force_reason(machine: &Machine, timeout: Duration, now: Timestamp) -> Option<String> {
    let labels = machine.metadata.labels.as_ref();
    if labels
        .and_then(|l| l.get(FORCE_DRAIN_LABEL))
        .is_some_and(|v| v == "True")
    {
        return Some(format!("label {FORCE_DRAIN_LABEL} is set"));
    }
    let last_update = machine
        .status
        .as_ref()
        .and_then(|s| s.current_status.as_ref())
        .and_then(|c| c.last_update_time.as_ref());
    if elapsed_until(last_update, now) > timeout {
        return Some(format!("drain timeout of {}s passed", timeout.as_secs()));
    }
    node_unhealthy_reason(machine, now)
}

/// How the drain of a preserved Failed machine's Node went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreservedDrain {
    /// No drain was owed (the machine is not Failed).
    NotNeeded,
    Drained,
    Failed,
}

/// MCM's `computeNewNodePreservedCondition`: the Preserved condition after this step, if it
/// must be written. `expiry` is printed as the message's "until" time.
pub fn preserved_condition(
    existing: Option<&NodeCondition>,
    value: PreserveValue,
    drain: PreservedDrain,
    expiry: Option<Timestamp>,
    now: Timestamp,
) -> Option<NodeCondition> {
    let mut condition = existing.cloned().unwrap_or_else(|| NodeCondition {
        type_: PRESERVED_CONDITION.to_owned(),
        status: "False".to_owned(),
        last_transition_time: Some(Time(now)),
        ..Default::default()
    });
    let mut changed = existing.is_none();
    // As Go prints a metav1.Time read back from the API server.
    let until = expiry
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S +0000 UTC").to_string())
        .unwrap_or_default();
    let message = condition.message.clone().unwrap_or_default();
    let was_true = condition.status == "True";
    let mut set = |status: &str, text: String| {
        if condition.status != status {
            condition.last_transition_time = Some(Time(now));
        }
        condition.status = status.to_owned();
        condition.message = Some(text);
        changed = true;
    };
    match drain {
        PreservedDrain::Drained if !message.contains(DRAIN_SUCCESSFUL) => {
            set(
                "True",
                format!("{DRAIN_SUCCESSFUL} {PRESERVED_UNTIL} {until}."),
            );
        }
        PreservedDrain::Failed if !message.contains(DRAIN_UNSUCCESSFUL) => {
            set(
                "False",
                format!("{DRAIN_UNSUCCESSFUL} {PRESERVED_UNTIL} {until}."),
            );
        }
        PreservedDrain::NotNeeded if !was_true => {
            set("True", format!("{PRESERVED_UNTIL} {until}."));
        }
        _ => {}
    }
    condition.reason = Some(
        match value {
            PreserveValue::AutoPreserved => PRESERVED_BY_MCM,
            _ => PRESERVED_BY_USER,
        }
        .to_owned(),
    );
    changed.then_some(condition)
}

/// The condition that says the preservation stopped.
pub fn stopped_condition(now: Timestamp) -> NodeCondition {
    NodeCondition {
        type_: PRESERVED_CONDITION.to_owned(),
        status: "False".to_owned(),
        last_transition_time: Some(Time(now)),
        reason: Some(PRESERVATION_STOPPED.to_owned()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn inputs<'a>(
        machine: Option<&'a str>,
        node: NodeAnnotation<'a>,
        p: &'a str,
    ) -> PreserveInputs<'a> {
        PreserveInputs {
            machine_value: machine,
            last_applied_node_value: "",
            node,
            phase: p,
            expiry: None,
            now: at(0),
        }
    }

    fn action(decision: PreservationDecision) -> PreservationAction {
        match decision {
            PreservationDecision::Act { action, .. } => action,
            other => panic!("no action: {other:?}"),
        }
    }

    const STOP: PreservationAction = PreservationAction::Stop {
        remove_annotations: false,
    };
    const STOP_AND_REMOVE: PreservationAction = PreservationAction::Stop {
        remove_annotations: true,
    };

    #[test]
    fn machines_without_any_preservation_state_are_left_alone() {
        let plain = inputs(None, NodeAnnotation::Found(None), phase::FAILED);
        assert_eq!(decide(&plain), PreservationDecision::NotBound);
        // An invalid machine value counts as none.
        let invalid = inputs(Some("yes"), NodeAnnotation::NoNode, phase::FAILED);
        assert_eq!(decide(&invalid), PreservationDecision::NotBound);
        let bad_node = inputs(None, NodeAnnotation::Found(Some("always")), phase::FAILED);
        assert_eq!(
            decide(&bad_node),
            PreservationDecision::InvalidNodeValue("always".into())
        );
    }

    #[test]
    fn each_value_preserves_or_stops_by_phase_and_expiry() {
        let node = NodeAnnotation::Found(None);
        let now = inputs(Some("now"), node, phase::RUNNING);
        assert_eq!(
            action(decide(&now)),
            PreservationAction::Preserve(PreserveValue::Now)
        );
        let when_failed = inputs(Some("when-failed"), node, phase::RUNNING);
        assert_eq!(action(decide(&when_failed)), STOP);
        let failed = inputs(Some("when-failed"), node, phase::FAILED);
        assert_eq!(
            action(decide(&failed)),
            PreservationAction::Preserve(PreserveValue::WhenFailed)
        );
        let recovered = inputs(Some("auto-preserved"), node, phase::RUNNING);
        assert_eq!(action(decide(&recovered)), STOP_AND_REMOVE);
        let off = inputs(Some("false"), node, phase::FAILED);
        assert_eq!(action(decide(&off)), STOP);
        // Expired: stopped, and the annotation goes so it does not preserve again.
        for value in ["now", "when-failed", "auto-preserved"] {
            let mut expired = inputs(Some(value), node, phase::FAILED);
            expired.expiry = Some(at(-1));
            assert_eq!(action(decide(&expired)), STOP_AND_REMOVE, "{value}");
            expired.expiry = Some(at(60));
            assert!(matches!(
                action(decide(&expired)),
                PreservationAction::Preserve(_)
            ));
        }
    }

    #[test]
    fn the_node_annotation_wins_once_it_was_in_control() {
        // The Node says now, the Machine nothing: preserve, and record the Node's value.
        let by_node = inputs(None, NodeAnnotation::Found(Some("now")), phase::RUNNING);
        assert_eq!(
            decide(&by_node),
            PreservationDecision::Act {
                action: PreservationAction::Preserve(PreserveValue::Now),
                untaint_when_running: true,
                record_node_value: Some("now".into()),
            }
        );
        // Recorded and unchanged: nothing more to record.
        let mut recorded = by_node;
        recorded.last_applied_node_value = "now";
        assert!(matches!(
            decide(&recorded),
            PreservationDecision::Act {
                record_node_value: None,
                ..
            }
        ));
        // The Node's annotation removed after it was applied: the preservation stops even
        // though the Machine still says now, and the removal is recorded.
        let mut removed = inputs(Some("now"), NodeAnnotation::Found(None), phase::RUNNING);
        removed.last_applied_node_value = "now";
        removed.expiry = Some(at(60));
        assert_eq!(
            decide(&removed),
            PreservationDecision::Act {
                action: STOP,
                untaint_when_running: false,
                record_node_value: Some(String::new()),
            }
        );
        // The Node is gone: the Machine's value is in force.
        let mut gone = inputs(Some("now"), NodeAnnotation::NodeNotFound, phase::FAILED);
        gone.last_applied_node_value = "when-failed";
        assert_eq!(
            action(decide(&gone)),
            PreservationAction::Preserve(PreserveValue::Now)
        );
        // A machine without a node and a stale record stops preserving.
        let mut nodeless = inputs(Some("now"), NodeAnnotation::NoNode, phase::FAILED);
        nodeless.last_applied_node_value = "now";
        assert_eq!(action(decide(&nodeless)), STOP);
    }

    fn condition(status: &str, message: &str) -> NodeCondition {
        NodeCondition {
            type_: PRESERVED_CONDITION.into(),
            status: status.into(),
            message: Some(message.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_failed_machine_is_preserved_only_once_drained() {
        let drained = condition(
            "True",
            "Preserved node drained successfully. Machine preserved until x.",
        );
        let running = condition("True", "Machine preserved until x.");
        assert!(drain_required(None, phase::FAILED));
        assert!(drain_required(Some(&running), phase::FAILED));
        assert!(!drain_required(Some(&drained), phase::FAILED));
        assert!(!drain_required(None, phase::RUNNING));
        assert!(already_preserved(Some(&running), phase::RUNNING));
        assert!(!already_preserved(Some(&running), phase::FAILED));
        assert!(already_preserved(Some(&drained), phase::FAILED));
    }

    #[test]
    fn a_preserved_drain_is_forced_by_its_label_or_the_drain_timeout() {
        let hour = Duration::from_secs(3600);
        let mut machine: Machine = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "m"}, "spec": {"class": {"name": "c"}},
            "status": {"currentStatus": {"phase": "Failed", "lastUpdateTime": Time(at(-600))}}
        }))
        .unwrap();
        assert_eq!(force_reason(&machine, hour, at(0)), None);
        assert!(force_reason(&machine, Duration::from_secs(60), at(0)).is_some());
        // Deletion's label does not force it; its own does, spelt as MCM compares it.
        machine.metadata.labels = Some([("force-deletion".to_owned(), "True".to_owned())].into());
        assert_eq!(force_reason(&machine, hour, at(0)), None);
        machine.metadata.labels = Some([(FORCE_DRAIN_LABEL.to_owned(), "true".to_owned())].into());
        assert_eq!(force_reason(&machine, hour, at(0)), None);
        machine.metadata.labels = Some([(FORCE_DRAIN_LABEL.to_owned(), "True".to_owned())].into());
        assert!(force_reason(&machine, hour, at(0)).is_some());
    }

    #[test]
    fn the_condition_says_how_the_preservation_went() {
        let expiry = Some(at(3600));
        let first = preserved_condition(
            None,
            PreserveValue::Now,
            PreservedDrain::NotNeeded,
            expiry,
            at(0),
        )
        .unwrap();
        assert_eq!(first.status, "True");
        assert_eq!(first.reason.as_deref(), Some(PRESERVED_BY_USER));
        assert_eq!(
            first.message.as_deref(),
            Some("Machine preserved until 2027-01-15 09:00:00 +0000 UTC.")
        );
        // Unchanged: nothing to write.
        assert_eq!(
            preserved_condition(
                Some(&first),
                PreserveValue::Now,
                PreservedDrain::NotNeeded,
                expiry,
                at(9)
            ),
            None
        );
        let failed = preserved_condition(
            Some(&first),
            PreserveValue::AutoPreserved,
            PreservedDrain::Failed,
            expiry,
            at(9),
        )
        .unwrap();
        assert_eq!(failed.status, "False");
        assert_eq!(failed.reason.as_deref(), Some(PRESERVED_BY_MCM));
        assert!(failed.message.unwrap().starts_with(DRAIN_UNSUCCESSFUL));
        assert_eq!(failed.last_transition_time, Some(Time(at(9))));
        let drained = preserved_condition(
            None,
            PreserveValue::WhenFailed,
            PreservedDrain::Drained,
            expiry,
            at(9),
        )
        .unwrap();
        assert_eq!(drained.status, "True");
        assert!(drained.message.unwrap().starts_with(DRAIN_SUCCESSFUL));
    }
}
