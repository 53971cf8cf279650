//! End-to-end: machine preservation (MCM v0.62) on a real API server.
//!
//! The Node of a Running machine is annotated `node.machine.sapcloud.io/preserve=when-failed`
//! by its user; a pod runs on it. Then the Node stops working: the fake kubelet keeps
//! renewing its heartbeat but reports Ready=False (`KubeletNotReady`, the container
//! network down), so the machine turns Unknown and, past its 5s `healthTimeout`, Failed.
//! The sidecar must then preserve it: `preserveExpiryTime` on the Machine, the Node tainted
//! `node.machine.sapcloud.io/preserved:NoSchedule` (not cordoned), the cluster-autoscaler's
//! scale-down-disabled annotation, the pod evicted (deleted gracefully, which the fake
//! kubelet finishes as a kubelet whose containers stopped), and the `Preserved` condition
//! True once the Node is empty. The health check's status writes must keep the expiry (the
//! real server prunes what the CRD does not declare). Removing the Node's annotation stops
//! the preservation: condition `Preservation stopped.`, taint, annotation and expiry gone.
//!
//! Runs when `E2E_KUBECONFIG` is set (see README, End-to-end tests).

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use serde_json::json;

use e2e::bed::{Bed, PATIENCE, eventually, node_condition};
use e2e::scenario::with_bed;
use mcm_provider_kubevirt::mcm::Machine;

const MACHINE: &str = "m1";
const PRESERVE: &str = "node.machine.sapcloud.io/preserve";
const LAST_APPLIED: &str = "node.machine.sapcloud.io/last-applied-node-preserve-value";
const TAINT: &str = "node.machine.sapcloud.io/preserved";
const CA_DISABLED: &str = "cluster-autoscaler.kubernetes.io/scale-down-disabled";
const CA_BY_MCM: &str = "cluster-autoscaler.kubernetes.io/scale-down-disabled-by-mcm";

fn expiry(machine: &Machine) -> Option<Timestamp> {
    machine
        .status
        .as_ref()
        .and_then(|s| s.current_status.as_ref())
        .and_then(|c| c.preserve_expiry_time.as_ref())
        .map(|t| t.0)
}

fn tainted(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|taints| {
            taints
                .iter()
                .any(|t| t.key == TAINT && t.effect == "NoSchedule")
        })
}

/// Waits until the Machine records `value` as the Node's preserve value it acted on.
async fn wait_for_recorded(bed: &Bed, value: &str) {
    eventually(&format!("{LAST_APPLIED}={value:?}"), PATIENCE, || async {
        let machine = bed.machine(MACHINE).await?;
        match machine.annotations().get(LAST_APPLIED) {
            Some(recorded) if recorded == value => Ok(()),
            other => Err(format!("recorded {other:?}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_machine_is_preserved_drained_and_released() {
    with_bed("preserve", scenario).await;
}

async fn scenario(bed: &Bed) {
    // A short health timeout: the machine fails seconds after its Node stops working.
    let (sidecar, kubelet) = bed
        .running_machine(MACHINE, json!({"healthTimeout": "5s"}))
        .await;

    // The user's choice, on the Node: its value is in control from now on.
    bed.patch_node(
        MACHINE,
        json!({"metadata": {"annotations": {PRESERVE: "when-failed"}}}),
    )
    .await;
    wait_for_recorded(bed, "when-failed").await;
    let machine = bed.machines().get(MACHINE).await.expect("machine");
    assert_eq!(
        expiry(&machine),
        None,
        "a Running machine is not preserved when-failed"
    );

    bed.create_pod_on("web", MACHINE, json!({"app": "web"}))
        .await;
    eventually("the pod running", PATIENCE, || async {
        let pod = bed
            .api::<Pod>()
            .get("web")
            .await
            .map_err(|e| e.to_string())?;
        match pod.status.and_then(|s| s.phase) {
            Some(phase) if phase == "Running" => Ok(()),
            phase => Err(format!("phase {phase:?}")),
        }
    })
    .await;

    kubelet.report_not_ready(MACHINE);
    bed.wait_for_phase(MACHINE, "Failed", PATIENCE).await;
    let preserved = eventually("the Node drained and preserved", PATIENCE, || async {
        let node = bed.node(MACHINE).await?;
        match node_condition(&node, "Preserved") {
            Some(c) if c.status == "True" => Ok(()),
            other => Err(format!("Preserved condition {other:?}")),
        }
    })
    .await;
    eprintln!("preserve: preserved {preserved:?} after the machine failed");

    let machine = bed.machines().get(MACHINE).await.expect("machine");
    let until = expiry(&machine).expect("preserveExpiryTime set");
    // --machine-preserve-timeout's default, 96h, from the moment it was preserved.
    let ahead = until.duration_since(Timestamp::now());
    assert!(
        ahead > SignedDuration::from_hours(95) && ahead <= SignedDuration::from_hours(96),
        "preserved until {until}"
    );
    let node = bed.nodes().get(MACHINE).await.expect("node");
    let condition = node_condition(&node, "Preserved")
        .expect("condition")
        .clone();
    assert_eq!(condition.reason.as_deref(), Some("Preserved by user."));
    let message = condition.message.unwrap_or_default();
    assert!(
        message.starts_with("Preserved node drained successfully. Machine preserved until "),
        "{message}"
    );
    assert!(tainted(&node), "{:?}", node.spec);
    // Tainted, not cordoned: a user's cordon would be theirs to lift.
    let cordoned = node.spec.as_ref().and_then(|s| s.unschedulable);
    assert_ne!(cordoned, Some(true), "the preserved Node was cordoned");
    let annotations = node.annotations();
    assert_eq!(
        annotations.get(CA_DISABLED).map(String::as_str),
        Some("true")
    );
    assert_eq!(annotations.get(CA_BY_MCM).map(String::as_str), Some("true"));
    assert!(
        bed.api::<Pod>()
            .get_opt("web")
            .await
            .expect("pod")
            .is_none(),
        "the pod is left on the preserved Node"
    );
    // Deleted gracefully (the kubelet saw it Terminating), not force-deleted.
    let web = format!("{}/web", bed.namespace);
    assert_eq!(kubelet.finished_pods(), [web]);
    // Preservation keeps a Failed machine Failed; replacing it is the MachineSet's call.
    assert_eq!(bed.machine_phase(MACHINE).await.unwrap(), "Failed");

    // The health check copies the Node's new condition into the Machine's status; that
    // write must not lose the expiry.
    eventually(
        "the Preserved condition on the Machine",
        PATIENCE,
        || async {
            let machine = bed.machine(MACHINE).await?;
            let copied = machine
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c.type_ == "Preserved" && c.status == "True")
                });
            match (copied, expiry(&machine)) {
                (true, Some(kept)) if kept == until => Ok(()),
                (copied, kept) => Err(format!("condition copied {copied}, expiry {kept:?}")),
            }
        },
    )
    .await;

    // The user changes their mind: the Node's annotation goes, and so does the preservation.
    bed.patch_node(
        MACHINE,
        json!({"metadata": {"annotations": {PRESERVE: null}}}),
    )
    .await;
    eventually("the preservation to stop", PATIENCE, || async {
        let machine = bed.machine(MACHINE).await?;
        let node = bed.node(MACHINE).await?;
        let reason = node_condition(&node, "Preserved").and_then(|c| c.reason.clone());
        let annotated = node.annotations().contains_key(CA_DISABLED);
        let ok = expiry(&machine).is_none()
            && reason.as_deref() == Some("Preservation stopped.")
            && !tainted(&node)
            && !annotated;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "expiry {:?}, condition reason {reason:?}, tainted {}, scale-down disabled {annotated}",
                expiry(&machine),
                tainted(&node)
            ))
        }
    })
    .await;
    let node = bed.nodes().get(MACHINE).await.expect("node");
    let condition = node_condition(&node, "Preserved").expect("condition");
    assert_eq!(condition.status, "False");
    assert!(!node.annotations().contains_key(CA_BY_MCM));
    // The Node's (now absent) value is recorded, so the machine is not preserved again.
    wait_for_recorded(bed, "").await;

    bed.delete_machine(MACHINE, PATIENCE).await;
    bed.delete_class("class", "cloud", PATIENCE).await;
    bed.assert_nothing_left(PATIENCE).await;
    drop(sidecar);
}
