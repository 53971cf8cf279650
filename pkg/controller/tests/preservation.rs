//! Machine preservation (MCM v0.62's manageMachinePreservation): the preserve annotation on
//! a Machine or its Node keeps the machine until its expiry; its Node gets the
//! cluster-autoscaler's scale-down-disabled annotation and a Preserved condition, and a
//! Failed machine's Node is tainted and drained first.

mod support;

use serde_json::{Value, json};

use support::*;

const PODS_A: &str = "/api/v1/namespaces/app/pods";
const PRESERVE: &str = "node.machine.sapcloud.io/preserve";
const LAST_APPLIED: &str = "node.machine.sapcloud.io/last-applied-node-preserve-value";
const CA_DISABLED: &str = "cluster-autoscaler.kubernetes.io/scale-down-disabled";
const CA_BY_MCM: &str = "cluster-autoscaler.kubernetes.io/scale-down-disabled-by-mcm";
const TAINT: &str = "node.machine.sapcloud.io/preserved";

/// A machine in `phase` on Node `name`, with `extra` merged in.
fn machine(name: &str, phase: &str, extra: Value) -> Value {
    let mut machine = machine_json(
        name,
        json!({
            "metadata": {"finalizers": ["machine.sapcloud.io/machine-controller-manager"],
                         "labels": {"node": name}},
            "spec": {"providerID": format!("fake://{name}")},
            "status": {
                "currentStatus": {"phase": phase, "lastUpdateTime": ago(60)},
                "lastOperation": {"type": "HealthCheck", "state": "Successful", "description": "x", "lastUpdateTime": ago(60)},
                "conditions": ready_node("x", "True")["status"]["conditions"].clone()
            }
        }),
    );
    json_patch::merge(&mut machine, &extra);
    machine
}

fn node(world: &World, name: &str) -> Value {
    world.server.get(NODES, name).unwrap()
}

fn preserved_condition(world: &World, name: &str) -> Value {
    node(world, name)["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Preserved").cloned())
        .unwrap_or(Value::Null)
}

fn has_taint(world: &World, name: &str) -> bool {
    node(world, name)["spec"]["taints"]
        .as_array()
        .is_some_and(|t| {
            t.iter()
                .any(|t| t["key"] == TAINT && t["effect"] == "NoSchedule")
        })
}

fn expiry(world: &World, name: &str) -> Option<k8s_openapi::jiff::Timestamp> {
    world
        .status(name, "/currentStatus/preserveExpiryTime")
        .as_str()
        .and_then(|t| t.parse().ok())
}

fn hours_from_now(hours: i64) -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_hours(hours)
}

#[tokio::test]
async fn preserve_now_keeps_a_running_machine_and_marks_its_node() {
    let world = world();
    world.server.insert(
        MACHINES,
        machine(
            "m-1",
            "Running",
            json!({"metadata": {"annotations": {PRESERVE: "now"}},
                                        "spec": {"machinePreserveTimeout": "2h"}}),
        ),
    );
    world.server.insert(NODES, ready_node("m-1", "True"));
    world
        .reconcile_until("m-1", 5, |w| !preserved_condition(w, "m-1").is_null())
        .await;

    // The machine's own timeout (2h) over the flag's 96h.
    let until = expiry(&world, "m-1").expect("preserveExpiryTime set");
    assert!(
        until > hours_from_now(1) && until <= hours_from_now(2),
        "{until}"
    );
    let condition = preserved_condition(&world, "m-1");
    assert_eq!(condition["status"], "True");
    assert_eq!(condition["reason"], "Preserved by user.");
    assert!(
        condition["message"]
            .as_str()
            .unwrap()
            .starts_with("Machine preserved until "),
        "{condition}"
    );
    let annotations = &node(&world, "m-1")["metadata"]["annotations"];
    assert_eq!(annotations[CA_DISABLED], "true");
    assert_eq!(annotations[CA_BY_MCM], "true");
    // A Running machine is preserved without taint or drain.
    assert!(!has_taint(&world, "m-1"));

    // Once preserved (and the Node's new condition copied into the machine's status by
    // the health check), a reconcile writes nothing more.
    world.reconcile("m-1").await;
    world.server.clear_requests();
    world.reconcile("m-1").await;
    let writes: Vec<_> = world
        .server
        .request_lines()
        .into_iter()
        .filter(|l| !l.starts_with("GET"))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    // Preservation decides on the Node node sync already read, without reading it again.
    let node_reads = world
        .server
        .request_lines()
        .into_iter()
        .filter(|l| l == &format!("GET {NODES}/m-1"))
        .count();
    assert_eq!(node_reads, 2, "{:?}", world.server.request_lines());
}

#[tokio::test]
async fn a_failed_machine_preserved_when_failed_has_its_node_tainted_and_drained() {
    let world = world();
    // NotReady for a minute: failed (a healthy Node would make the machine rejoin as
    // Running), but not so long that the drain is forced.
    let conditions = json!([{"type": "Ready", "status": "False", "lastTransitionTime": ago(60)}]);
    world.server.insert(
        MACHINES,
        machine(
            "m-1",
            "Failed",
            json!({"metadata": {"annotations": {PRESERVE: "when-failed"}},
                                       "status": {"conditions": conditions}}),
        ),
    );
    world.server.insert(
        NODES,
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "m-1"},
               "status": {"conditions": conditions}}),
    );
    world.server.insert(
        PODS_A,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "app"},
               "spec": {"nodeName": "m-1", "containers": []}, "status": {"phase": "Running"}}),
    );
    world
        .reconcile_until("m-1", 6, |w| {
            preserved_condition(w, "m-1")["status"] == "True"
        })
        .await;

    assert!(expiry(&world, "m-1").is_some_and(|t| t > hours_from_now(95)));
    assert!(world.server.get(PODS_A, "web").is_none(), "pod evicted");
    assert!(
        world
            .server
            .request_lines()
            .contains(&format!("POST {PODS_A}/web/eviction"))
    );
    assert!(has_taint(&world, "m-1"));
    // A taint, not a cordon: a user's own cordon is theirs to lift.
    assert!(node(&world, "m-1")["spec"]["unschedulable"].is_null());
    let condition = preserved_condition(&world, "m-1");
    assert!(
        condition["message"]
            .as_str()
            .unwrap()
            .starts_with("Preserved node drained successfully. Machine preserved until "),
        "{condition}"
    );
    // The machine stays Failed: preservation keeps it, the machine-set controller decides.
    assert_eq!(world.status("m-1", "/currentStatus/phase"), "Failed");
}

#[tokio::test]
async fn removing_the_node_annotation_stops_the_preservation_and_cleans_up() {
    let world = world();
    world.server.insert(
        MACHINES,
        machine(
            "m-1",
            "Running",
            json!({"metadata": {"annotations": {LAST_APPLIED: "now"}},
                   "status": {"currentStatus": {"preserveExpiryTime": "2099-01-01T00:00:00Z"}}}),
        ),
    );
    let mut preserved_node = ready_node("m-1", "True");
    json_patch::merge(
        &mut preserved_node,
        &json!({"metadata": {"annotations": {CA_DISABLED: "true", CA_BY_MCM: "true", "keep": "me"}},
                "spec": {"taints": [{"key": TAINT, "effect": "NoSchedule"}, {"key": "other", "effect": "NoSchedule"}]}}),
    );
    world.server.insert(NODES, preserved_node);
    world
        .reconcile_until("m-1", 5, |w| expiry(w, "m-1").is_none())
        .await;

    let stored = node(&world, "m-1");
    assert_eq!(
        preserved_condition(&world, "m-1")["reason"],
        "Preservation stopped."
    );
    assert_eq!(preserved_condition(&world, "m-1")["status"], "False");
    assert!(stored["metadata"]["annotations"][CA_DISABLED].is_null());
    assert_eq!(stored["metadata"]["annotations"]["keep"], "me");
    assert!(!has_taint(&world, "m-1"));
    assert_eq!(stored["spec"]["taints"][0]["key"], "other");
    // The Node's (now absent) value is recorded, so the machine is not preserved again.
    world.reconcile("m-1").await;
    let annotations = &world.machine("m-1").unwrap()["metadata"]["annotations"];
    assert_eq!(annotations[LAST_APPLIED], "");
    assert_eq!(expiry(&world, "m-1"), None);
}

#[tokio::test]
async fn an_expired_auto_preservation_ends_and_its_annotation_goes() {
    let world = world();
    world.server.insert(
        MACHINES,
        machine(
            "m-1",
            "Failed",
            json!({"metadata": {"annotations": {PRESERVE: "auto-preserved"}},
                   "status": {"currentStatus": {"preserveExpiryTime": ago(5)}}}),
        ),
    );
    world.server.insert(NODES, ready_node("m-1", "True"));
    world
        .reconcile_until("m-1", 5, |w| expiry(w, "m-1").is_none())
        .await;
    let annotations = &world.machine("m-1").unwrap()["metadata"]["annotations"];
    assert!(annotations[PRESERVE].is_null(), "{annotations}");
    assert_eq!(
        preserved_condition(&world, "m-1")["reason"],
        "Preservation stopped."
    );
}

#[tokio::test]
async fn machines_without_preservation_state_are_not_touched_by_it() {
    let world = world();
    world
        .server
        .insert(MACHINES, machine("m-1", "Failed", json!({})));
    world.server.insert(NODES, ready_node("m-1", "True"));
    world.reconcile("m-1").await;
    world.reconcile("m-1").await;
    assert!(preserved_condition(&world, "m-1").is_null());
    assert!(node(&world, "m-1")["metadata"]["annotations"][CA_DISABLED].is_null());
    assert_eq!(expiry(&world, "m-1"), None);
}
