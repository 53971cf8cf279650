//! Draining a Node before its VM goes, as MCM's drain: Terminating condition, cordon,
//! then evictions (which honour PodDisruptionBudgets) of every pod but mirror and
//! DaemonSet pods. Pods without volumes are evicted at once; pods with PersistentVolume
//! claims one at a time, highest priority first, each followed by a wait (bounded by
//! `--machine-pv-detach-timeout`) until the node no longer lists its volumes as attached.
//! A pod whose eviction is refused `--machine-max-evict-retries` times is deleted; a
//! budget that can never allow the eviction fails the drain at once. Force mode (drain
//! timeout passed since deletion, `force-deletion=true`, or a node not Ready for 5
//! minutes) deletes pods without eviction and does not wait.
//!
//! Unlike MCM, one reconcile never blocks for the drain: each pass does what is due and
//! the flow stays in the drain step (requeued) until the node is empty. What a pass must
//! hand on (refusals per pod, the volumes awaited) is a [`DrainState`] on the Machine;
//! [`drain_plan`](super::drain_plan) decides, this module calls.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{DeleteParams, EvictParams, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tracing::{info, warn};

use mcm_provider_kubevirt::driver::GetVolumeIdsRequest;
use mcm_provider_kubevirt::mcm::Machine;

use super::drain_plan::{
    Attempt, DETACH_TIMEOUT_ERROR, DetachWait, Detaching, DrainState, aggregate, budget_of,
    detach_deadline, detach_wait, evict_retries, is_misconfigured, misconfigured_error,
    next_attempt, own_claims, pod_key, split_by_claims, terminating_condition,
};
use crate::context::{Context, is_not_found, node_condition, set_node_condition};
use crate::error::ApiError;
use crate::machine::settings::{drain_timeout, elapsed_since, elapsed_until, max_evict_retries};
use crate::machine::status::{patch_machine_annotations, phase_of};
use crate::names::{
    DRAIN_STATE_ANNOTATION, FORCE_DELETION_LABEL, MIRROR_POD_ANNOTATION, TERMINATING_CONDITION,
};

pub use super::drain_plan::PDB_RETRY;
/// A node NotReady (or read-only) this long is drained by force.
const NOT_READY_FORCE_AFTER: Duration = Duration::from_secs(5 * 60);

/// Why the drain is forced, if it is.
pub fn force_reason(machine: &Machine, timeout: Duration) -> Option<String> {
    let labels = machine.metadata.labels.clone().unwrap_or_default();
    if labels
        .get(FORCE_DELETION_LABEL)
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
    {
        return Some(format!("label {FORCE_DELETION_LABEL} is set"));
    }
    if elapsed_since(machine.metadata.deletion_timestamp.as_ref()) > timeout {
        return Some(format!("drain timeout of {}s passed", timeout.as_secs()));
    }
    node_unhealthy_reason(machine, Timestamp::now())
}

/// A node NotReady, or with a read-only filesystem, for over 5 minutes (by the conditions
/// the Machine copied): its pods are deleted, not evicted, by either drain.
pub fn node_unhealthy_reason(machine: &Machine, now: Timestamp) -> Option<String> {
    let conditions = machine
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    conditions.iter().find_map(|condition| {
        let bad = (condition.type_ == "Ready" && condition.status != "True")
            || (condition.type_ == "ReadonlyFilesystem" && condition.status != "False");
        let long =
            elapsed_until(condition.last_transition_time.as_ref(), now) > NOT_READY_FORCE_AFTER;
        (bad && long).then(|| {
            format!(
                "node condition {} is {} for over 5min",
                condition.type_, condition.status
            )
        })
    })
}

/// What a drain is for: deletion sets the node's Terminating condition and goes on past
/// cordon failures when forced; the drain before an in-place update does neither (MCM's
/// drainNodeForInPlace); a preserved Failed machine's Node is not cordoned at all, as its
/// caller has tainted it (MCM's drainPreservedNode leaves a user's cordon alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainPurpose {
    Deletion,
    InPlaceUpdate,
    Preservation,
}

/// Pods drain leaves alone: static (mirror) pods and DaemonSet pods.
fn is_skipped(pod: &Pod) -> bool {
    let mirror = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_POD_ANNOTATION));
    let daemon = pod
        .metadata
        .owner_references
        .as_ref()
        .is_some_and(|owners| {
            owners
                .iter()
                .any(|o| o.kind == "DaemonSet" && o.controller == Some(true))
        });
    mirror || daemon
}

/// Outcome of one drain pass.
#[derive(Debug, Default, PartialEq)]
pub struct DrainProgress {
    /// Pods still on the node that drain waits for.
    pub remaining: usize,
    /// Of those, evictions refused by a PodDisruptionBudget.
    pub blocked_by_pdb: usize,
    /// Volumes of the pod with volumes evicted last still attached to the node.
    pub attached_volumes: usize,
}

impl DrainProgress {
    pub fn done(&self) -> bool {
        self.remaining == 0 && self.attached_volumes == 0
    }
}

/// One pass's result, and the state it hands on to the next (saved whatever the result).
#[derive(Debug)]
pub struct DrainPass {
    /// `Err` fails an unforced drain: an API failure, or a pod the drain cannot move.
    pub result: Result<DrainProgress, String>,
    pub state: DrainState,
}

/// Sets the node's Terminating condition (strategic merge keeps the kubelet's conditions).
async fn mark_terminating(
    nodes: &Api<Node>,
    node: &Node,
    machine: &Machine,
) -> Result<(), kube::Error> {
    let existing = node_condition(node, TERMINATING_CONDITION);
    let now = crate::machine::status::now();
    let Some(condition) = terminating_condition(phase_of(machine), existing, now) else {
        return Ok(());
    };
    set_node_condition(nodes, &node.name_any(), condition).await
}

async fn cordon(nodes: &Api<Node>, node_name: &str) -> Result<(), kube::Error> {
    let patch = json!({"spec": {"unschedulable": true}});
    nodes
        .patch(node_name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(|_| ())
}

/// The KubeVirt volume IDs of the claims' persistent volumes (GetVolumeIDs leaves out
/// volumes that are not the provider's).
async fn volume_ids(
    ctx: &Context,
    client: &Client,
    namespace: &str,
    claims: &[String],
) -> Vec<String> {
    let claims_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let volumes_api: Api<PersistentVolume> = Api::all(client.clone());
    let mut specs = Vec::new();
    for claim_name in claims {
        let Ok(Some(claim)) = claims_api.get_opt(claim_name).await else {
            continue;
        };
        let Some(volume_name) = claim.spec.and_then(|s| s.volume_name) else {
            continue;
        };
        if let Ok(Some(pv)) = volumes_api.get_opt(&volume_name).await
            && let Some(spec) = pv.spec
        {
            specs.push(spec);
        }
    }
    if specs.is_empty() {
        return Vec::new();
    }
    match ctx
        .driver
        .get_volume_ids(&GetVolumeIdsRequest { pv_specs: specs })
        .await
    {
        Ok(response) => response.volume_ids,
        Err(error) => {
            warn!("GetVolumeIDs failed; not waiting for detachment: {error}");
            Vec::new()
        }
    }
}

fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// What became of a pod in this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PodOutcome {
    /// Evicted or deleted now (a finished pod is gone at once).
    Removed,
    /// Not there any more.
    Gone,
    /// Already terminating, or waiting for its turn.
    Waiting,
    /// Its eviction was refused (now or recently).
    Blocked,
    /// A failure, recorded in the pass's errors.
    Failed,
}

/// One pass over a node's pods: what it saw and what it hands on.
struct Pass<'a> {
    ctx: &'a Context,
    client: Client,
    node: Node,
    state: DrainState,
    retries: u32,
    now: Timestamp,
    progress: DrainProgress,
    errors: Vec<String>,
    /// PodDisruptionBudgets by namespace, listed once a pass when an eviction is refused.
    budgets: BTreeMap<String, Vec<PodDisruptionBudget>>,
}

impl Pass<'_> {
    fn count(&mut self, pod: &Pod, outcome: PodOutcome) {
        match outcome {
            PodOutcome::Gone => {}
            PodOutcome::Removed if is_finished(pod) => {}
            PodOutcome::Blocked => {
                self.progress.remaining += 1;
                self.progress.blocked_by_pdb += 1;
            }
            _ => self.progress.remaining += 1,
        }
    }

    /// Evicts the pod, or deletes it once its evictions are used up (finished pods are
    /// deleted: no budget counts them).
    async fn try_pod(&mut self, pod: &Pod) -> PodOutcome {
        let name = pod.name_any();
        let namespace = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let attempt = if is_finished(pod) {
            None
        } else if pod.metadata.deletion_timestamp.is_some() {
            return PodOutcome::Waiting;
        } else {
            Some(next_attempt(&self.state, pod, self.retries, self.now))
        };
        let result = match attempt {
            Some(Attempt::NotDue) => return PodOutcome::Blocked,
            Some(Attempt::Evict) => api.evict(&name, &EvictParams::default()).await.map(|_| ()),
            Some(Attempt::Delete) => {
                info!(pod = %pod_key(pod), "evictions used up; deleting the pod");
                let params = DeleteParams::default().grace_period(0);
                api.delete(&name, &params).await.map(|_| ())
            }
            None => api
                .delete(&name, &DeleteParams::default())
                .await
                .map(|_| ()),
        };
        match result {
            Ok(()) => PodOutcome::Removed,
            Err(error) if is_not_found(&error) => PodOutcome::Gone,
            Err(kube::Error::Api(status))
                if status.code == 429 && attempt == Some(Attempt::Evict) =>
            {
                self.refused(pod).await
            }
            Err(error) => {
                self.errors
                    .push(format!("evicting pod {namespace}/{name}: {error}"));
                PodOutcome::Failed
            }
        }
    }

    /// A refused eviction: counted, unless the pod's budget can never allow it (MCM
    /// fails the drain then instead of retrying until the drain timeout).
    async fn refused(&mut self, pod: &Pod) -> PodOutcome {
        let namespace = pod.namespace().unwrap_or_default();
        if !self.budgets.contains_key(&namespace) {
            let api: Api<PodDisruptionBudget> = Api::namespaced(self.client.clone(), &namespace);
            let listed = match api.list(&ListParams::default()).await {
                Ok(list) => list.items,
                Err(error) => {
                    warn!(namespace = %namespace, "listing PodDisruptionBudgets failed: {error}");
                    Vec::new()
                }
            };
            self.budgets.insert(namespace.clone(), listed);
        }
        let budgets = self
            .budgets
            .get(&namespace)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if let Some(budget) = budget_of(pod, budgets).filter(|b| is_misconfigured(b)) {
            self.errors.push(misconfigured_error(pod, budget));
            return PodOutcome::Failed;
        }
        self.state.refused_now(pod, self.now);
        PodOutcome::Blocked
    }

    /// Whether the volumes of the pod evicted before are still awaited.
    fn awaiting_volumes(&mut self) -> bool {
        let Some(detaching) = self.state.detaching.as_ref() else {
            return false;
        };
        match detach_wait(detaching, Some(&self.node), self.now) {
            DetachWait::Waiting(attached) => {
                self.progress.attached_volumes = attached;
                return true;
            }
            DetachWait::TimedOut => {
                warn!(pod = %detaching.pod, volumes = ?detaching.volumes, "{DETACH_TIMEOUT_ERROR}");
                self.errors.push(DETACH_TIMEOUT_ERROR.to_owned());
            }
            DetachWait::Done => {}
        }
        self.state.detaching = None;
        false
    }

    /// Pods with volumes, in priority order: the next is evicted once the volumes of the
    /// one before are detached (MCM's `evictPodsWithPv`); refused ones do not hold the
    /// others up.
    async fn one_at_a_time(&mut self, pods: &[Pod]) {
        let mut busy = self.awaiting_volumes();
        for pod in pods {
            if busy && pod.metadata.deletion_timestamp.is_none() {
                self.count(pod, PodOutcome::Waiting);
                continue;
            }
            let outcome = self.try_pod(pod).await;
            if outcome == PodOutcome::Removed {
                self.state.detaching = self.detaching(pod, pods).await;
                busy = self.state.detaching.is_some();
            }
            self.count(pod, outcome);
        }
    }

    /// The volumes to wait for after evicting `pod`; none when the driver knows none
    /// (MCM waits for nothing then either).
    async fn detaching(&self, pod: &Pod, pods: &[Pod]) -> Option<Detaching> {
        let namespace = pod.namespace().unwrap_or_default();
        let claims = own_claims(pod, pods);
        let volumes = volume_ids(self.ctx, &self.client, &namespace, &claims).await;
        let timeout = self.ctx.options.machines.machine_pv_detach_timeout;
        (!volumes.is_empty()).then(|| Detaching {
            pod: pod_key(pod),
            volumes,
            until: detach_deadline(pod, timeout, self.now),
        })
    }

    fn finish(mut self, node_name: &str, pods: &[Pod]) -> DrainPass {
        self.state.keep_refusals_of(pods);
        info!(
            node = node_name,
            remaining = self.progress.remaining,
            pdb = self.progress.blocked_by_pdb,
            attached = self.progress.attached_volumes,
            errors = self.errors.len(),
            "drain pass"
        );
        let result = match aggregate(&self.errors) {
            Some(error) => Err(error),
            None => Ok(self.progress),
        };
        DrainPass {
            result,
            state: self.state,
        }
    }
}

/// Force mode: every pod deleted without grace, nothing awaited.
async fn force_pass(client: &Client, pods: &[Pod]) -> Result<DrainProgress, String> {
    let mut errors = Vec::new();
    for pod in pods {
        let name = pod.name_any();
        let namespace = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        match api
            .delete(&name, &DeleteParams::default().grace_period(0))
            .await
        {
            Err(error) if !is_not_found(&error) => {
                errors.push(format!("evicting pod {namespace}/{name}: {error}"));
            }
            _ => {}
        }
    }
    info!(
        pods = pods.len(),
        errors = errors.len(),
        "forced drain pass"
    );
    aggregate(&errors).map_or(Ok(DrainProgress::default()), Err)
}

/// Terminating condition (deletion only) and cordon; their failures only matter to an
/// unforced deletion drain and to every in-place drain.
async fn prepare(
    nodes: &Api<Node>,
    node: &Node,
    machine: &Machine,
    force: bool,
    purpose: DrainPurpose,
) -> Result<(), String> {
    if purpose == DrainPurpose::Preservation {
        return Ok(());
    }
    let node_name = node.name_any();
    let tolerate = force && purpose == DrainPurpose::Deletion;
    if purpose == DrainPurpose::Deletion
        && let Err(error) = mark_terminating(nodes, node, machine).await
        && !tolerate
    {
        return Err(format!("update of node conditions failed: {error}"));
    }
    if let Err(error) = cordon(nodes, &node_name).await
        && !tolerate
    {
        return Err(format!("cordoning node {node_name:?} failed: {error}"));
    }
    Ok(())
}

/// The node's pods the drain moves.
async fn drained_pods(client: &Client, node_name: &str) -> Result<Vec<Pod>, String> {
    let pods: Api<Pod> = Api::all(client.clone());
    let listed = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={node_name}")))
        .await
        .map_err(|error| format!("listing pods of node {node_name:?}: {error}"))?;
    Ok(listed
        .items
        .into_iter()
        .filter(|p| !is_skipped(p))
        .collect())
}

/// The state the last pass left on the machine; an unreadable one is dropped.
pub fn drain_state_of(machine: &Machine) -> DrainState {
    let text = machine.annotations().get(DRAIN_STATE_ANNOTATION);
    DrainState::parse(text.map(String::as_str)).unwrap_or_else(|error| {
        warn!(machine = %machine.name_any(), "ignoring unreadable drain state: {error}");
        DrainState::default()
    })
}

/// Saves the state for the next pass as an annotation on the Machine (removed when there
/// is nothing to hand on) and returns the Machine as stored. The Machine, because a
/// restarted controller reads it first and it goes with the deletion; the pods are the
/// workload's (and may not be writable). Counting from the deletion time instead would
/// lose MCM's per-pod meaning: a pod with volumes waits its turn before its first eviction.
pub async fn save_drain_state(
    ctx: &Context,
    machine: &Machine,
    state: &DrainState,
) -> Result<Machine, ApiError> {
    let wanted = state.to_annotation();
    if machine.annotations().get(DRAIN_STATE_ANNOTATION) == wanted.as_ref() {
        return Ok(machine.clone());
    }
    let annotations = json!({DRAIN_STATE_ANNOTATION: wanted});
    patch_machine_annotations(
        ctx,
        machine,
        annotations,
        "Machine drain state UPDATE failed",
    )
    .await
}

/// One drain pass over the node.
pub async fn drain_pass(
    ctx: &Context,
    machine: &Machine,
    node_name: &str,
    force: bool,
    purpose: DrainPurpose,
) -> DrainPass {
    let state = drain_state_of(machine);
    let failed = |error: String, state: DrainState| DrainPass {
        result: Err(error),
        state,
    };
    let Some(client) = ctx.target.clone() else {
        return DrainPass {
            result: Ok(DrainProgress::default()),
            state,
        };
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let node = match nodes.get_opt(node_name).await {
        Ok(Some(node)) => node,
        Ok(None) => {
            return DrainPass {
                result: Ok(DrainProgress::default()),
                state: DrainState::default(),
            };
        }
        Err(error) => return failed(format!("getting node {node_name:?}: {error}"), state),
    };
    if let Err(error) = prepare(&nodes, &node, machine, force, purpose).await {
        return failed(error, state);
    }
    let drained = match drained_pods(&client, node_name).await {
        Ok(pods) => pods,
        Err(error) => return failed(error, state),
    };
    if force {
        let result = force_pass(&client, &drained).await;
        return DrainPass {
            result,
            state: DrainState::default(),
        };
    }
    let retries = evict_retries(
        max_evict_retries(machine, &ctx.options),
        drain_timeout(machine, &ctx.options),
    );
    let mut pass = Pass {
        ctx,
        client,
        node,
        state,
        retries,
        now: Timestamp::now(),
        progress: DrainProgress::default(),
        errors: Vec::new(),
        budgets: BTreeMap::new(),
    };
    let (at_once, one_at_a_time) = split_by_claims(drained.clone());
    for pod in &at_once {
        let outcome = pass.try_pod(pod).await;
        pass.count(pod, outcome);
    }
    pass.one_at_a_time(&one_at_a_time).await;
    pass.finish(node_name, &drained)
}

/// Why this machine's drain is forced, if it is (its drain timeout from spec or flag).
pub fn forced_drain(ctx: &Context, machine: &Machine) -> Option<String> {
    force_reason(machine, drain_timeout(machine, &ctx.options))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mirror_and_daemonset_pods_are_skipped() {
        let mirror: Pod = serde_json::from_value(
            json!({"metadata": {"name": "a", "annotations": {MIRROR_POD_ANNOTATION: "x"}}}),
        )
        .unwrap();
        let daemon: Pod = serde_json::from_value(json!({"metadata": {"name": "b", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds", "uid": "u", "controller": true}]}})).unwrap();
        let plain: Pod = serde_json::from_value(json!({"metadata": {"name": "c", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u", "controller": true}]}})).unwrap();
        assert!(is_skipped(&mirror));
        assert!(is_skipped(&daemon));
        assert!(!is_skipped(&plain));
    }

    #[test]
    fn force_label_timeout_and_not_ready_force_the_drain() {
        let hour = Duration::from_secs(3600);
        let mut machine = Machine::new("m", Default::default());
        machine.metadata.deletion_timestamp = Some(crate::machine::status::now());
        assert_eq!(force_reason(&machine, hour), None);
        machine.metadata.labels =
            Some([(FORCE_DELETION_LABEL.to_owned(), "True".to_owned())].into());
        assert!(force_reason(&machine, hour).is_some());
        machine.metadata.labels = None;
        let old = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(600),
        );
        machine.metadata.deletion_timestamp = Some(old.clone());
        assert!(force_reason(&machine, Duration::from_secs(60)).is_some());
        machine.metadata.deletion_timestamp = Some(crate::machine::status::now());
        machine.status = Some(
            serde_json::from_value(json!({"conditions": [
            {"type": "Ready", "status": "False", "lastTransitionTime": old}]}))
            .unwrap(),
        );
        assert!(force_reason(&machine, hour).unwrap().contains("Ready"));
    }
}
