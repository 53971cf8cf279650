//! The sidecar's whole life with one machine on a real API server: creation, the class and
//! Secret finalizers, `/healthz` and `/metrics`, deletion, and orphan VM collection.
//!
//! Runs when `E2E_KUBECONFIG` names a cluster with the MCM and KubeVirt CRDs (see README,
//! "End-to-end tests"); the one cluster is control, target and provider cluster. No VM
//! boots: the scenario asserts objects, not a joined node.

use mcm_provider_kubevirt::Driver;
use mcm_provider_kubevirt::driver::MachineRequest;
use mcm_provider_kubevirt::mcm::Machine;

use e2e::bed::{Bed, MCM_FINALIZER, PATIENCE, SECRET_FINALIZER, eventually};
use e2e::scenario::with_bed;
use kube::ResourceExt;

#[tokio::test]
async fn sidecar_creates_deletes_and_collects_orphans() {
    with_bed("sidecar", lifecycle).await;
}

async fn lifecycle(bed: &Bed) {
    let kubeconfig = bed.provider_kubeconfig();
    bed.create_provider_secret("e2e-cloud", &kubeconfig).await;
    bed.create_class("e2e-class", "e2e-cloud").await;
    let sidecar = bed.sidecar(
        "sidecar",
        &["--machine-safety-orphan-vms-period=10s".into()],
    );

    bed.create_machine("e2e-m1", "e2e-class").await;
    eventually("the VM and a Pending machine", PATIENCE, || {
        bed.machine_created("e2e-m1")
    })
    .await;
    let machine = bed.machines().get("e2e-m1").await.unwrap();
    let description = machine
        .status
        .and_then(|s| s.last_operation)
        .and_then(|o| o.description);
    assert_eq!(
        description.as_deref(),
        Some("Creating machine on cloud provider")
    );
    let class = bed.classes().get("e2e-class").await.unwrap();
    assert!(class.finalizers().iter().any(|f| f == MCM_FINALIZER));
    eventually("the secret finalizer", PATIENCE, || async {
        let secret = bed
            .secrets()
            .get("e2e-cloud")
            .await
            .map_err(|e| e.to_string())?;
        if secret.finalizers().iter().any(|f| f == SECRET_FINALIZER) {
            Ok(())
        } else {
            Err("missing".into())
        }
    })
    .await;

    let metrics = sidecar.http_get("/metrics").await.expect("/metrics");
    assert!(metrics.contains("mcm_machine_items_total 1"), "{metrics}");
    let health = sidecar.http_get("/healthz").await.expect("/healthz");
    assert!(health.contains("ok"), "{health}");

    bed.delete_machine("e2e-m1", PATIENCE).await;

    // Orphan collection: a VM made by this provider for a Machine that does not exist.
    let mut orphan = Machine::new("e2e-orphan", Default::default());
    orphan.metadata.namespace = Some(bed.namespace.clone());
    mcm_provider_kubevirt::kubevirt_driver()
        .create_machine(&MachineRequest {
            machine: orphan,
            machine_class: bed.classes().get("e2e-class").await.unwrap(),
            secret: bed.secrets().get("e2e-cloud").await.unwrap(),
        })
        .await
        .expect("orphan VM created");
    assert_eq!(bed.vm_names().await, ["e2e-orphan"]);
    eventually("the orphan VM to be collected", PATIENCE, || async {
        match bed.vms().get_opt("e2e-orphan").await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err("orphan VM still there".into()),
            Err(error) => Err(error.to_string()),
        }
    })
    .await;

    bed.delete_class("e2e-class", "e2e-cloud", PATIENCE).await;
    bed.assert_nothing_left(PATIENCE).await;
    drop(sidecar);
}
