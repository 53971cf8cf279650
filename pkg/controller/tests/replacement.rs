//! Replacement limits (MCM's tryMarkingMachineFailed with maxReplacements = 1): an
//! Unknown machine past its health timeout is failed only while no other machine of its
//! MachineDeployment is being replaced, so a zone outage does not replace a pool at once.

mod support;

use serde_json::{Value, json};

use mcm_machine_controller::error::retry;
use support::*;

/// A machine of `deployment` in `phase` on its own Node, unhealthy for an hour.
fn machine(name: &str, deployment: &str, phase: &str) -> Value {
    machine_json(
        name,
        json!({
            "metadata": {"labels": {"name": deployment, "node": format!("node-{name}")},
                         "finalizers": ["machine.sapcloud.io/machine-controller-manager"]},
            "spec": {"providerID": format!("fake://{name}")},
            "status": {
                "currentStatus": {"phase": phase, "lastUpdateTime": ago(3600)},
                "lastOperation": {"description": "unhealthy", "state": "Processing", "type": "HealthCheck", "lastUpdateTime": ago(3600)},
                "conditions": ready_node("x", "False")["status"]["conditions"].clone()
            }
        }),
    )
}

fn add(world: &World, name: &str, deployment: &str, phase: &str) {
    world
        .server
        .insert(MACHINES, machine(name, deployment, phase));
    world
        .server
        .insert(NODES, ready_node(&format!("node-{name}"), "False"));
}

fn set_phase(world: &World, name: &str, phase: &str) {
    let mut stored = world.machine(name).unwrap();
    stored["status"]["currentStatus"]["phase"] = json!(phase);
    world.server.insert(MACHINES, stored);
}

#[tokio::test]
async fn one_machine_of_a_deployment_is_replaced_at_a_time() {
    let world = world();
    add(&world, "m-1", "pool-a", "Unknown");
    add(&world, "m-2", "pool-a", "Unknown");
    add(&world, "m-3", "pool-a", "Pending");
    add(&world, "b-1", "pool-b", "Unknown");

    // m-3 is still coming up as a replacement: m-1 waits.
    let outcome = world.reconcile("m-1").await;
    assert!(outcome.failed);
    assert!(
        outcome
            .reason
            .contains("other machines are getting replaced"),
        "{outcome:?}"
    );
    assert_eq!(outcome.after, retry::SHORT);
    assert_eq!(world.status("m-1", "/currentStatus/phase"), "Unknown");

    // Another deployment is not held back by pool-a.
    world.reconcile("b-1").await;
    assert_eq!(world.status("b-1", "/currentStatus/phase"), "Failed");

    // The replacement runs: m-1 is failed, and then it is the one being replaced.
    set_phase(&world, "m-3", "Running");
    let outcome = world.reconcile("m-1").await;
    assert!(!outcome.failed, "{outcome:?}");
    assert_eq!(world.status("m-1", "/currentStatus/phase"), "Failed");
    let outcome = world.reconcile("m-2").await;
    assert!(outcome.failed);
    assert_eq!(world.status("m-2", "/currentStatus/phase"), "Unknown");
}

#[tokio::test]
async fn a_preserved_failed_machine_does_not_hold_back_replacements() {
    let world = world();
    add(&world, "m-1", "pool-a", "Unknown");
    add(&world, "m-2", "pool-a", "Failed");
    let mut preserved = world.machine("m-2").unwrap();
    preserved["status"]["currentStatus"]["preserveExpiryTime"] = json!("2099-01-01T00:00:00Z");
    world.server.insert(MACHINES, preserved);

    // m-2 is kept by its preservation, not being replaced: m-1 may be.
    let outcome = world.reconcile("m-1").await;
    assert!(!outcome.failed, "{outcome:?}");
    assert_eq!(world.status("m-1", "/currentStatus/phase"), "Failed");
}
