//! In-place updates on the in-memory API server, the machine controller's part of them:
//! MCM's MachineDeployment controller (played here by the test) labels a Node candidate,
//! then selected; the sidecar drains it, marks the Machine InPlaceUpdating and the Node
//! ReadyForUpdate; the Node's agent (the test again) reports the result by label.

mod support;

use std::time::Duration;

use serde_json::{Value, json};

use mcm_machine_controller::error::retry;
use support::*;

const PODS_A: &str = "/api/v1/namespaces/app/pods";
const CANDIDATE: &str = "node.machine.sapcloud.io/candidate-for-update";
const SELECTED: &str = "node.machine.sapcloud.io/selected-for-update";
const RESULT: &str = "node.machine.sapcloud.io/update-result";
const FAILED_REASON: &str = "node.machine.sapcloud.io/update-failed-reason";

/// A machine in `phase` (since `since` seconds) on its Node "m-1".
fn machine(phase: &str, since: i64, extra: Value) -> Value {
    let mut machine = machine_json(
        "m-1",
        json!({
            "metadata": {"finalizers": ["machine.sapcloud.io/machine-controller-manager"], "labels": {"node": "m-1"}},
            "spec": {"providerID": "fake://m-1"},
            "status": {"currentStatus": {"phase": phase, "lastUpdateTime": ago(since)},
                       "lastOperation": {"type": "Create", "state": "Successful", "lastUpdateTime": ago(since)}}
        }),
    );
    json_patch::merge(&mut machine, &extra);
    machine
}

fn node_labels(world: &World, labels: Value) {
    let mut node = world.server.get(NODES, "m-1").unwrap();
    json_patch::merge(&mut node, &json!({"metadata": {"labels": labels}}));
    world.server.insert(NODES, node);
}

fn node_condition(world: &World) -> Value {
    let node = world.server.get(NODES, "m-1").unwrap();
    node["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "InPlaceUpdate").cloned())
        .unwrap_or(Value::Null)
}

fn reason(world: &World) -> String {
    node_condition(world)["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn phase(world: &World) -> String {
    world
        .status("m-1", "/currentStatus/phase")
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A Running machine on its Ready Node with a pod, reconciled until nothing changes.
async fn running() -> World {
    let world = world();
    world.driver.add_vm("m-1");
    world
        .server
        .insert(MACHINES, machine("Running", 100, json!({})));
    world.server.insert(NODES, ready_node("m-1", "True"));
    world.server.insert(
        PODS_A,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "app"},
               "spec": {"nodeName": "m-1", "containers": []}, "status": {"phase": "Running"}}),
    );
    for _ in 0..4 {
        world.reconcile("m-1").await;
    }
    world
}

#[tokio::test]
async fn a_selected_node_is_drained_then_updated_in_place_and_the_machine_runs_again() {
    let world = running().await;
    assert_eq!(node_condition(&world), Value::Null);

    // A candidate only gets the condition; nothing is drained yet.
    node_labels(&world, json!({CANDIDATE: "true"}));
    world.reconcile("m-1").await;
    assert_eq!(reason(&world), "CandidateForUpdate");
    assert_eq!(
        node_condition(&world)["message"],
        "Node is a candidate for in-place update"
    );
    assert!(world.server.get(PODS_A, "web").is_some());

    // Selected: drained (cordon, eviction), the machine InPlaceUpdating, the node ready.
    node_labels(&world, json!({SELECTED: "true"}));
    world
        .reconcile_until("m-1", 8, |w| reason(w) == "ReadyForUpdate")
        .await;
    let lines = world.server.request_lines();
    assert!(
        lines.contains(&format!("POST {PODS_A}/web/eviction")),
        "{lines:#?}"
    );
    let node = world.server.get(NODES, "m-1").unwrap();
    assert_eq!(node["spec"]["unschedulable"], true);
    assert!(
        node["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["type"] != "Terminating"),
        "no Terminating condition for an update"
    );
    assert_eq!(
        node_condition(&world)["message"],
        "Node is ready for in-place update"
    );
    assert_eq!(phase(&world), "InPlaceUpdating");
    assert_eq!(
        world.status("m-1", "/lastOperation/description"),
        "Machine m-1 is undergoing an in-place update"
    );
    assert_eq!(world.status("m-1", "/lastOperation/type"), "InPlaceUpdate");
    assert_eq!(world.status("m-1", "/lastOperation/state"), "Processing");
    let drain_states = world.machine("m-1").unwrap()["metadata"]["annotations"]
        ["kubevirt.provider.machine.sapcloud.io/drain-state"]
        .clone();
    assert_eq!(drain_states, Value::Null, "no drain state left behind");

    // Waiting for the node's agent: the in-place timeout is rechecked every minute.
    world.reconcile("m-1").await;
    let waiting = &world.reconcile("m-1").await;
    assert!(!waiting.failed, "{waiting:?}");
    assert_eq!(waiting.reason, "node m-1 is ready for in-place update");
    assert_eq!(waiting.after, Duration::from_secs(60));

    // The agent reports success: InPlaceUpdateSuccessful, then Running, and the node's
    // condition (which MCM's MachineDeployment controller reads from the Machine) too.
    node_labels(&world, json!({RESULT: "successful"}));
    let mut phases = Vec::new();
    for _ in 0..8 {
        world.reconcile("m-1").await;
        phases.push(phase(&world));
    }
    assert!(
        phases.contains(&"InPlaceUpdateSuccessful".to_owned()),
        "{phases:?}"
    );
    assert_eq!(phase(&world), "Running");
    assert_eq!(reason(&world), "UpdateSuccessful");
    let on_machine = world.status("m-1", "/conditions");
    assert!(
        on_machine
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "InPlaceUpdate" && c["reason"] == "UpdateSuccessful"),
        "{on_machine:#}"
    );
}

/// A machine InPlaceUpdating for 30 minutes whose node is waiting for its update.
fn updating_for_30_minutes(world: &World, extra: Value) {
    world
        .server
        .insert(MACHINES, machine("InPlaceUpdating", 1800, extra));
    let mut node = ready_node("m-1", "True");
    node["metadata"]["labels"] = json!({CANDIDATE: "true", SELECTED: "true"});
    node["status"]["conditions"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "InPlaceUpdate", "status": "True", "reason": "ReadyForUpdate"}));
    world.server.insert(NODES, node);
}

#[tokio::test]
async fn an_update_not_done_within_the_in_place_timeout_fails() {
    let world = world();
    updating_for_30_minutes(&world, json!({}));
    world
        .reconcile_until("m-1", 4, |w| phase(w) == "InPlaceUpdateFailed")
        .await;
    assert_eq!(
        world.status("m-1", "/lastOperation/description"),
        "Machine m-1 failed to in-place update in 20m0s minutes."
    );
    assert_eq!(world.status("m-1", "/lastOperation/state"), "Failed");

    // The flag, and the machine's own timeout over it.
    let world = world_with(&["--machine-inplace-update-timeout=1h"], true);
    updating_for_30_minutes(&world, json!({}));
    for _ in 0..3 {
        world.reconcile("m-1").await;
    }
    assert_eq!(phase(&world), "InPlaceUpdating");
    let world = world_with(&["--machine-inplace-update-timeout=1h"], true);
    updating_for_30_minutes(&world, json!({"spec": {"inPlaceUpdateTimeout": "10m"}}));
    world
        .reconcile_until("m-1", 4, |w| phase(w) == "InPlaceUpdateFailed")
        .await;
}

#[tokio::test]
async fn a_failed_update_reported_by_the_node_fails_machine_and_condition() {
    let world = world();
    updating_for_30_minutes(&world, json!({}));
    let mut node = world.server.get(NODES, "m-1").unwrap();
    node["metadata"]["labels"][RESULT] = json!("failed");
    node["metadata"]["annotations"] = json!({FAILED_REASON: "kernel rejected"});
    world.server.insert(NODES, node);
    world
        .reconcile_until("m-1", 6, |w| {
            phase(w) == "InPlaceUpdateFailed" && reason(w) == "UpdateFailed"
        })
        .await;
    assert_eq!(
        world.status("m-1", "/lastOperation/description"),
        "Machine m-1 failed to update dependencies: kernel rejected"
    );
    assert_eq!(
        node_condition(&world)["message"],
        "Node in-place update failed: kernel rejected"
    );
}

#[tokio::test]
async fn a_failing_drain_is_recorded_and_retried() {
    let world = running().await;
    node_labels(&world, json!({CANDIDATE: "true", SELECTED: "true"}));
    world.server.set_fault(|request, _| {
        (request.method == "PATCH" && request.path == format!("{NODES}/m-1"))
            .then(|| kube_fake::Fault::Status(500, "cordon refused".into()))
    });
    let outcomes = world
        .reconcile_until("m-1", 6, |w| {
            w.status("m-1", "/lastOperation/type") == "DrainNode"
        })
        .await;
    let failed = outcomes.last().unwrap();
    assert!(failed.failed, "{failed:?}");
    assert_eq!(failed.after, retry::SHORT);
    let description = world.status("m-1", "/lastOperation/description");
    let text = description.as_str().unwrap();
    assert!(
        text.starts_with("Drain failed due to - ")
            && text.contains("cordon refused")
            && text.ends_with(". Will retry in next sync. Initiate node drain"),
        "{text}"
    );
    assert_eq!(phase(&world), "Running");
    assert_eq!(reason(&world), "SelectedForUpdate");
    assert!(world.server.get(PODS_A, "web").is_some(), "nothing evicted");

    // Once cordoning works again, the drain goes through.
    world.server.clear_fault();
    world
        .reconcile_until("m-1", 6, |w| reason(w) == "ReadyForUpdate")
        .await;
    assert_eq!(phase(&world), "InPlaceUpdating");
}
