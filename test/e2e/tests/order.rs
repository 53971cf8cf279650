//! Order independence: whatever order a user applies MachineClass, Secret and Machines in,
//! relative to each other and to the sidecar's start, the first VM exists within seconds.
//!
//! A class gets MCM's finalizer only once a Machine refers to it, and a Machine is not
//! created before its class has that finalizer. Reconciled in the wrong order, a class
//! without Machines used to be looked at again only after its 10-minute resync.

use std::time::Duration;

use e2e::bed::{Bed, PATIENCE, eventually};
use e2e::scenario::with_bed;

/// Far below the 10-minute class resync and the machines' long retry, far above a
/// reconcile on a loaded 2-core machine.
const SECONDS: Duration = Duration::from_secs(30);

#[tokio::test]
async fn class_first_then_sidecar_then_machine() {
    with_bed("class-first", class_first).await;
}

async fn class_first(bed: &Bed) {
    let kubeconfig = bed.provider_kubeconfig();
    bed.create_provider_secret("cloud", &kubeconfig).await;
    bed.create_class("small", "cloud").await;
    let sidecar = bed.sidecar("class-first", &[]);
    // The class must have been reconciled without Machines before one appears, or this
    // scenario would not see the stall.
    sidecar
        .wait_for_log("machine class in sync", PATIENCE)
        .await;
    bed.create_machine("m1", "small").await;
    let took = eventually("the first machine created", SECONDS, || {
        bed.machine_created("m1")
    })
    .await;
    eprintln!("class first: machine created {took:?} after it was applied");

    bed.delete_machine("m1", PATIENCE).await;
    bed.delete_class("small", "cloud", PATIENCE).await;
    bed.assert_nothing_left(PATIENCE).await;
    drop(sidecar);
}

#[tokio::test]
async fn machine_first_then_class_and_secret() {
    with_bed("machine-first", machine_first).await;
}

async fn machine_first(bed: &Bed) {
    let sidecar = bed.sidecar("machine-first", &[]);
    sidecar.wait_for_log("controllers started", PATIENCE).await;
    bed.create_machine("m1", "late").await;
    // The Machine must have been turned away for its missing class first.
    let missing = format!("MachineClass {}/late not found", bed.namespace);
    sidecar.wait_for_log(&missing, PATIENCE).await;

    let kubeconfig = bed.provider_kubeconfig();
    bed.create_provider_secret("cloud", &kubeconfig).await;
    bed.create_class("late", "cloud").await;
    let took = eventually("the machine created once its class exists", SECONDS, || {
        bed.machine_created("m1")
    })
    .await;
    eprintln!("machine first: machine created {took:?} after its class was applied");

    bed.delete_machine("m1", PATIENCE).await;
    bed.delete_class("late", "cloud", PATIENCE).await;
    bed.assert_nothing_left(PATIENCE).await;
    drop(sidecar);
}
