//! End-to-end: the machine controller's part of an in-place update on a real API server.
//!
//! The test plays MCM's MachineDeployment controller (it labels the Node candidate, then
//! selected) and the update agent on the Node (it sets the `update-result` label); the fake
//! kubelet keeps the Node Ready and runs its pod. A PodDisruptionBudget that wants the pod
//! always healthy first forbids its eviction: the real eviction API refuses it (429) and
//! the sidecar must report the failed drain in `lastOperation` and retry, the Node
//! cordoned and the machine still Running. With the budget gone the pod is evicted, the
//! machine becomes `InPlaceUpdating` and the Node's `InPlaceUpdate` condition
//! `ReadyForUpdate`; the agent's `successful` makes it `InPlaceUpdateSuccessful`, then
//! `Running`.
//!
//! Runs when `E2E_KUBECONFIG` is set (see README, End-to-end tests).

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use e2e::bed::{Bed, PATIENCE, eventually, node_condition};
use e2e::scenario::with_bed;

const MACHINE: &str = "m1";
const CANDIDATE: &str = "node.machine.sapcloud.io/candidate-for-update";
const SELECTED: &str = "node.machine.sapcloud.io/selected-for-update";
const RESULT: &str = "node.machine.sapcloud.io/update-result";

/// The reason of the Node's InPlaceUpdate condition ("" without one).
async fn in_place_reason(bed: &Bed) -> Result<String, String> {
    let node = bed.node(MACHINE).await?;
    Ok(node_condition(&node, "InPlaceUpdate")
        .and_then(|c| c.reason.clone())
        .unwrap_or_default())
}

async fn wait_for_reason(bed: &Bed, reason: &str) {
    eventually(&format!("InPlaceUpdate {reason}"), PATIENCE, || async {
        match in_place_reason(bed).await? {
            current if current == reason => Ok(()),
            current => Err(format!("reason {current:?}")),
        }
    })
    .await;
}

fn cordoned(node: &Node) -> bool {
    node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true)
}

fn label(bed: &Bed, key: &str) -> impl Future<Output = Node> {
    bed.patch_node(MACHINE, json!({"metadata": {"labels": {key: "true"}}}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selected_node_is_drained_updated_and_its_machine_runs_again() {
    with_bed("in-place", scenario).await;
}

async fn scenario(bed: &Bed) {
    let (sidecar, kubelet) = bed.running_machine(MACHINE, json!({})).await;

    bed.create_pod_on("web", MACHINE, json!({"app": "web"}))
        .await;
    let budget: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
    }))
    .expect("a PodDisruptionBudget");
    let budgets = bed.api::<PodDisruptionBudget>();
    budgets
        .create(&PostParams::default(), &budget)
        .await
        .expect("budget created");
    // The disruption controller has counted the running pod: no eviction is allowed.
    eventually("the budget to count the pod", PATIENCE, || async {
        let budget = budgets.get("web").await.map_err(|e| e.to_string())?;
        let status = budget.status.unwrap_or_default();
        if status.current_healthy == 1 && status.disruptions_allowed == 0 {
            Ok(())
        } else {
            Err(format!("{status:?}"))
        }
    })
    .await;

    // Candidate: the condition only.
    label(bed, CANDIDATE).await;
    wait_for_reason(bed, "CandidateForUpdate").await;
    let node = bed.nodes().get(MACHINE).await.expect("node");
    let condition = node_condition(&node, "InPlaceUpdate").expect("condition");
    assert_eq!(condition.status, "True");
    assert_eq!(
        condition.message.as_deref(),
        Some("Node is a candidate for in-place update")
    );
    assert!(!cordoned(&node), "a candidate is cordoned");

    // Selected: cordoned and drained, but the budget holds the pod.
    label(bed, SELECTED).await;
    // The budget can never allow the eviction (it wants every expected pod healthy): MCM
    // fails the drain at once rather than waiting out the drain timeout, and retries.
    eventually("the refused eviction reported", PATIENCE, || async {
        let machine = bed.machine(MACHINE).await?;
        let operation = machine
            .status
            .and_then(|s| s.last_operation)
            .unwrap_or_default();
        let description = operation.description.clone().unwrap_or_default();
        let ok = operation.type_.as_deref() == Some("DrainNode")
            && operation.state.as_deref() == Some("Processing")
            && description.starts_with(
                "Drain failed due to - error while evicting pod \"web\": pod disruption budget ",
            )
            && description.contains("is misconfigured and requires zero voluntary evictions")
            && description.ends_with(". Will retry in next sync. Initiate node drain");
        if ok {
            Ok(())
        } else {
            Err(format!("lastOperation {operation:?}"))
        }
    })
    .await;
    let node = bed.nodes().get(MACHINE).await.expect("node");
    assert!(cordoned(&node), "the selected Node is not cordoned");
    assert_eq!(in_place_reason(bed).await.unwrap(), "SelectedForUpdate");
    assert_eq!(bed.machine_phase(MACHINE).await.unwrap(), "Running");
    let pod = bed.api::<Pod>().get("web").await.expect("pod");
    assert!(pod.metadata.deletion_timestamp.is_none(), "pod deleted");

    // The budget goes: the next attempt evicts the pod.
    budgets
        .delete("web", &DeleteParams::default())
        .await
        .expect("budget deleted");
    let drained = eventually(
        "the Node drained and ready for the update",
        PATIENCE,
        || async {
            match in_place_reason(bed).await? {
                reason if reason == "ReadyForUpdate" => Ok(()),
                reason => Err(format!("reason {reason:?}")),
            }
        },
    )
    .await;
    eprintln!("in-place: ready for the update {drained:?} after the budget went");
    let node = bed.nodes().get(MACHINE).await.expect("node");
    let condition = node_condition(&node, "InPlaceUpdate").expect("condition");
    assert_eq!(
        condition.message.as_deref(),
        Some("Node is ready for in-place update")
    );
    // Drained for an update, not for deletion.
    assert!(node_condition(&node, "Terminating").is_none());
    assert!(cordoned(&node));
    assert!(
        bed.api::<Pod>()
            .get_opt("web")
            .await
            .expect("pod")
            .is_none()
    );
    // Evicted gracefully (the kubelet saw it Terminating), not deleted without grace.
    assert_eq!(kubelet.finished_pods(), [format!("{}/web", bed.namespace)]);
    let machine = bed.machines().get(MACHINE).await.expect("machine");
    let status = machine.status.expect("status");
    let phase = status.current_status.and_then(|c| c.phase);
    assert_eq!(phase.as_deref(), Some("InPlaceUpdating"));
    let operation = status.last_operation.expect("lastOperation");
    assert_eq!(operation.type_.as_deref(), Some("InPlaceUpdate"));
    assert_eq!(operation.state.as_deref(), Some("Processing"));
    assert_eq!(
        operation.description.as_deref(),
        Some("Machine m1 is undergoing an in-place update")
    );

    // The agent's report. Every phase the Machine passes is watched: the successful one
    // lasts a single reconcile.
    let phases = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = phases.clone();
    let config = watcher::Config::default().fields(&format!("metadata.name={MACHINE}"));
    let stream = watcher(bed.machines(), config).applied_objects();
    let watch = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(Ok(machine)) = stream.next().await {
            let phase = machine
                .status
                .and_then(|s| s.current_status)
                .and_then(|c| c.phase)
                .unwrap_or_default();
            let mut seen = seen.lock().expect("phases");
            if seen.last() != Some(&phase) {
                seen.push(phase);
            }
        }
    });
    bed.patch_node(
        MACHINE,
        json!({"metadata": {"labels": {RESULT: "successful"}}}),
    )
    .await;
    eventually("the machine Running after its update", PATIENCE, || async {
        let seen = phases.lock().expect("phases").clone();
        match seen.as_slice() {
            [.., updated, running]
                if updated == "InPlaceUpdateSuccessful" && running == "Running" =>
            {
                Ok(())
            }
            _ => Err(format!("phases {seen:?}")),
        }
    })
    .await;
    watch.abort();
    wait_for_reason(bed, "UpdateSuccessful").await;
    // MCM's MachineDeployment controller reads the outcome from the Machine's conditions.
    eventually("the outcome on the Machine", PATIENCE, || async {
        let machine = bed.machine(MACHINE).await?;
        let conditions = machine
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default();
        let copied = conditions
            .iter()
            .any(|c| c.type_ == "InPlaceUpdate" && c.reason.as_deref() == Some("UpdateSuccessful"));
        if copied {
            Ok(())
        } else {
            Err(format!("{conditions:?}"))
        }
    })
    .await;

    bed.delete_machine(MACHINE, PATIENCE).await;
    bed.delete_class("class", "cloud", PATIENCE).await;
    bed.assert_nothing_left(PATIENCE).await;
    drop(sidecar);
}
