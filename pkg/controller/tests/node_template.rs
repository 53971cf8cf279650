//! The class's nodeTemplate on the in-memory API server: virtualCapacity reaches the
//! Node's status.capacity and leaves it again (MCM's syncNodeTemplates), and an incomplete
//! nodeTemplate holds the machine back with MCM's reasons.

mod support;

use serde_json::{Value, json};

use support::*;

const RESOURCE: &str = "hc.hana.com/memory";

fn class_with(node_template: Value) -> Value {
    json!({"apiVersion": "machine.sapcloud.io/v1alpha1", "kind": "MachineClass",
           "metadata": {"name": "class-a", "namespace": NS, "finalizers": ["machine.sapcloud.io/machine-controller-manager"]},
           "providerSpec": {"zone": "z1"},
           "nodeTemplate": node_template,
           "secretRef": {"name": "cloud", "namespace": NS}})
}

fn template(virtual_capacity: Value) -> Value {
    json!({"capacity": {"cpu": "2", "gpu": "0", "memory": "4Gi"},
           "instanceType": "m1", "region": "r1", "zone": "z1",
           "virtualCapacity": virtual_capacity})
}

/// A Running machine on its Ready Node.
fn running(world: &World) {
    world.server.insert(
        MACHINES,
        machine_json(
            "m-1",
            json!({"metadata": {"labels": {"node": "m-1"},
                                "finalizers": ["machine.sapcloud.io/machine-controller-manager"]},
                   "spec": {"providerID": "fake://m-1"},
                   "status": {"currentStatus": {"phase": "Running"},
                              "conditions": ready_node("m-1", "True")["status"]["conditions"].clone()}}),
        ),
    );
    let mut node = ready_node("m-1", "True");
    node["status"]["capacity"] = json!({"cpu": "4"});
    world.server.insert(NODES, node);
}

fn capacity(world: &World) -> Value {
    world.server.get(NODES, "m-1").unwrap()["status"]["capacity"].clone()
}

#[tokio::test]
async fn virtual_capacity_reaches_the_node_and_leaves_it_again() {
    let world = world();
    world
        .server
        .insert(CLASSES, class_with(template(json!({RESOURCE: "1234567"}))));
    running(&world);
    for _ in 0..4 {
        world.reconcile("m-1").await;
    }
    assert_eq!(capacity(&world)[RESOURCE], "1234567");
    assert_eq!(capacity(&world)["cpu"], "4");

    world
        .server
        .insert(CLASSES, class_with(template(json!({}))));
    for _ in 0..4 {
        world.reconcile("m-1").await;
    }
    assert!(capacity(&world)[RESOURCE].is_null(), "{}", capacity(&world));
    assert_eq!(capacity(&world)["cpu"], "4");
}

#[tokio::test]
async fn an_incomplete_node_template_holds_the_machine_back() {
    let world = world();
    world.server.insert(
        CLASSES,
        class_with(json!({"capacity": {"cpu": "2", "memory": "4Gi"}, "instanceType": "m1", "region": "r1"})),
    );
    world
        .server
        .insert(MACHINES, machine_json("m-1", json!({})));
    // The first reconcile puts the finalizer on; the next looks at the class.
    world
        .reconcile_until("m-1", 3, |w| {
            w.machine("m-1").unwrap()["metadata"]["finalizers"].is_array()
        })
        .await;
    let outcome = world.reconcile("m-1").await;
    assert!(outcome.failed);
    assert!(
        outcome
            .reason
            .contains("nodeTemplate.capacity.gpu: Required value")
            && outcome.reason.contains("nodeTemplate.zone: Required value"),
        "{outcome:?}"
    );
    assert!(
        world.driver.calls().is_empty(),
        "no VM for an invalid class"
    );
}
