//! Nodes without a live Machine, on the in-memory API server: a deleted Node deletes its
//! Machine, and the safety pass releases Nodes no Machine claims (MCM's node handlers and
//! AnnotateNodesUnmanagedByMCM).

mod support;

use serde_json::{Value, json};

use mcm_machine_controller::names::{NODE_FINALIZER, NOT_MANAGED_BY_MCM_ANNOTATION};
use mcm_machine_controller::node_lifecycle::{
    NodeUpkeepReport, delete_machine_of_deleted_node, release_unmanaged_nodes,
};
use support::*;

fn node_json(name: &str, age_seconds: i64, finalizer: bool, unmanaged: bool) -> Value {
    let mut node = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "creationTimestamp": ago(age_seconds)}});
    if finalizer {
        node["metadata"]["finalizers"] = json!([NODE_FINALIZER, "example.com/keep"]);
    }
    if unmanaged {
        node["metadata"]["annotations"] = json!({NOT_MANAGED_BY_MCM_ANNOTATION: "1"});
    }
    node
}

#[tokio::test]
async fn a_deleted_node_deletes_its_machine_and_no_other() {
    let world = world();
    for (machine, node) in [("m-1", "n-1"), ("m-2", "n-2")] {
        world.server.insert(
            MACHINES,
            machine_json(
                machine,
                json!({"metadata": {"labels": {"node": node},
                "finalizers": ["machine.sapcloud.io/machine-controller-manager"]}}),
            ),
        );
    }
    let machines = [
        world.get_machine("m-1").await,
        world.get_machine("m-2").await,
    ];
    let known: Vec<_> = machines.iter().collect();
    let node = serde_json::from_value(node_json("n-1", 3600, false, false)).unwrap();
    let deleted = delete_machine_of_deleted_node(&world.ctx, &known, &node)
        .await
        .unwrap();
    assert_eq!(deleted.as_deref(), Some("m-1"));
    assert!(world.machine("m-1").unwrap()["metadata"]["deletionTimestamp"].is_string());
    assert!(world.machine("m-2").unwrap()["metadata"]["deletionTimestamp"].is_null());

    // A Node marked not managed by MCM takes nothing with it.
    let unmanaged = serde_json::from_value(node_json("n-2", 3600, false, true)).unwrap();
    let deleted = delete_machine_of_deleted_node(&world.ctx, &known, &unmanaged)
        .await
        .unwrap();
    assert_eq!(deleted, None);
    assert!(world.machine("m-2").unwrap()["metadata"]["deletionTimestamp"].is_null());
}

#[tokio::test]
async fn nodes_no_machine_claims_are_released_once_old_enough() {
    let world = world();
    world.server.insert(
        MACHINES,
        machine_json("m-1", json!({"metadata": {"labels": {"node": "claimed"}}})),
    );
    world
        .server
        .insert(NODES, node_json("orphan", 3 * 3600, true, false));
    world
        .server
        .insert(NODES, node_json("young", 60, true, false));
    world
        .server
        .insert(NODES, node_json("claimed", 3 * 3600, true, true));

    let report = release_unmanaged_nodes(&world.ctx).await.unwrap();
    assert_eq!(
        report,
        NodeUpkeepReport {
            released: 1,
            reclaimed: 1
        }
    );
    let orphan = world.server.get(NODES, "orphan").unwrap();
    assert_eq!(
        orphan["metadata"]["finalizers"],
        json!(["example.com/keep"])
    );
    assert_eq!(
        orphan["metadata"]["annotations"][NOT_MANAGED_BY_MCM_ANNOTATION],
        "1"
    );
    let young = world.server.get(NODES, "young").unwrap();
    assert_eq!(
        young["metadata"]["finalizers"],
        json!([NODE_FINALIZER, "example.com/keep"])
    );
    let claimed = world.server.get(NODES, "claimed").unwrap();
    assert!(claimed["metadata"]["annotations"][NOT_MANAGED_BY_MCM_ANNOTATION].is_null());
    assert_eq!(
        claimed["metadata"]["finalizers"],
        json!([NODE_FINALIZER, "example.com/keep"])
    );

    // A second pass finds nothing left to do.
    let again = release_unmanaged_nodes(&world.ctx).await.unwrap();
    assert_eq!(again, NodeUpkeepReport::default());
}
