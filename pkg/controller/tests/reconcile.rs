//! The machine reconcile over a scripted driver and kube's real client against the
//! in-memory API server. Each test stands for what MCM's machine controller does with a
//! real API server: the objects it leaves and the requests it sends are asserted.

mod support;

use std::time::Duration;

use serde_json::json;

use mcm_machine_controller::error::retry;
use mcm_provider_kubevirt::{MachineCode, MachineError};
use support::*;

fn created(world: &World, name: &str) -> bool {
    world.status(name, "/currentStatus/phase") == "Pending"
}

#[tokio::test]
async fn creation_adds_finalizer_creates_vm_records_node_and_goes_pending() {
    let world = world();
    world
        .server
        .insert(MACHINES, machine_json("m-1", json!({})));
    let requeues = world.reconcile_until("m-1", 6, |w| created(w, "m-1")).await;
    assert!(
        requeues.iter().all(|r| r.after == retry::SHORT),
        "{requeues:?}"
    );

    let machine = world.machine("m-1").unwrap();
    assert_eq!(
        machine["metadata"]["finalizers"],
        json!(["machine.sapcloud.io/machine-controller-manager"])
    );
    assert_eq!(machine["metadata"]["labels"]["node"], "m-1");
    assert_eq!(
        machine["metadata"]["annotations"]["machinepriority.machine.sapcloud.io"],
        "3"
    );
    assert_eq!(machine["spec"]["providerID"], "fake://m-1");
    assert_eq!(
        world.status("m-1", "/lastOperation/description"),
        "Creating machine on cloud provider"
    );
    assert_eq!(world.status("m-1", "/lastOperation/state"), "Processing");
    assert_eq!(world.status("m-1", "/currentStatus/timeoutActive"), true);
    assert_eq!(world.driver.vms(), ["m-1"]);
    let creates: Vec<_> = world
        .driver
        .calls()
        .into_iter()
        .filter(|c| c.operation == "CreateMachine")
        .collect();
    assert_eq!(creates.len(), 1, "exactly one VM create");

    // userData reached the driver with both placeholders substituted, the token being
    // the one stored in the target's kube-system.
    // Token id: hex of the name's last bytes ("m-1" -> 6d2d31), as MCM derives it.
    let token = world
        .server
        .get(KUBE_SYSTEM_SECRETS, "bootstrap-token-6d2d31")
        .expect("bootstrap token secret");
    assert_eq!(token["type"], "bootstrap.kubernetes.io/token");
    assert!(
        !creates[0].user_data.contains("<<"),
        "{}",
        creates[0].user_data
    );
    assert!(creates[0].user_data.contains(" m-1]"));
    // The status write went through /status.
    let lines = world.server.request_lines();
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("PUT {MACHINES}/m-1/status")),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn an_unchanged_status_is_not_written_again() {
    let world = world();
    world
        .server
        .insert(MACHINES, machine_json("m-1", json!({})));
    world.reconcile_until("m-1", 6, |w| created(w, "m-1")).await;
    world.server.clear_requests();
    let requeue = world.reconcile("m-1").await;
    assert_eq!(
        requeue.after,
        Duration::from_secs(60),
        "pending machines recheck their creation timeout"
    );
    let writes: Vec<_> = world
        .server
        .request_lines()
        .into_iter()
        .filter(|l| l.starts_with("PUT"))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
}

#[tokio::test]
async fn create_errors_set_crashloop_with_mcm_code_and_retry() {
    let cases = [
        (MachineCode::ResourceExhausted, Duration::from_secs(17)),
        (MachineCode::Unavailable, retry::SHORT),
        (MachineCode::Aborted, retry::SHORT),
        (MachineCode::DeadlineExceeded, retry::SHORT),
        (MachineCode::Unknown, retry::SHORT),
        (MachineCode::InvalidArgument, retry::MEDIUM),
        (MachineCode::Internal, retry::MEDIUM),
        (MachineCode::PermissionDenied, retry::MEDIUM),
    ];
    for (code, after) in cases {
        let world = world_with(&["--resource-exhausted-retry=17s"], true);
        world.server.insert(MACHINES, machine_json("m-1", json!({"metadata": {"finalizers": ["machine.sapcloud.io/machine-controller-manager"]}})));
        world.driver.fail_next("CreateMachine", code_error(code));
        let requeue = world.reconcile("m-1").await;
        assert_eq!(requeue.after, after, "{code}");
        assert!(requeue.failed);
        assert_eq!(
            world.status("m-1", "/currentStatus/phase"),
            "CrashLoopBackOff",
            "{code}"
        );
        assert_eq!(world.status("m-1", "/lastOperation/errorCode"), code.name());
        assert_eq!(world.status("m-1", "/lastOperation/state"), "Failed");
        assert_eq!(world.status("m-1", "/lastOperation/type"), "Create");
        let description = world.status("m-1", "/lastOperation/description");
        assert!(
            description.as_str().unwrap().starts_with(&format!(
                "Cloud provider message - machine codes error: code = [{}]",
                code.name()
            )),
            "{description}"
        );
        assert!(world.driver.vms().is_empty());
        // The next reconcile retries the creation from CrashLoopBackOff and succeeds.
        world.reconcile_until("m-1", 4, |w| created(w, "m-1")).await;
        assert_eq!(world.driver.vms(), ["m-1"], "{code}");
    }
}

#[tokio::test]
async fn create_errors_after_the_creation_timeout_fail_the_machine() {
    let world = world_with(&["--machine-creation-timeout=20m"], true);
    world.server.insert(
        MACHINES,
        machine_json("m-1", json!({"metadata": {"creationTimestamp": ago(3600), "finalizers": ["machine.sapcloud.io/machine-controller-manager"]}})),
    );
    world
        .driver
        .fail_next("CreateMachine", code_error(MachineCode::Internal));
    world.reconcile("m-1").await;
    assert_eq!(world.status("m-1", "/currentStatus/phase"), "Failed");
}

#[tokio::test]
async fn status_errors_other_than_not_found_never_create() {
    let world = world();
    world.server.insert(
        MACHINES,
        machine_json(
            "m-1",
            json!({"metadata": {"finalizers": ["machine.sapcloud.io/machine-controller-manager"]}}),
        ),
    );
    world
        .driver
        .fail_next("GetMachineStatus", code_error(MachineCode::Unavailable));
    let requeue = world.reconcile("m-1").await;
    assert_eq!(requeue.after, retry::SHORT);
    assert_eq!(world.driver.operations(), ["GetMachineStatus"]);
    assert_eq!(
        world.status("m-1", "/lastOperation/errorCode"),
        "Unavailable"
    );
}

#[tokio::test]
async fn uninitialized_vms_are_initialized_with_the_status_response() {
    let world = world();
    world.server.insert(
        MACHINES,
        machine_json(
            "m-1",
            json!({"metadata": {"finalizers": ["machine.sapcloud.io/machine-controller-manager"]}}),
        ),
    );
    world.driver.fail_next(
        "GetMachineStatus",
        mcm_provider_kubevirt::MachineError::uninitialized(
            "created, not initialized",
            mcm_provider_kubevirt::driver::GetMachineStatusResponse {
                provider_id: "fake://m-1".into(),
                node_name: "m-1".into(),
                addresses: vec![],
            },
        ),
    );
    world.reconcile("m-1").await;
    assert_eq!(
        world.driver.operations(),
        ["GetMachineStatus", "InitializeMachine"]
    );
    assert_eq!(
        world.machine("m-1").unwrap()["spec"]["providerID"],
        "fake://m-1"
    );
}

#[tokio::test]
async fn a_missing_class_finalizer_holds_the_machine() {
    let world = world();
    let mut class = world.server.get(CLASSES, "class-a").unwrap();
    class["metadata"]["finalizers"] = json!([]);
    world.server.insert(CLASSES, class);
    world.server.insert(
        MACHINES,
        machine_json(
            "m-1",
            json!({"metadata": {"finalizers": ["machine.sapcloud.io/machine-controller-manager"]}}),
        ),
    );
    let requeue = world.reconcile("m-1").await;
    assert!(
        requeue.reason.contains("has no finalizers set"),
        "{requeue:?}"
    );
    assert!(world.driver.calls().is_empty());
}

#[tokio::test]
async fn healthy_node_makes_the_machine_running_and_syncs_the_node() {
    let world = world();
    world.server.insert(
        MACHINES,
        machine_json(
            "m-1",
            json!({"spec": {"nodeTemplate": {"metadata": {"labels": {"pool": "a"}}}}}),
        ),
    );
    world.reconcile_until("m-1", 6, |w| created(w, "m-1")).await;
    assert_eq!(world.server.names(KUBE_SYSTEM_SECRETS).len(), 1);
    world.server.insert(NODES, ready_node("m-1", "True"));
    world
        .reconcile_until("m-1", 3, |w| {
            w.status("m-1", "/currentStatus/phase") == "Running"
        })
        .await;
    assert!(
        world
            .status("m-1", "/lastOperation/description")
            .as_str()
            .unwrap()
            .starts_with("Machine m-1 successfully joined the cluster in")
    );
    assert_eq!(world.status("m-1", "/conditions/0/type"), "Ready");
    assert!(
        world.server.names(KUBE_SYSTEM_SECRETS).is_empty(),
        "bootstrap token deleted after join"
    );
    assert!(world.machine("m-1").unwrap()["metadata"]["annotations"]["node.machine.sapcloud.io/machine-join-duration"].is_string());
    world.reconcile("m-1").await;
    let node = world.server.get(NODES, "m-1").unwrap();
    assert_eq!(
        node["metadata"]["labels"]["node.gardener.cloud/machine-name"],
        "m-1"
    );
    assert_eq!(node["metadata"]["labels"]["pool"], "a");
    assert_eq!(
        node["metadata"]["finalizers"],
        json!(["node.machine.sapcloud.io/machine-controller"])
    );

    // The node turns NotReady: Unknown, then Failed once the health timeout passed.
    world.server.insert(NODES, {
        let mut n = world.server.get(NODES, "m-1").unwrap();
        n["status"] = ready_node("m-1", "False")["status"].clone();
        n
    });
    world.reconcile("m-1").await;
    assert_eq!(world.status("m-1", "/currentStatus/phase"), "Unknown");
    let mut machine = world.machine("m-1").unwrap();
    machine["status"]["currentStatus"]["lastUpdateTime"] = json!(ago(3600));
    world.server.insert(MACHINES, machine);
    world.reconcile("m-1").await;
    assert_eq!(world.status("m-1", "/currentStatus/phase"), "Failed");
    assert!(
        world
            .status("m-1", "/lastOperation/description")
            .as_str()
            .unwrap()
            .contains("health checks failing")
    );
}

#[tokio::test]
async fn pending_past_the_creation_timeout_fails() {
    let world = world_with(&["--machine-creation-timeout=5m"], true);
    world.server.insert(
        MACHINES,
        machine_json("m-1", json!({
            "metadata": {"creationTimestamp": ago(600), "finalizers": ["machine.sapcloud.io/machine-controller-manager"], "labels": {"node": "m-1"}},
            "spec": {"providerID": "fake://m-1"},
            "status": {"currentStatus": {"phase": "Pending"}, "lastOperation": {"type": "Create", "state": "Processing", "lastUpdateTime": ago(5)}}
        })),
    );
    world.reconcile("m-1").await;
    assert_eq!(world.status("m-1", "/currentStatus/phase"), "Failed");
    assert_eq!(
        world.status("m-1", "/lastOperation/description"),
        "Machine m-1 failed to join the cluster in 5m0s minutes."
    );
}

#[tokio::test]
async fn frozen_controller_leaves_machines_alone() {
    let world = world();
    world.server.insert(
        MACHINES,
        machine_json(
            "m-1",
            json!({"metadata": {"finalizers": ["machine.sapcloud.io/machine-controller-manager"]}}),
        ),
    );
    world.ctx.set_frozen(true);
    let requeue = world.reconcile("m-1").await;
    assert!(requeue.reason.contains("frozen"));
    assert_eq!(requeue.after, retry::LONG);
    assert!(world.driver.calls().is_empty());
}

#[tokio::test]
async fn without_a_target_cluster_machines_become_available() {
    let world = world_with(
        &["--target-kubeconfig=none", "--control-kubeconfig=/x"],
        false,
    );
    world
        .server
        .insert(MACHINES, machine_json("m-1", json!({})));
    world
        .reconcile_until("m-1", 6, |w| {
            w.status("m-1", "/currentStatus/phase") == "Available"
        })
        .await;
    assert!(
        world.machine("m-1").unwrap()["metadata"]["labels"]
            .get("node")
            .is_none()
    );
    assert!(world.server.names(KUBE_SYSTEM_SECRETS).is_empty());
    // Without Nodes, the Machine says where the VM is (MCM's buildAddressStatus): what
    // CreateMachine reported once is kept beside what GetMachineStatus reports now.
    let addresses: Vec<k8s_openapi::api::core::v1::NodeAddress> =
        serde_json::from_value(world.status("m-1", "/addresses")).unwrap();
    assert_eq!(
        addresses,
        [
            node_address("ExternalIP", CREATE_ADDRESS),
            node_address("Hostname", "m-1"),
            node_address("InternalIP", STATUS_ADDRESS),
        ]
    );
}

#[tokio::test]
async fn with_a_target_cluster_addresses_are_left_to_the_node() {
    let world = world();
    world.server.insert(
        MACHINES,
        machine_json(
            "m-1",
            json!({"metadata": {"finalizers": ["machine.sapcloud.io/machine-controller-manager"]}}),
        ),
    );
    world
        .reconcile_until("m-1", 6, |w| {
            w.status("m-1", "/currentStatus/phase") == "Pending"
        })
        .await;
    assert_eq!(world.status("m-1", "/addresses"), serde_json::Value::Null);
}

/// Status fields this sidecar does not model, as a newer MCM writes them.
fn newer_mcm_status(phase: &str) -> serde_json::Value {
    json!({
        "addresses": [{"type": "InternalIP", "address": "10.0.0.7"}],
        "currentStatus": {"phase": phase, "preserveExpiryTime": "2030-01-01T00:00:00Z"},
        "lastOperation": {"type": "Create", "state": "Processing", "lastUpdateTime": ago(5),
                          "somethingNewer": {"x": 1}}
    })
}

fn assert_newer_fields_kept(world: &World, name: &str) {
    assert_eq!(world.status(name, "/addresses/0/address"), "10.0.0.7");
    assert_eq!(
        world.status(name, "/currentStatus/preserveExpiryTime"),
        "2030-01-01T00:00:00Z"
    );
    assert_eq!(world.status(name, "/lastOperation/somethingNewer/x"), 1);
}

#[tokio::test]
async fn status_writes_keep_fields_a_newer_mcm_wrote() {
    // The health flow writes a status assessed from the stored one.
    let world = world();
    world.server.insert(
        MACHINES,
        machine_json("m-1", json!({
            "metadata": {"finalizers": ["machine.sapcloud.io/machine-controller-manager"], "labels": {"node": "m-1"},
                         "annotations": {"node.machine.sapcloud.io/preserve": "now"}},
            "spec": {"providerID": "fake://m-1"},
            "status": newer_mcm_status("Pending")
        })),
    );
    world.driver.add_vm("m-1");
    world.server.insert(NODES, ready_node("m-1", "True"));
    world.reconcile("m-1").await;
    assert_eq!(world.status("m-1", "/currentStatus/phase"), "Running");
    assert_newer_fields_kept(&world, "m-1");

    // The creation flow's failure record builds lastOperation and currentStatus afresh.
    world.server.insert(
        MACHINES,
        machine_json(
            "m-2",
            json!({
                // Preserved (the expiry's reason), so the preservation keeps the expiry.
                "metadata": {"finalizers": ["machine.sapcloud.io/machine-controller-manager"],
                             "annotations": {"node.machine.sapcloud.io/preserve": "now"}},
                "status": newer_mcm_status("CrashLoopBackOff")
            }),
        ),
    );
    world
        .driver
        .fail_next("CreateMachine", code_error(MachineCode::Internal));
    world.reconcile("m-2").await;
    assert_eq!(world.status("m-2", "/lastOperation/state"), "Failed");
    assert_eq!(world.status("m-2", "/lastOperation/errorCode"), "Internal");
    assert_newer_fields_kept(&world, "m-2");
}

#[tokio::test]
async fn a_retried_error_differing_only_in_its_request_id_is_not_rewritten() {
    let world = world();
    let first = MachineError::new(
        MachineCode::Internal,
        "VM create rejected (request id 4f1c2a77-0b1e)",
    );
    world.server.insert(
        MACHINES,
        machine_json(
            "m-1",
            json!({
                "metadata": {"finalizers": ["machine.sapcloud.io/machine-controller-manager"]},
                "status": {
                    "currentStatus": {"phase": "CrashLoopBackOff", "lastUpdateTime": ago(5)},
                    "lastOperation": {"description": format!("Cloud provider message - {first}"),
                                      "errorCode": "Internal", "state": "Failed", "type": "Create",
                                      "lastUpdateTime": ago(5)}}
            }),
        ),
    );
    world.driver.fail_next(
        "CreateMachine",
        MachineError::new(
            MachineCode::Internal,
            "VM create rejected (request id 9d03e6b1-77c2)",
        ),
    );
    world.server.clear_requests();
    world.reconcile("m-1").await;
    assert_eq!(
        world.driver.operations(),
        ["GetMachineStatus", "CreateMachine"]
    );
    let writes: Vec<_> = world
        .server
        .request_lines()
        .into_iter()
        .filter(|l| l.starts_with("PUT"))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");

    // Another error is a change, and written.
    let other = MachineError::new(MachineCode::Internal, "image not found");
    world.driver.fail_next("CreateMachine", other.clone());
    world.reconcile("m-1").await;
    assert_eq!(
        world.status("m-1", "/lastOperation/description"),
        format!("Cloud provider message - {other}").as_str()
    );
}

#[tokio::test]
async fn join_duration_is_labelled_with_the_class_instance_type_and_the_node_template_zone() {
    let world = world();
    let mut class = world.server.get(CLASSES, "class-a").unwrap();
    class["nodeTemplate"] = json!({
        "capacity": {"cpu": "2", "gpu": "0", "memory": "4Gi"},
        "instanceType": "u1.large", "region": "r", "zone": "class-zone"
    });
    world.server.insert(CLASSES, class);
    world.server.insert(
        MACHINES,
        machine_json("m-1", json!({
            "metadata": {"creationTimestamp": ago(90), "finalizers": ["machine.sapcloud.io/machine-controller-manager"], "labels": {"node": "m-1"}},
            "spec": {"providerID": "fake://m-1",
                     "nodeTemplate": {"metadata": {"labels": {"topology.kubernetes.io/zone": "z-b"}}}},
            "status": {"currentStatus": {"phase": "Pending"}, "lastOperation": {"type": "Create", "state": "Processing", "lastUpdateTime": ago(5)}}
        })),
    );
    world.driver.add_vm("m-1");
    world.server.insert(NODES, ready_node("m-1", "True"));
    world.reconcile("m-1").await;
    assert_eq!(world.status("m-1", "/currentStatus/phase"), "Running");
    let text = world.ctx.metrics.render(Some(&[]), false);
    let series = "mcm_machine_join_duration_seconds{namespace=\"shoot--dev--kv\",machine_deployment=\"pool-a\",instance_type=\"u1.large\",zone=\"z-b\"} ";
    let value = text
        .lines()
        .find_map(|line| line.strip_prefix(series))
        .unwrap_or_else(|| panic!("missing {series:?} in\n{text}"));
    // 90s and the test's own milliseconds, rounded to whole seconds.
    assert!(value == "90.0" || value == "91.0", "{value}");
}
