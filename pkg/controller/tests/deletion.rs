//! The deletion flow, drain and orphan collection over the scripted driver and the
//! in-memory API server, standing for MCM's termination of a machine on a real cluster.

mod support;

use serde_json::{Value, json};

use mcm_machine_controller::machine::deletion::drain::PDB_RETRY;
use mcm_machine_controller::names::DRAIN_STATE_ANNOTATION;
use mcm_machine_controller::safety::{ApiServerWatch, collect_orphans};
use support::*;

const PODS_A: &str = "/api/v1/namespaces/app/pods";
const PODS_SYSTEM: &str = "/api/v1/namespaces/kube-system/pods";
const CLAIMS_A: &str = "/api/v1/namespaces/app/persistentvolumeclaims";
const VOLUMES: &str = "/api/v1/persistentvolumes";
const BUDGETS_A: &str = "/apis/policy/v1/namespaces/app/poddisruptionbudgets";

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
    // Terminating is written, then the drain's wait for the evicted pod; the steps
    // before and after it go through without a write of their own (MCM writes each and
    // requeues).
    assert_eq!(
        steps,
        [
            "Set machine status to termination. Now, getting VM Status",
            "Drain in progress - 1 pods remaining (0 blocked by PodDisruptionBudget), 0 volumes attached. Initiate node drain",
        ]
    );
    let machine_writes: Vec<String> = world
        .server
        .request_lines()
        .into_iter()
        .filter(|line| !line.starts_with("GET") && line.contains("/machines/m-1"))
        .collect();
    assert_eq!(
        machine_writes,
        [
            format!("PUT {MACHINES}/m-1/status"),
            format!("PUT {MACHINES}/m-1/status"),
            format!("PUT {MACHINES}/m-1"),
        ],
        "the two status writes and the finalizer's removal"
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
    let requeues = world
        .reconcile_until("m-1", 4, |w| {
            description(w, "m-1").ends_with("Initiate node drain")
        })
        .await;
    assert_eq!(requeues.last().map(|r| r.after), Some(PDB_RETRY));
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
    assert!(world.server.get(PODS_A, "guarded").is_none());
    // The forced drain, the VM, the Node and the finalizer in that same reconcile.
    assert!(world.machine("m-1").is_none(), "machine released");
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
    // The retry deletes the VM and goes on: no Node, the finalizer, released.
    world.reconcile("m-1").await;
    assert!(world.driver.vms().is_empty());
    assert!(world.machine("m-1").is_none(), "machine released");
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

// --- Drain as MCM's: evict retries, volumes one at a time, budgets, Terminating ---------

/// A deleted machine "m-1" in the drain step, its node and VM.
async fn draining(world: &World, machine_extra: Value, node: Value) {
    world.driver.add_vm("m-1");
    world
        .server
        .insert(MACHINES, running_machine("m-1", machine_extra));
    world.server.insert(NODES, node);
    mark_deleted(world, "m-1", 5);
    // The first drain pass runs in the reconcile that finds the node.
    world
        .reconcile_until("m-1", 4, |w| {
            description(w, "m-1").ends_with("Initiate node drain")
        })
        .await;
}

/// Every eviction is refused, as a PodDisruptionBudget refuses it.
fn refuse_evictions(world: &World) {
    world.server.set_fault(|request, _| {
        request.path.ends_with("/eviction").then(|| {
            kube_fake::Fault::Status(
                429,
                "Cannot evict pod as it would violate the pod's disruption budget.".into(),
            )
        })
    });
}

/// The pods evictions were asked for, in order.
fn evictions(world: &World) -> Vec<String> {
    world
        .server
        .request_lines()
        .iter()
        .filter_map(|line| line.strip_prefix(&format!("POST {PODS_A}/")))
        .filter_map(|rest| rest.strip_suffix("/eviction"))
        .map(str::to_owned)
        .collect()
}

fn drain_state(world: &World) -> Option<Value> {
    let machine = world.machine("m-1")?;
    let text = machine["metadata"]["annotations"][DRAIN_STATE_ANNOTATION].as_str()?;
    serde_json::from_str(text).ok()
}

/// Lets MCM's 20s between evictions pass for the refusals recorded so far.
fn age_refusals(world: &World) {
    let mut machine = world.machine("m-1").unwrap();
    let mut state = drain_state(world).expect("refusals recorded");
    for refusals in state["refused"].as_object_mut().unwrap().values_mut() {
        refusals["last"] = json!(ago(21));
    }
    machine["metadata"]["annotations"][DRAIN_STATE_ANNOTATION] = json!(state.to_string());
    world.server.insert(MACHINES, machine);
}

/// A pod on m-1 with a claim bound to KubeVirt volume `volume` (its claim and volume too).
fn pod_with_volume(world: &World, name: &str, priority: i32, volume: &str) {
    let claim = format!("data-{name}");
    world.server.insert(
        CLAIMS_A,
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": claim, "namespace": "app"}, "spec": {"volumeName": volume}}),
    );
    world.server.insert(
        VOLUMES,
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume},
               "spec": {"csi": {"driver": "csi.kubevirt.io", "volumeHandle": volume}}}),
    );
    world.server.insert(
        PODS_A,
        pod(
            name,
            "m-1",
            json!({"spec": {"priority": priority, "terminationGracePeriodSeconds": 0,
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}}),
        ),
    );
}

/// The node lists these volumes as attached (the attach/detach controller's view).
fn attached(world: &World, volumes: &[&str]) {
    let node = world.server.get(NODES, "m-1").unwrap();
    world.server.insert(NODES, with_attached(node, volumes));
}

fn with_attached(mut node: Value, volumes: &[&str]) -> Value {
    node["status"]["volumesAttached"] = volumes
        .iter()
        .map(
            |v| json!({"name": format!("kubernetes.io/csi/csi.kubevirt.io^{v}"), "devicePath": ""}),
        )
        .collect();
    node
}

#[tokio::test]
async fn a_pod_refused_max_evict_retries_times_is_deleted() {
    let world = world();
    world
        .server
        .insert(PODS_A, pod("guarded", "m-1", json!({})));
    refuse_evictions(&world);
    // The machine's maxEvictRetries wins over the flag (360).
    draining(
        &world,
        json!({"spec": {"maxEvictRetries": 2}}),
        ready_node("m-1", "True"),
    )
    .await;

    world.reconcile("m-1").await;
    let again = world.reconcile("m-1").await;
    assert_eq!(again.after, PDB_RETRY);
    assert_eq!(evictions(&world), ["guarded"], "the next one 20s later");
    age_refusals(&world);
    world.reconcile("m-1").await;
    assert_eq!(evictions(&world), ["guarded", "guarded"]);
    assert!(world.server.get(PODS_A, "guarded").is_some());

    // Refused twice: deleted without grace, long before the drain timeout.
    age_refusals(&world);
    world.reconcile("m-1").await;
    assert_eq!(evictions(&world).len(), 2);
    assert!(world.server.get(PODS_A, "guarded").is_none());
    let delete = world
        .server
        .requests()
        .into_iter()
        .find(|r| r.line() == format!("DELETE {PODS_A}/guarded"))
        .expect("pod deleted");
    assert_eq!(delete.body.unwrap()["gracePeriodSeconds"], 0);
    // Nothing left to drain: the deletion goes through.
    world.reconcile("m-1").await;
    assert!(world.machine("m-1").is_none(), "machine released");
}

#[tokio::test]
async fn the_max_evict_retries_flag_applies_when_the_machine_sets_none() {
    let world = world_with(&["--machine-max-evict-retries=0"], true);
    world
        .server
        .insert(PODS_A, pod("guarded", "m-1", json!({})));
    refuse_evictions(&world);
    draining(&world, json!({}), ready_node("m-1", "True")).await;
    world.reconcile("m-1").await;
    assert!(evictions(&world).is_empty(), "no eviction to try");
    assert!(world.server.get(PODS_A, "guarded").is_none());
}

#[tokio::test]
async fn pods_with_volumes_go_one_at_a_time_by_priority_after_the_volumes_detach() {
    let world = world();
    world.server.insert(PODS_A, pod("web", "m-1", json!({})));
    pod_with_volume(&world, "db-low", 1, "vol-low");
    pod_with_volume(&world, "db-high", 100, "vol-high");
    let node = with_attached(ready_node("m-1", "True"), &["vol-low", "vol-high"]);
    draining(&world, json!({}), node).await;

    // Pods without volumes at once; of those with, the highest priority only.
    assert_eq!(evictions(&world), ["web", "db-high"]);
    // db-high is gone, but the node still lists its volume: db-low waits.
    world.reconcile("m-1").await;
    assert_eq!(evictions(&world), ["web", "db-high"]);
    // Still in the drain step. The progress text is not rewritten for "1 pod, 1 volume"
    // after "3 pods": MCM's similarity rule takes the two descriptions as the same.
    let waiting = description(&world, "m-1");
    assert!(
        waiting.starts_with("Drain in progress - ") && waiting.ends_with("Initiate node drain"),
        "{waiting}"
    );
    attached(&world, &["vol-low"]);
    world.reconcile("m-1").await;
    assert_eq!(evictions(&world), ["web", "db-high", "db-low"]);

    // No pod left on the node, yet its last volume is still attached.
    let waiting = world.reconcile("m-1").await;
    assert_eq!(waiting.after, mcm_machine_controller::error::retry::SHORT);
    // Still the drain step (the progress text stays as first written: see above).
    assert!(
        description(&world, "m-1").ends_with("Initiate node drain"),
        "{}",
        description(&world, "m-1")
    );
    attached(&world, &[]);
    world.reconcile("m-1").await;
    assert!(world.machine("m-1").is_none(), "drained, then released");
}

#[tokio::test]
async fn the_wait_for_detachment_ends_with_the_pv_detach_timeout() {
    let world = world_with(&["--machine-pv-detach-timeout=0s"], true);
    pod_with_volume(&world, "db", 0, "vol-db");
    pod_with_volume(&world, "cache", 0, "vol-cache");
    let node = with_attached(ready_node("m-1", "True"), &["vol-db", "vol-cache"]);
    // With no time to wait, the first pass evicts one pod, finds its volume still
    // attached, fails the drain (MCM's error) and moves on to the next pod; the retry does
    // not wait for the first pod's volume again.
    draining(&world, json!({}), node).await;
    assert_eq!(
        description(&world, "m-1"),
        "Drain failed due to - timeout while waiting for PVs to detach from node. Will retry in next sync. Initiate node drain"
    );
    assert_eq!(world.status("m-1", "/lastOperation/state"), "Failed");
    assert_eq!(evictions(&world).len(), 2);
    world
        .reconcile_until("m-1", 3, |w| w.machine("m-1").is_none())
        .await;
}

#[tokio::test]
async fn a_budget_that_can_never_allow_the_eviction_fails_the_drain_at_once() {
    let world = world();
    world.server.insert(
        PODS_A,
        pod(
            "guarded",
            "m-1",
            json!({"metadata": {"labels": {"app": "web"}}}),
        ),
    );
    world.server.insert(
        BUDGETS_A,
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
               "metadata": {"name": "web", "namespace": "app", "generation": 1},
               "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "web"}}},
               "status": {"observedGeneration": 1, "expectedPods": 1, "currentHealthy": 1,
                          "desiredHealthy": 1, "disruptionsAllowed": 0}}),
    );
    refuse_evictions(&world);
    draining(&world, json!({}), ready_node("m-1", "True")).await;

    let failed = world.reconcile("m-1").await;
    assert!(failed.failed);
    assert_eq!(
        description(&world, "m-1"),
        "Drain failed due to - error while evicting pod \"guarded\": pod disruption budget app/web is misconfigured and requires zero voluntary evictions. Will retry in next sync. Initiate node drain"
    );
    assert_eq!(world.status("m-1", "/lastOperation/state"), "Failed");

    // A budget short of healthy pods may allow it later: the eviction waits its turn.
    let mut budget = world.server.get(BUDGETS_A, "web").unwrap();
    budget["status"]["currentHealthy"] = json!(0);
    world.server.insert(BUDGETS_A, budget);
    let blocked = world.reconcile("m-1").await;
    assert!(!blocked.failed);
    assert!(description(&world, "m-1").contains("1 blocked by PodDisruptionBudget"));
}

fn terminating_condition_of(world: &World, node: &str) -> Value {
    world.server.get(NODES, node).unwrap()["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Terminating")
        .cloned()
        .expect("Terminating condition")
}

#[tokio::test]
async fn the_terminating_condition_keeps_an_existing_reason_and_carries_mcms_message() {
    // A pod the drain cannot evict keeps the Node (and its condition) in place.
    let world = world();
    world
        .server
        .insert(PODS_A, pod("guarded", "m-1", json!({})));
    refuse_evictions(&world);
    draining(&world, json!({}), ready_node("m-1", "True")).await;
    world.reconcile("m-1").await;
    let fresh = terminating_condition_of(&world, "m-1");
    assert_eq!(
        (&fresh["status"], &fresh["reason"], &fresh["message"]),
        (
            &json!("True"),
            &json!("ScaleDown"),
            &json!("Machine Controller is scaling down machine")
        )
    );

    // A node already Terminating because its machine failed keeps saying so.
    let world = support::world();
    world
        .server
        .insert(PODS_A, pod("guarded", "m-1", json!({})));
    refuse_evictions(&world);
    let mut node = ready_node("m-1", "False");
    node["status"]["conditions"].as_array_mut().unwrap().push(
        json!({"type": "Terminating", "status": "True", "reason": "Unhealthy",
                     "message": "Machine Controller is terminating failed machine",
                     "lastTransitionTime": ago(60)}),
    );
    draining(&world, json!({}), node).await;
    world.reconcile("m-1").await;
    let kept = terminating_condition_of(&world, "m-1");
    assert_eq!(
        (&kept["reason"], &kept["message"]),
        (
            &json!("Unhealthy"),
            &json!("Machine Controller is terminating failed machine")
        )
    );
}
