//! Draining a Node before its VM goes: Terminating condition, cordon, then evictions
//! (which honour PodDisruptionBudgets) of every pod but mirror and DaemonSet pods, and a
//! wait until the pods' KubeVirt volumes are detached (volume IDs from GetVolumeIDs).
//! Force mode (drain timeout passed since deletion, `force-deletion=true`, or a node not
//! Ready for 5 minutes) deletes pods without eviction and does not wait.
//!
//! Unlike MCM, one reconcile never blocks for the drain: each pass evicts what it can
//! and the flow stays in the drain step (requeued) until the node is empty. The drain
//! timeout bounds the whole drain, which is what MCM's eviction retries amount to.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{DeleteParams, EvictParams, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tracing::{info, warn};

use mcm_provider_kubevirt::driver::GetVolumeIdsRequest;
use mcm_provider_kubevirt::mcm::Machine;

use crate::context::{Context, is_not_found};
use crate::machine::settings::{drain_timeout, elapsed_since};
use crate::machine::status::phase_of;
use crate::names::{FORCE_DELETION_LABEL, MIRROR_POD_ANNOTATION, TERMINATING_CONDITION, phase};

/// MCM's pause between evictions refused by a PodDisruptionBudget.
pub const PDB_RETRY: Duration = Duration::from_secs(20);
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
    let conditions = machine
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    for condition in conditions {
        let bad = (condition.type_ == "Ready" && condition.status != "True")
            || (condition.type_ == "ReadonlyFilesystem" && condition.status != "False");
        if bad && elapsed_since(condition.last_transition_time.as_ref()) > NOT_READY_FORCE_AFTER {
            return Some(format!(
                "node condition {} is {} for over 5min",
                condition.type_, condition.status
            ));
        }
    }
    None
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
    /// Volume IDs of drained pods still attached to the node.
    pub attached_volumes: usize,
}

impl DrainProgress {
    pub fn done(&self) -> bool {
        self.remaining == 0 && self.attached_volumes == 0
    }
}

/// Sets the node's Terminating condition (strategic merge keeps the kubelet's conditions).
async fn mark_terminating(
    nodes: &Api<Node>,
    node_name: &str,
    machine: &Machine,
) -> Result<(), kube::Error> {
    if phase_of(machine).is_empty() || phase_of(machine) == phase::CRASH_LOOP_BACK_OFF {
        return Ok(());
    }
    let now = crate::machine::status::now();
    let reason = if phase_of(machine) == phase::FAILED {
        "Unhealthy"
    } else {
        "ScaleDown"
    };
    let patch = json!({"status": {"conditions": [{
        "type": TERMINATING_CONDITION, "status": "True", "reason": reason,
        "lastHeartbeatTime": now, "lastTransitionTime": now,
    }]}});
    nodes
        .patch_status(node_name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .map(|_| ())
}

async fn cordon(nodes: &Api<Node>, node_name: &str) -> Result<(), kube::Error> {
    let patch = json!({"spec": {"unschedulable": true}});
    nodes
        .patch(node_name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(|_| ())
}

/// The KubeVirt volume IDs of the pods' persistent volumes.
async fn volume_ids_of(ctx: &Context, client: &kube::Client, pods: &[Pod]) -> BTreeSet<String> {
    let mut specs = Vec::new();
    for pod in pods {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        for claim_name in volumes
            .iter()
            .filter_map(|v| v.persistent_volume_claim.as_ref())
            .map(|c| c.claim_name.clone())
        {
            let Ok(Some(claim)) = claims.get_opt(&claim_name).await else {
                continue;
            };
            let Some(volume_name) = claim.spec.and_then(|s| s.volume_name) else {
                continue;
            };
            let pvs: Api<PersistentVolume> = Api::all(client.clone());
            if let Ok(Some(pv)) = pvs.get_opt(&volume_name).await
                && let Some(spec) = pv.spec
            {
                specs.push(spec);
            }
        }
    }
    if specs.is_empty() {
        return BTreeSet::new();
    }
    match ctx
        .driver
        .get_volume_ids(&GetVolumeIdsRequest { pv_specs: specs })
        .await
    {
        Ok(response) => response.volume_ids.into_iter().collect(),
        Err(error) => {
            warn!("GetVolumeIDs failed; not waiting for detachment: {error}");
            BTreeSet::new()
        }
    }
}

/// Evicts (or, forced, deletes) the pods; those still there are counted.
async fn evict_all(client: &Client, pods: &[Pod], force: bool) -> Result<DrainProgress, String> {
    let mut progress = DrainProgress::default();
    for pod in pods {
        let name = pod.name_any();
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let finished = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded") | Some("Failed")
        );
        let result = if force || finished {
            let params = if force {
                DeleteParams::default().grace_period(0)
            } else {
                DeleteParams::default()
            };
            api.delete(&name, &params).await.map(|_| ())
        } else if pod.metadata.deletion_timestamp.is_some() {
            // Already going; wait for it.
            progress.remaining += 1;
            continue;
        } else {
            api.evict(&name, &EvictParams::default()).await.map(|_| ())
        };
        match result {
            Ok(()) if force || finished => {}
            Ok(()) => progress.remaining += 1,
            Err(error) if is_not_found(&error) => {}
            Err(kube::Error::Api(status)) if status.code == 429 => {
                progress.remaining += 1;
                progress.blocked_by_pdb += 1;
            }
            Err(error) => return Err(format!("evicting pod {namespace}/{name}: {error}")),
        }
    }
    Ok(progress)
}

/// How many of the drained pods' volume IDs the node still reports attached.
fn attached_count(node: &Node, volume_ids: &BTreeSet<String>) -> usize {
    let attached: Vec<String> = node
        .status
        .as_ref()
        .and_then(|s| s.volumes_attached.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect();
    volume_ids
        .iter()
        .filter(|id| attached.iter().any(|name| name.ends_with(id.as_str())))
        .count()
}

/// One drain pass over the node. `Err` is an API failure the flow reports.
pub async fn drain_pass(
    ctx: &Context,
    machine: &Machine,
    node_name: &str,
    force: bool,
) -> Result<DrainProgress, String> {
    let Some(client) = ctx.target.clone() else {
        return Ok(DrainProgress::default());
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let node = match nodes.get_opt(node_name).await {
        Ok(Some(node)) => node,
        Ok(None) => return Ok(DrainProgress::default()),
        Err(error) => return Err(format!("getting node {node_name:?}: {error}")),
    };
    if let Err(error) = mark_terminating(&nodes, node_name, machine).await
        && !force
    {
        return Err(format!("update of node conditions failed: {error}"));
    }
    if let Err(error) = cordon(&nodes, node_name).await
        && !force
    {
        return Err(format!("cordoning node {node_name:?} failed: {error}"));
    }
    let pods: Api<Pod> = Api::all(client.clone());
    let listed = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={node_name}")))
        .await
        .map_err(|error| format!("listing pods of node {node_name:?}: {error}"))?;
    let drained: Vec<Pod> = listed
        .items
        .into_iter()
        .filter(|p| !is_skipped(p))
        .collect();
    let mut progress = evict_all(&client, &drained, force).await?;
    if !force && progress.remaining == 0 {
        let ids = volume_ids_of(ctx, &client, &drained).await;
        progress.attached_volumes = attached_count(&node, &ids);
    }
    info!(
        node = node_name,
        force,
        remaining = progress.remaining,
        pdb = progress.blocked_by_pdb,
        attached = progress.attached_volumes,
        "drain pass"
    );
    Ok(progress)
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
