//! A drain pass's decisions, without I/O: which pods are evicted at once and which one
//! at a time, when a refused eviction is tried again or turns into a deletion, when the
//! wait for a pod's volumes ends, whether a PodDisruptionBudget can never allow an
//! eviction, and the node's Terminating condition. [`DrainState`] is what one pass
//! hands on to the next.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::machine::settings::elapsed_until;
use crate::names::{TERMINATING_CONDITION, phase};

/// MCM's pause between evictions refused by a PodDisruptionBudget
/// (`PodEvictionRetryInterval`).
pub const PDB_RETRY: Duration = Duration::from_secs(20);

/// MCM's error when a pod's volumes are still attached once the detach timeout is over.
pub const DETACH_TIMEOUT_ERROR: &str = "timeout while waiting for PVs to detach from node";

/// What one drain pass leaves the next, persisted on the Machine (see
/// `drain::save_drain_state` for why there).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainState {
    /// Refused evictions by pod (`namespace/name`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<String, Refusals>,
    /// The pod with volumes evicted last, whose volumes the drain waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detaching: Option<Detaching>,
}

/// How often a pod's eviction was refused, and when last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusals {
    /// The pod's uid: a new pod of the same name starts from zero.
    pub uid: String,
    pub count: u32,
    pub last: Time,
}

/// Volumes of an evicted pod that must detach before the next pod with volumes goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detaching {
    pub pod: String,
    /// Volume IDs as the driver's GetVolumeIDs names them.
    pub volumes: Vec<String>,
    /// The end of the wait: eviction, plus the pod's grace period, plus
    /// `--machine-pv-detach-timeout` (MCM's detach context).
    pub until: Time,
}

impl DrainState {
    /// The persisted state; `None` for no annotation, an error for one that is not ours.
    pub fn parse(text: Option<&str>) -> Result<Self, serde_json::Error> {
        match text {
            Some(text) => serde_json::from_str(text),
            None => Ok(DrainState::default()),
        }
    }

    /// The annotation value; `None` when there is nothing to hand on.
    pub fn to_annotation(&self) -> Option<String> {
        if self == &DrainState::default() {
            return None;
        }
        serde_json::to_string(self).ok()
    }

    /// Records a refused eviction of `pod` at `now`.
    pub fn refused_now(&mut self, pod: &Pod, now: Timestamp) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let entry = self.refused.entry(pod_key(pod)).or_insert(Refusals {
            uid: uid.clone(),
            count: 0,
            last: Time(now),
        });
        if entry.uid != uid {
            entry.uid = uid;
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = Time(now);
    }

    /// Forgets refusals of pods no longer on the node.
    pub fn keep_refusals_of(&mut self, pods: &[Pod]) {
        let listed: BTreeSet<(String, String)> = pods
            .iter()
            .map(|p| (pod_key(p), p.metadata.uid.clone().unwrap_or_default()))
            .collect();
        self.refused
            .retain(|key, r| listed.contains(&(key.clone(), r.uid.clone())));
    }
}

/// `namespace/name`, as MCM keys pods.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The evictions MCM attempts on a pod before deleting it: `--machine-max-evict-retries`
/// (or `spec.maxEvictRetries`), but no more than fit into the drain timeout at one per
/// [`PDB_RETRY`].
pub fn evict_retries(configured: i64, drain_timeout: Duration) -> u32 {
    let fit = drain_timeout.as_secs() / PDB_RETRY.as_secs();
    let configured = u64::try_from(configured).unwrap_or(0);
    u32::try_from(configured.min(fit)).unwrap_or(u32::MAX)
}

/// What to do with a pod the drain has not yet seen go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Evict,
    /// The evictions are used up: delete without grace, as MCM does.
    Delete,
    /// Refused less than [`PDB_RETRY`] ago; MCM would still be sleeping.
    NotDue,
}

/// The next attempt on `pod`. Counting refusals (not passes) keeps MCM's meaning when
/// reconciles come more often than every [`PDB_RETRY`].
pub fn next_attempt(state: &DrainState, pod: &Pod, retries: u32, now: Timestamp) -> Attempt {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let refusals = state.refused.get(&pod_key(pod)).filter(|r| r.uid == uid);
    if refusals.map_or(0, |r| r.count) >= retries {
        return Attempt::Delete;
    }
    match refusals {
        Some(r) if elapsed_until(Some(&r.last), now) < PDB_RETRY => Attempt::NotDue,
        _ => Attempt::Evict,
    }
}

/// A pod with a PersistentVolumeClaim: MCM evicts those one at a time.
pub fn has_claims(pod: &Pod) -> bool {
    !claims_of(pod).is_empty()
}

fn claims_of(pod: &Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .map(|volumes| {
            volumes
                .iter()
                .filter_map(|v| v.persistent_volume_claim.as_ref())
                .map(|c| c.claim_name.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Pods without claims (evicted at once) and pods with claims, highest priority first
/// (evicted one at a time in that order).
pub fn split_by_claims(pods: Vec<Pod>) -> (Vec<Pod>, Vec<Pod>) {
    let (mut with, without): (Vec<Pod>, Vec<Pod>) = pods.into_iter().partition(has_claims);
    with.sort_by_key(|p| std::cmp::Reverse(p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)));
    (without, with)
}

/// The claims of `pod` no other of `pods` uses: MCM does not wait for shared volumes
/// (they stay attached while another pod has them).
pub fn own_claims(pod: &Pod, pods: &[Pod]) -> Vec<String> {
    let key = pod_key(pod);
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let shared: BTreeSet<String> = pods
        .iter()
        .filter(|p| pod_key(p) != key && p.metadata.namespace.as_deref() == Some(namespace))
        .flat_map(claims_of)
        .collect();
    claims_of(pod)
        .into_iter()
        .filter(|c| !shared.contains(c))
        .collect()
}

/// The end of the wait for `pod`'s volumes, evicted at `now`.
pub fn detach_deadline(pod: &Pod, detach_timeout: Duration, now: Timestamp) -> Time {
    let grace = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or_default();
    let until = now
        .checked_add(grace.saturating_add(detach_timeout))
        .unwrap_or(Timestamp::MAX);
    Time(until)
}

/// Where the wait for an evicted pod's volumes stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetachWait {
    Done,
    /// This many of its volumes are still attached.
    Waiting(usize),
    TimedOut,
}

/// MCM's `waitForDetach`: done once the node lists none of the volumes as attached (or
/// the node is gone), timed out at the deadline.
pub fn detach_wait(detaching: &Detaching, node: Option<&Node>, now: Timestamp) -> DetachWait {
    let attached = node.map_or(0, |n| attached_count(n, &detaching.volumes));
    if attached == 0 {
        DetachWait::Done
    } else if now >= detaching.until.0 {
        DetachWait::TimedOut
    } else {
        DetachWait::Waiting(attached)
    }
}

/// How many of `volumes` the node lists as attached; MCM looks for each ID within the
/// attached names (`kubernetes.io/csi/<driver>^<volume handle>`).
pub fn attached_count(node: &Node, volumes: &[String]) -> usize {
    let attached: Vec<&str> = node
        .status
        .as_ref()
        .and_then(|s| s.volumes_attached.as_ref())
        .map(|v| v.iter().map(|a| a.name.as_str()).collect())
        .unwrap_or_default();
    volumes
        .iter()
        .filter(|id| !id.is_empty() && attached.iter().any(|name| name.contains(id.as_str())))
        .count()
}

/// Whether a label selector selects these labels, as policy/v1 reads a PDB's selector:
/// none selects nothing, an empty one everything, an invalid one nothing.
pub fn selector_matches(
    selector: Option<&LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> bool {
    let Some(selector) = selector else {
        return false;
    };
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

/// The PodDisruptionBudget MCM consults for a pod: the first that selects it.
pub fn budget_of<'a>(
    pod: &Pod,
    budgets: &'a [PodDisruptionBudget],
) -> Option<&'a PodDisruptionBudget> {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    budgets.iter().find(|b| {
        b.metadata.namespace == pod.metadata.namespace
            && selector_matches(b.spec.as_ref().and_then(|s| s.selector.as_ref()), &labels)
    })
}

/// MCM's `isMisconfiguredPdb`: a budget that is up to date, has all its pods healthy and
/// none being disrupted, and still allows no disruption will never allow one.
pub fn is_misconfigured(budget: &PodDisruptionBudget) -> bool {
    let Some(status) = budget.status.as_ref() else {
        return false;
    };
    if budget.metadata.generation.unwrap_or(0) != status.observed_generation.unwrap_or(0) {
        return false;
    }
    status.expected_pods > 0
        && status.current_healthy >= status.expected_pods
        && status
            .disrupted_pods
            .as_ref()
            .is_none_or(BTreeMap::is_empty)
        && status.disruptions_allowed == 0
}

/// MCM's error for a pod behind a misconfigured budget.
pub fn misconfigured_error(pod: &Pod, budget: &PodDisruptionBudget) -> String {
    format!(
        "error while evicting pod {:?}: pod disruption budget {}/{} is misconfigured and requires zero voluntary evictions",
        pod.metadata.name.as_deref().unwrap_or_default(),
        budget.metadata.namespace.as_deref().unwrap_or_default(),
        budget.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Several failures as one, as Kubernetes' error aggregate prints them.
pub fn aggregate(errors: &[String]) -> Option<String> {
    let mut unique: Vec<&String> = Vec::new();
    for error in errors {
        if !unique.contains(&error) {
            unique.push(error);
        }
    }
    match unique.as_slice() {
        [] => None,
        [one] => Some((*one).clone()),
        many => Some(format!(
            "[{}]",
            many.iter()
                .map(|e| e.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The Terminating condition to write on the node, or `None` when there is nothing to
/// write. As MCM: a node already Terminating keeps its reason and message (a machine
/// marked Unhealthy stays so), otherwise the phase gives them; the transition time is
/// kept while status and reason stay. A condition already saying it all is not written
/// again: only its heartbeat would change, and the write would wake this controller
/// through its Node watch for another pass at once.
pub fn terminating_condition(
    machine_phase: &str,
    existing: Option<&NodeCondition>,
    now: Time,
) -> Option<NodeCondition> {
    if machine_phase.is_empty() || machine_phase == phase::CRASH_LOOP_BACK_OFF {
        return None;
    }
    let (reason, message) = match existing {
        Some(c) if machine_phase == phase::TERMINATING => (c.reason.clone(), c.message.clone()),
        _ if machine_phase == phase::FAILED => (
            Some("Unhealthy".to_owned()),
            Some("Machine Controller is terminating failed machine".to_owned()),
        ),
        _ => (
            Some("ScaleDown".to_owned()),
            Some("Machine Controller is scaling down machine".to_owned()),
        ),
    };
    let same = existing.filter(|c| c.status == "True" && c.reason == reason);
    if same.is_some_and(|c| c.message == message) {
        return None;
    }
    Some(NodeCondition {
        type_: TERMINATING_CONDITION.to_owned(),
        status: "True".to_owned(),
        reason,
        message,
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(
            same.and_then(|c| c.last_transition_time.clone())
                .unwrap_or(now),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::SignedDuration;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn plain(name: &str) -> Pod {
        pod(json!({"metadata": {"name": name, "namespace": "app", "uid": format!("u-{name}")}}))
    }

    fn with_claims(name: &str, priority: i32, claims: &[&str]) -> Pod {
        let volumes: Vec<_> = claims
            .iter()
            .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        pod(
            json!({"metadata": {"name": name, "namespace": "app", "uid": format!("u-{name}")},
                   "spec": {"containers": [], "priority": priority, "volumes": volumes}}),
        )
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::UNIX_EPOCH + SignedDuration::from_secs(seconds)
    }

    #[test]
    fn retries_are_bounded_by_what_fits_into_the_drain_timeout() {
        let two_hours = Duration::from_secs(7200);
        assert_eq!(evict_retries(360, two_hours), 360);
        assert_eq!(evict_retries(3, two_hours), 3);
        assert_eq!(evict_retries(360, Duration::from_secs(90)), 4);
        assert_eq!(evict_retries(-1, two_hours), 0);
    }

    #[test]
    fn a_pod_refused_as_often_as_allowed_is_deleted_and_attempts_wait_their_interval() {
        let p = plain("web");
        let mut state = DrainState::default();
        assert_eq!(next_attempt(&state, &p, 2, at(0)), Attempt::Evict);
        state.refused_now(&p, at(0));
        assert_eq!(next_attempt(&state, &p, 2, at(19)), Attempt::NotDue);
        assert_eq!(next_attempt(&state, &p, 2, at(20)), Attempt::Evict);
        state.refused_now(&p, at(20));
        assert_eq!(next_attempt(&state, &p, 2, at(21)), Attempt::Delete);
        // No retries at all: deleted without an eviction.
        assert_eq!(
            next_attempt(&DrainState::default(), &p, 0, at(0)),
            Attempt::Delete
        );
        // A new pod of the same name starts from zero.
        let mut again = plain("web");
        again.metadata.uid = Some("other".into());
        assert_eq!(next_attempt(&state, &again, 2, at(21)), Attempt::Evict);
        state.refused_now(&again, at(21));
        assert_eq!(state.refused["app/web"].count, 1);
    }

    #[test]
    fn state_round_trips_and_forgets_pods_that_left() {
        let mut state = DrainState::default();
        assert_eq!(state.to_annotation(), None);
        state.refused_now(&plain("a"), at(0));
        state.refused_now(&plain("b"), at(0));
        state.detaching = Some(Detaching {
            pod: "app/db".into(),
            volumes: vec!["vol-1".into()],
            until: Time(at(120)),
        });
        let text = state.to_annotation().unwrap();
        assert_eq!(DrainState::parse(Some(&text)).unwrap(), state);
        assert!(DrainState::parse(Some("not json")).is_err());
        state.keep_refusals_of(&[plain("b")]);
        assert_eq!(state.refused.keys().collect::<Vec<_>>(), ["app/b"]);
    }

    #[test]
    fn pods_with_claims_go_one_at_a_time_by_priority_without_shared_claims() {
        let pods = vec![
            with_claims("low", 1, &["a"]),
            plain("web"),
            with_claims("high", 100, &["b", "shared"]),
            with_claims("mid", 10, &["shared"]),
        ];
        let (without, with) = split_by_claims(pods);
        assert_eq!(without.len(), 1);
        let order: Vec<_> = with.iter().map(pod_key).collect();
        assert_eq!(order, ["app/high", "app/mid", "app/low"]);
        assert_eq!(own_claims(&with[0], &with), ["b"]);
        assert!(own_claims(&with[1], &with).is_empty());
    }

    #[test]
    fn the_detach_wait_ends_when_volumes_are_gone_or_its_time_is_up() {
        let mut p = with_claims("db", 0, &["a"]);
        p.spec.as_mut().unwrap().termination_grace_period_seconds = Some(30);
        let until = detach_deadline(&p, Duration::from_secs(120), at(0));
        assert_eq!(until, Time(at(150)));
        let detaching = Detaching {
            pod: "app/db".into(),
            volumes: vec!["vol-1".into()],
            until,
        };
        let node = |names: &[&str]| -> Node {
            let attached: Vec<_> = names
                .iter()
                .map(|n| json!({"name": n, "devicePath": ""}))
                .collect();
            serde_json::from_value(json!({"status": {"volumesAttached": attached}})).unwrap()
        };
        let attached = node(&["kubernetes.io/csi/csi.kubevirt.io^vol-1"]);
        assert_eq!(
            detach_wait(&detaching, Some(&attached), at(149)),
            DetachWait::Waiting(1)
        );
        assert_eq!(
            detach_wait(&detaching, Some(&attached), at(150)),
            DetachWait::TimedOut
        );
        let detached = node(&["kubernetes.io/csi/csi.kubevirt.io^vol-2"]);
        assert_eq!(
            detach_wait(&detaching, Some(&detached), at(10)),
            DetachWait::Done
        );
        assert_eq!(detach_wait(&detaching, None, at(10)), DetachWait::Done);
    }

    fn budget(status: serde_json::Value, selector: serde_json::Value) -> PodDisruptionBudget {
        serde_json::from_value(
            json!({"metadata": {"name": "pdb", "namespace": "app", "generation": 2},
            "spec": {"selector": selector}, "status": status}),
        )
        .unwrap()
    }

    #[test]
    fn a_budget_allowing_nothing_while_all_its_pods_are_healthy_is_misconfigured() {
        let status = |allowed, healthy, generation| {
            json!({"disruptionsAllowed": allowed, "currentHealthy": healthy, "desiredHealthy": 2,
                   "expectedPods": 2, "observedGeneration": generation})
        };
        let all = json!({});
        assert!(is_misconfigured(&budget(status(0, 2, 2), all.clone())));
        assert!(!is_misconfigured(&budget(status(1, 2, 2), all.clone())));
        assert!(
            !is_misconfigured(&budget(status(0, 1, 2), all.clone())),
            "a pod is unhealthy"
        );
        assert!(
            !is_misconfigured(&budget(status(0, 2, 1), all.clone())),
            "status is stale"
        );
        let mut disrupted = status(0, 2, 2);
        disrupted["disruptedPods"] = json!({"web-1": "2026-01-01T00:00:00Z"});
        assert!(!is_misconfigured(&budget(disrupted, all.clone())));
        let b = budget(status(0, 2, 2), all);
        assert_eq!(
            misconfigured_error(&plain("web"), &b),
            "error while evicting pod \"web\": pod disruption budget app/pdb is misconfigured and requires zero voluntary evictions"
        );
    }

    #[test]
    fn budgets_select_pods_as_policy_v1_does() {
        let labels: BTreeMap<String, String> = [("app".to_owned(), "web".to_owned())].into();
        let selector =
            |s: serde_json::Value| -> LabelSelector { serde_json::from_value(s).unwrap() };
        assert!(!selector_matches(None, &labels));
        assert!(selector_matches(Some(&selector(json!({}))), &labels));
        assert!(selector_matches(
            Some(&selector(json!({"matchLabels": {"app": "web"}}))),
            &labels
        ));
        assert!(!selector_matches(
            Some(&selector(json!({"matchLabels": {"app": "db"}}))),
            &labels
        ));
        let expr = |op: &str, values: serde_json::Value| {
            selector(
                json!({"matchExpressions": [{"key": "app", "operator": op, "values": values}]}),
            )
        };
        assert!(selector_matches(
            Some(&expr("In", json!(["web", "x"]))),
            &labels
        ));
        assert!(!selector_matches(
            Some(&expr("NotIn", json!(["web"]))),
            &labels
        ));
        assert!(selector_matches(Some(&expr("Exists", json!([]))), &labels));
        assert!(!selector_matches(
            Some(&expr("DoesNotExist", json!([]))),
            &labels
        ));
        assert!(!selector_matches(Some(&expr("Bogus", json!([]))), &labels));
        let mut p = plain("web");
        p.metadata.labels = Some(labels);
        let b = budget(
            json!({"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}),
            json!({"matchLabels": {"app": "web"}}),
        );
        assert!(budget_of(&p, std::slice::from_ref(&b)).is_some());
        p.metadata.namespace = Some("other".into());
        assert!(budget_of(&p, &[b]).is_none());
    }

    #[test]
    fn errors_aggregate_as_kubernetes_prints_them() {
        assert_eq!(aggregate(&[]), None);
        assert_eq!(aggregate(&["a".into(), "a".into()]).as_deref(), Some("a"));
        assert_eq!(
            aggregate(&["a".into(), "b".into()]).as_deref(),
            Some("[a, b]")
        );
    }

    #[test]
    fn the_terminating_condition_keeps_an_existing_reason_and_carries_mcms_message() {
        let now = Time(at(100));
        let fresh = terminating_condition(phase::TERMINATING, None, now.clone()).unwrap();
        assert_eq!(fresh.reason.as_deref(), Some("ScaleDown"));
        assert_eq!(
            fresh.message.as_deref(),
            Some("Machine Controller is scaling down machine")
        );
        assert_eq!(fresh.last_transition_time, Some(now.clone()));
        let failed = terminating_condition(phase::FAILED, None, now.clone()).unwrap();
        assert_eq!(failed.reason.as_deref(), Some("Unhealthy"));
        assert_eq!(
            failed.message.as_deref(),
            Some("Machine Controller is terminating failed machine")
        );
        assert_eq!(terminating_condition("", None, now.clone()), None);
        assert_eq!(
            terminating_condition(phase::CRASH_LOOP_BACK_OFF, None, now.clone()),
            None
        );

        // Already Terminating for another reason (set when the machine failed): kept.
        let existing = NodeCondition {
            type_: TERMINATING_CONDITION.into(),
            status: "False".into(),
            reason: Some("Unhealthy".into()),
            message: Some("Machine Controller is terminating failed machine".into()),
            last_transition_time: Some(Time(at(10))),
            ..Default::default()
        };
        let kept = terminating_condition(phase::TERMINATING, Some(&existing), now.clone()).unwrap();
        assert_eq!(
            (kept.reason, kept.message),
            (existing.reason.clone(), existing.message.clone())
        );
        assert_eq!(kept.status, "True");
        assert_eq!(
            kept.last_transition_time,
            Some(now.clone()),
            "status changed"
        );
        // Saying it all already: nothing to write.
        let current = NodeCondition {
            status: "True".into(),
            ..existing
        };
        assert_eq!(
            terminating_condition(phase::TERMINATING, Some(&current), now),
            None
        );
    }
}
