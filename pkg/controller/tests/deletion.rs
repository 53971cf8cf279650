//! The deletion flow, drain and orphan collection over the scripted driver and the
//! in-memory API server, standing for MCM's termination of a machine on a real cluster.

mod support;

use serde_json::{Value, json};

use mcm_machine_controller::machine::deletion::drain::PDB_RETRY;
use mcm_machine_controller::safety::{ApiServerWatch, collect_orphans};
use support::*;

const PODS_A: &str = "/api/v1/namespaces/app/pods";
const PODS_SYSTEM: &str = "/api/v1/namespaces/kube-system/pods";

fn running_machine(name: &str, extra: Value) -> Value {
    let mut machine = machine_json(
        name,
        json!({
            "metadata": {"finalizers": ["machine.sapcloud.io/machine-controller-manager"], "labels": {"node": name}},
            "spec": {"providerID": format!("fake://{name}")},
            "status": {"currentStatus": {"phase": "Running", "lastUpdateTime": ago(100)},
                       "lastOperation": {"type": "Create", "state": "Successful", "lastUpdateTime": ago(100)}}
        }),
    );
    json_patch::merge(&mut machine, &extra);
    machine
}

fn pod(name: &str, node: &str, extra: Value) -> Value {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "app"},
                         "spec": {"nodeName": node, "containers": []}, "status": {"phase": "Running"}});
    json_patch::merge(&mut pod, &extra);
    pod
}

/// Deletes a machine the way the API server does with a finalizer present.
fn mark_deleted(world: &World, name: &str, seconds_ago: i64) {
    let mut machine = world.machine(name).unwrap();
    machine["metadata"]["deletionTimestamp"] = json!(ago(seconds_ago));
    world.server.insert(MACHINES, machine);
}

fn description(world: &World, name: &str) -> String {
    world
        .status(name, "/lastOperation/description")
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn deletion_drains_deletes_vm_and_node_then_releases_the_machine() {
    let world = world();
    world.driver.add_vm("m-1");
    world
        .server
        .insert(MACHINES, running_machine("m-1", json!({})));
    let mut node = ready_node("m-1", "True");
    node["metadata"]["finalizers"] = json!(["node.machine.sapcloud.io/machine-controller"]);
    world.server.insert(NODES, node);
    world.server.insert(PODS_A, pod("web", "m-1", json!({})));
    world
        .server
        .insert(PODS_A, pod("elsewhere", "m-2", json!({})));
    world.server.insert(
        PODS_SYSTEM,
        pod("agent", "m-1", json!({"metadata": {"namespace": "kube-system", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "u", "controller": true}]}})),
    );
    mark_deleted(&world, "m-1", 5);

    let mut steps = Vec::new();
    for _ in 0..12 {
        if world.machine("m-1").is_none() {
            break;
        }
        world.reconcile("m-1").await;
        if world.machine("m-1").is_some() {
            steps.push(description(&world, "m-1"));
        }
    }
    assert!(
        world.machine("m-1").is_none(),
        "machine released; steps: {steps:#?}"
    );
    let expected_order = [
        "Set machine status to termination. Now, getting VM Status",
        "Initiate node drain",
        "Drain successful. Initiate VM deletion",
        "VM deletion was successful. Initiate node object deletion",
        "Deletion of Node Object \"m-1\" is successful. Initiate machine object finalizer removal",
    ];
    let mut position = 0;
    for step in &steps {
        if position < expected_order.len() && step == expected_order[position] {
            position += 1;
        }
    }
    assert_eq!(
        position,
        expected_order.len(),
        "steps out of order: {steps:#?}"
    );

    assert!(world.driver.vms().is_empty(), "VM deleted");
    assert!(
        world.server.get(NODES, "m-1").is_none(),
        "node deleted (finalizer removed first)"
    );
    assert!(world.server.get(PODS_A, "web").is_none(), "pod evicted");
    assert!(
        world.server.get(PODS_A, "elsewhere").is_some(),
        "other nodes' pods untouched"
    );
    assert!(
        world.server.get(PODS_SYSTEM, "agent").is_some(),
        "DaemonSet pods are not evicted"
    );
    let lines = world.server.request_lines();
    assert!(
        lines.contains(&format!("POST {PODS_A}/web/eviction")),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&format!("PATCH {NODES}/m-1")),
        "node cordoned"
    );
    assert!(
        lines.contains(&format!("PATCH {NODES}/m-1/status")),
        "Terminating condition set"
    );
    let cordon = world
        .server
        .requests()
        .into_iter()
        .find(|r| r.line() == format!("PATCH {NODES}/m-1"))
        .unwrap();
    assert_eq!(cordon.body.unwrap()["spec"]["unschedulable"], true);
}

#[tokio::test]
async fn a_node_being_deleted_deletes_its_machine_and_is_released() {
    let world = world();
    world.driver.add_vm("m-1");
    world
        .server
        .insert(MACHINES, running_machine("m-1", json!({})));
    // Someone deletes the Node: the sidecar's finalizer holds it Terminating.
    let mut node = ready_node("m-1", "True");
    node["metadata"]["finalizers"] = json!(["node.machine.sapcloud.io/machine-controller"]);
    node["metadata"]["deletionTimestamp"] = json!(ago(1));
    world.server.insert(NODES, node);

    // The Machine is deleted (MCM's triggerMachineDeletion), and its deletion flow removes
    // the VM and releases the Node.
    world.reconcile("m-1").await;
    let machine = world.machine("m-1").expect("held by its finalizer");
    assert!(
        machine["metadata"]["deletionTimestamp"].is_string(),
        "machine marked for deletion: {machine:#}"
    );
    world
        .reconcile_until("m-1", 12, |w| w.machine("m-1").is_none())
        .await;
    assert!(world.driver.vms().is_empty(), "VM deleted");
    assert!(
        world.server.get(NODES, "m-1").is_none(),
        "node released, not left Terminating"
    );
}

#[tokio::test]
async fn a_pod_disruption_budget_holds_the_drain_until_the_drain_timeout() {
    let world = world_with(&["--machine-drain-timeout=10m"], true);
    world.driver.add_vm("m-1");
    world
        .server
        .insert(MACHINES, running_machine("m-1", json!({})));
    world.server.insert(NODES, ready_node("m-1", "True"));
    world
        .server
        .insert(PODS_A, pod("guarded", "m-1", json!({})));
    world.server.set_fault(|request, _| {
        request.path.ends_with("/eviction").then(|| {
            kube_fake::Fault::Status(
                429,
                "Cannot evict pod as it would violate the pod's disruption budget.".into(),
            )
        })
    });
    mark_deleted(&world, "m-1", 5);
    world
        .reconcile_until("m-1", 4, |w| description(w, "m-1") == "Initiate node drain")
        .await;
    let requeue = world.reconcile("m-1").await;
    assert_eq!(requeue.after, PDB_RETRY);
    assert!(
        description(&world, "m-1").contains("1 blocked by PodDisruptionBudget"),
        "{}",
        description(&world, "m-1")
    );
    assert!(world.server.get(PODS_A, "guarded").is_some());
    assert_eq!(world.driver.vms(), ["m-1"], "VM kept while draining");

    // Past the drain timeout the pod is deleted without eviction and deletion goes on.
    let mut machine = world.machine("m-1").unwrap();
    machine["metadata"]["deletionTimestamp"] = json!(ago(3600));
    world.server.insert(MACHINES, machine);
    world.reconcile("m-1").await;
    assert_eq!(
        description(&world, "m-1"),
        "Force Drain successful. Delete Volume Attachments"
    );
    assert!(world.server.get(PODS_A, "guarded").is_none());
    world
        .reconcile_until("m-1", 8, |w| w.machine("m-1").is_none())
        .await;
    assert!(world.driver.vms().is_empty());
}

#[tokio::test]
async fn vm_deletion_failures_are_recorded_and_retried() {
    let world = world();
    world.driver.add_vm("m-1");
    world.server.insert(
        MACHINES,
        running_machine("m-1", json!({"metadata": {"deletionTimestamp": ago(5)},
            "status": {"currentStatus": {"phase": "Terminating"},
                       "lastOperation": {"description": "Drain successful. Initiate VM deletion", "type": "Delete", "state": "Processing"}}})),
    );
    world.driver.fail_next(
        "DeleteMachine",
        code_error(mcm_provider_kubevirt::MachineCode::Unavailable),
    );
    let requeue = world.reconcile("m-1").await;
    assert!(requeue.failed);
    assert_eq!(requeue.after, mcm_machine_controller::error::retry::SHORT);
    assert!(
        description(&world, "m-1")
            .starts_with("VM deletion failed due to - machine codes error: code = [Unavailable]")
    );
    assert!(description(&world, "m-1").ends_with("Initiate VM deletion"));
    world.reconcile("m-1").await;
    assert!(world.driver.vms().is_empty());
    assert_eq!(
        description(&world, "m-1"),
        "VM deletion was successful. Initiate node object deletion"
    );
}

#[tokio::test]
async fn orphan_vms_are_deleted_and_machines_vms_kept() {
    let world = world();
    world.driver.add_vm("m-1");
    world.driver.add_vm("orphan");
    world
        .server
        .insert(MACHINES, running_machine("m-1", json!({})));
    let report = collect_orphans(&world.ctx).await.unwrap();
    assert_eq!((report.listed, report.deleted, report.failed), (2, 1, 0));
    assert_eq!(world.driver.vms(), ["m-1"]);
    let deleted: Vec<_> = world
        .driver
        .calls()
        .into_iter()
        .filter(|c| c.operation == "DeleteMachine")
        .map(|c| c.machine)
        .collect();
    assert_eq!(deleted, ["orphan"]);
}

#[tokio::test]
async fn unreachable_api_server_freezes_and_recovery_resets_unknown_machines() {
    let world = world_with(&["--machine-safety-apiserver-statuscheck-timeout=0s"], true);
    world.server.insert(
        MACHINES,
        running_machine(
            "m-1",
            json!({"status": {"currentStatus": {"phase": "Unknown"}}}),
        ),
    );
    world.server.set_fault(|_, _| Some(kube_fake::Fault::Drop));
    let mut watch = ApiServerWatch::default();
    watch.check(&world.ctx).await;
    watch.check(&world.ctx).await;
    assert!(world.ctx.is_frozen());
    world.server.clear_fault();
    watch.check(&world.ctx).await;
    assert!(!world.ctx.is_frozen());
    assert_eq!(world.status("m-1", "/currentStatus/phase"), "Running");
    assert_eq!(
        world.status("m-1", "/lastOperation/description"),
        "Machine Health Timeout was reset due to APIServer being unreachable"
    );
}

#[tokio::test]
async fn class_and_secret_finalizers_follow_references() {
    let world = world();
    let class: mcm_provider_kubevirt::mcm::MachineClass =
        world.ctx.machine_classes().get("class-a").await.unwrap();
    // No machine refers to the class: its finalizer goes.
    mcm_machine_controller::machine_class::reconcile_machine_class(&world.ctx, &class)
        .await
        .unwrap();
    assert_eq!(
        world.server.get(CLASSES, "class-a").unwrap()["metadata"]["finalizers"],
        json!([])
    );
    world
        .server
        .insert(MACHINES, machine_json("m-1", json!({})));
    let class = world.ctx.machine_classes().get("class-a").await.unwrap();
    mcm_machine_controller::machine_class::reconcile_machine_class(&world.ctx, &class)
        .await
        .unwrap();
    assert_eq!(
        world.server.get(CLASSES, "class-a").unwrap()["metadata"]["finalizers"],
        json!(["machine.sapcloud.io/machine-controller-manager"])
    );

    // The class reconcile put the finalizer on its Secret too; a Secret reconcile keeps it.
    assert_eq!(
        world.server.get(SECRETS, "cloud").unwrap()["metadata"]["finalizers"],
        json!(["machine.sapcloud.io/machine-controller"])
    );
    let secret = world.ctx.secrets_in(NS).get("cloud").await.unwrap();
    mcm_machine_controller::secrets::reconcile_secret(&world.ctx, &secret)
        .await
        .unwrap();
    assert_eq!(
        world.server.get(SECRETS, "cloud").unwrap()["metadata"]["finalizers"],
        json!(["machine.sapcloud.io/machine-controller"])
    );
    world.server.insert(SECRETS, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "unrelated", "namespace": NS, "finalizers": ["machine.sapcloud.io/machine-controller"]}}));
    let secret = world.ctx.secrets_in(NS).get("unrelated").await.unwrap();
    mcm_machine_controller::secrets::reconcile_secret(&world.ctx, &secret)
        .await
        .unwrap();
    assert_eq!(
        world.server.get(SECRETS, "unrelated").unwrap()["metadata"]["finalizers"],
        json!([])
    );

    // The last machine goes and the class is deleted: class and Secret are released together.
    world.server.remove(MACHINES, "m-1");
    let mut class = world.server.get(CLASSES, "class-a").unwrap();
    class["metadata"]["deletionTimestamp"] = json!(ago(1));
    world.server.insert(CLASSES, class);
    let class = world.ctx.machine_classes().get("class-a").await.unwrap();
    mcm_machine_controller::machine_class::reconcile_machine_class(&world.ctx, &class)
        .await
        .unwrap();
    assert!(world.server.get(CLASSES, "class-a").is_none());
    assert_eq!(
        world.server.get(SECRETS, "cloud").unwrap()["metadata"]["finalizers"],
        json!([])
    );
}
