//! End-to-end: leader election and restarts in the middle of a create.
//!
//! - Two sidecars with leader election: exactly one holds the Lease `machine-controller`
//!   and only that one reconciles; after it is killed (SIGKILL) the other takes the Lease
//!   over and finishes a create that was waiting, with one VM per machine.
//! - A sidecar killed right after it wrote the VM (and, in a second case, right after it
//!   made the VM own the userdata Secret), before anything reached the Machine: a fresh
//!   sidecar converges with one VM and one userdata Secret. A proxy in front of the
//!   provider cluster stops the sidecar at exactly that point (see `e2e::proxy`).
//!
//! Runs when `E2E_KUBECONFIG` is set (see README, End-to-end tests).

use std::time::{Duration, Instant};

use http::Method;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::DeleteParams;
use kube::{Api, ResourceExt};
use serde_json::Value;

use e2e::bed::{Bed, MCM_FINALIZER, PATIENCE, SECRET_FINALIZER, Sidecar, eventually};
use e2e::proxy::ProviderProxy;
use e2e::scenario::with_bed;

const LEASE: &str = "machine-controller";
/// Short enough for a takeover within seconds, with 3s between a renewal and expiry so a
/// busy machine does not make the holder lose the lease (which ends its process).
const LEASE_DURATION_SECS: i32 = 6;

fn leader_flags() -> Vec<String> {
    [
        "--leader-elect=true",
        "--leader-elect-lease-duration=6s",
        "--leader-elect-renew-deadline=3s",
        "--leader-elect-retry-period=1s",
        // Structured logs, so the identity a sidecar elects with can be read back.
        "--logging-format=json",
    ]
    .map(String::from)
    .to_vec()
}

/// The `identity` field of the first log line of `sidecar` with `message`.
fn logged_identity(sidecar: &Sidecar, message: &str) -> Option<String> {
    sidecar.log().lines().find_map(|line| {
        let entry: Value = serde_json::from_str(line).ok()?;
        (entry["fields"]["message"] == message)
            .then(|| entry["fields"]["identity"].as_str().map(str::to_owned))
            .flatten()
    })
}

fn has_logged(sidecar: &Sidecar, message: &str) -> bool {
    sidecar.log().lines().any(|line| {
        serde_json::from_str::<Value>(line).is_ok_and(|entry| entry["fields"]["message"] == message)
    })
}

/// Whether `sidecar` has reconciled anything: every reconcile logs its kind.
fn has_reconciled(sidecar: &Sidecar) -> bool {
    sidecar.log().lines().any(|line| {
        serde_json::from_str::<Value>(line).is_ok_and(|entry| entry["fields"]["kind"].is_string())
    })
}

async fn lease_holder(bed: &Bed) -> Option<String> {
    let leases: Api<Lease> = bed.api();
    leases
        .get_opt(LEASE)
        .await
        .expect("lease read")
        .and_then(|lease| lease.spec)
        .and_then(|spec| spec.holder_identity)
        .filter(|holder| !holder.is_empty())
}

/// Waits until `sidecar` holds the Lease, and returns its identity.
async fn wait_for_leadership(bed: &Bed, sidecar: &Sidecar) -> String {
    eventually(
        &format!("{} to hold the lease", sidecar.name),
        PATIENCE,
        || async {
            let logged = logged_identity(sidecar, "leadership acquired")
                .ok_or("no \"leadership acquired\" logged yet")?;
            let holder = lease_holder(bed).await;
            if holder.as_deref() == Some(logged.as_str()) {
                Ok(())
            } else {
                Err(format!("lease held by {holder:?}, not by {logged}"))
            }
        },
    )
    .await;
    logged_identity(sidecar, "leadership acquired").unwrap_or_default()
}

/// The finalizers on the class and its Secret while machines use them.
async fn assert_class_and_secret_finalizers(bed: &Bed, class: &str, secret: &str) {
    eventually("class and secret finalizers", PATIENCE, || async {
        let class = bed.classes().get(class).await.map_err(|e| e.to_string())?;
        let secret = bed.secrets().get(secret).await.map_err(|e| e.to_string())?;
        if class.finalizers().iter().any(|f| f == MCM_FINALIZER)
            && secret.finalizers().iter().any(|f| f == SECRET_FINALIZER)
        {
            Ok(())
        } else {
            Err(format!(
                "class finalizers {:?}, secret finalizers {:?}",
                class.finalizers(),
                secret.finalizers()
            ))
        }
    })
    .await;
}

async fn delete_machines(bed: &Bed, names: &[&str]) {
    for name in names {
        bed.machines()
            .delete(name, &DeleteParams::default())
            .await
            .expect("machine deleted");
    }
    bed.assert_nothing_left(PATIENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_acts_and_the_standby_takes_over_a_pending_create() {
    with_bed("leader", async |bed| {
        bed.create_provider_secret("cloud", &bed.provider_kubeconfig())
            .await;
        bed.create_class("class", "cloud").await;
        // Before the sidecars, so the class gets its finalizer at once.
        bed.create_machine("m1", "class").await;
        let sidecars = [
            bed.sidecar("sidecar-a", &leader_flags()),
            bed.sidecar("sidecar-b", &leader_flags()),
        ];

        // Both race for the free Lease; exactly one may win.
        eventually("a lease holder", PATIENCE, || async {
            let holder = lease_holder(bed).await.ok_or("no holder yet")?;
            // The Lease is written before its holder logs; wait for both.
            if sidecars
                .iter()
                .any(|s| logged_identity(s, "leadership acquired").as_ref() == Some(&holder))
            {
                Ok(())
            } else {
                Err(format!("{holder} has not logged its leadership yet"))
            }
        })
        .await;
        let holder_index = sidecars
            .iter()
            .position(|s| logged_identity(s, "leadership acquired").is_some())
            .expect("the holder logged its leadership");
        let [first, second] = sidecars;
        let (mut holder, standby) = if holder_index == 0 {
            (first, second)
        } else {
            (second, first)
        };
        let holder_identity = wait_for_leadership(bed, &holder).await;
        let standby_identity = logged_identity(&standby, "waiting for leadership")
            .expect("the standby logged its identity");
        assert_ne!(holder_identity, standby_identity);
        eprintln!(
            "leader: {} holds the lease as {holder_identity}",
            holder.name
        );

        // The holder creates m1; all the while the Lease stays its own and the standby
        // reconciles nothing.
        eventually("m1 created by the holder", PATIENCE, || async {
            let lease = lease_holder(bed).await;
            assert_eq!(
                lease.as_deref(),
                Some(holder_identity.as_str()),
                "the lease changed hands while its holder was alive"
            );
            assert!(
                !has_logged(&standby, "leadership acquired")
                    && !has_logged(&standby, "controllers started")
                    && !has_reconciled(&standby),
                "the standby acted without the lease"
            );
            bed.machine_created("m1").await
        })
        .await;
        assert!(has_reconciled(&holder), "the holder reconciled nothing");
        assert_class_and_secret_finalizers(bed, "class", "cloud").await;
        assert_eq!(bed.vm_names().await, ["m1"]);

        // SIGKILL: the Lease is not released, so the standby waits for it to expire.
        holder.kill();
        let killed = Instant::now();
        bed.create_machine("m2", "class").await;
        let takeover = wait_for_leadership(bed, &standby).await;
        assert_eq!(takeover, standby_identity);
        let took_over = killed.elapsed();
        eprintln!(
            "leader: {} took the lease over after {took_over:?}",
            standby.name
        );
        assert!(
            took_over < Duration::from_secs(3 * LEASE_DURATION_SECS as u64),
            "takeover took {took_over:?} with a {LEASE_DURATION_SECS}s lease"
        );
        let leases: Api<Lease> = bed.api();
        let lease = leases.get(LEASE).await.expect("lease");
        assert_eq!(
            lease.spec.as_ref().and_then(|s| s.lease_duration_seconds),
            Some(LEASE_DURATION_SECS)
        );

        eventually("m2 created by the new holder", PATIENCE, || async {
            bed.machine_created("m2").await
        })
        .await;
        bed.machine_created("m1").await.expect("m1 still created");
        eprintln!("leader: m2 created {:?} after the kill", killed.elapsed());
        assert_eq!(bed.vm_names().await, ["m1", "m2"]);
        assert_eq!(
            bed.userdata_secret_names().await,
            ["userdata-m1", "userdata-m2"]
        );
        let mut standby = standby;
        assert_eq!(standby.exited(), None, "the new holder stopped");

        delete_machines(bed, &["m1", "m2"]).await;
        assert_eq!(
            lease_holder(bed).await.as_deref(),
            Some(standby_identity.as_str())
        );
    })
    .await;
}

/// A sidecar is killed right after the provider cluster answered `method ...suffix`
/// during the create of `m`, before anything else of its reached the provider cluster
/// (and so before it wrote the Machine); a fresh sidecar must converge without duplicates.
async fn restart_mid_create(bed: &Bed, method: Method, suffix: &str) {
    let proxy = ProviderProxy::start(bed.client.clone()).await;
    bed.create_provider_secret("cloud", &proxy.kubeconfig(&bed.namespace))
        .await;
    bed.create_class("class", "cloud").await;
    bed.create_machine("m", "class").await;
    let trap = proxy.hold_after(method.clone(), suffix);
    let mut first = bed.sidecar("sidecar-first", &leader_flags());
    let sprung = tokio::time::timeout(PATIENCE, trap)
        .await
        .expect("the create reached the trap in time")
        .expect("the trap reported");
    first.kill();
    eprintln!("restart: killed the sidecar right after {sprung:?}");
    let first_identity = logged_identity(&first, "leadership acquired").expect("first led");

    // What the kill left: the VM, its userdata Secret, and a Machine that knows nothing.
    assert_eq!(bed.vm_names().await, ["m"]);
    let userdata = bed.secrets().get("userdata-m").await.expect("userdata-m");
    let owned = !userdata.owner_references().is_empty();
    assert_eq!(
        owned,
        method == Method::PATCH,
        "owner references {:?}",
        userdata.owner_references()
    );
    let machine = bed.machines().get("m").await.expect("machine m");
    assert_eq!(machine.spec.provider_id, None, "the kill came too late");
    assert!(!machine.labels().contains_key("node"));
    assert_eq!(
        lease_holder(bed).await.as_deref(),
        Some(first_identity.as_str())
    );

    proxy.release();
    let second = bed.sidecar("sidecar-second", &leader_flags());
    let second_identity = wait_for_leadership(bed, &second).await;
    assert_ne!(first_identity, second_identity);
    eventually("m created by the restarted sidecar", PATIENCE, || async {
        bed.machine_created("m").await
    })
    .await;

    assert_eq!(bed.vm_names().await, ["m"]);
    assert_eq!(bed.userdata_secret_names().await, ["userdata-m"]);
    let created = |suffix: &str| proxy.count(&Method::POST, suffix);
    assert_eq!(created("/virtualmachines"), 1, "{:#?}", proxy.exchanges());
    assert_eq!(created("/secrets"), 1, "{:#?}", proxy.exchanges());
    let machine = bed.machines().get("m").await.expect("machine m");
    let operation = machine
        .status
        .and_then(|s| s.last_operation)
        .unwrap_or_default();
    assert_eq!(operation.type_.as_deref(), Some("Create"));
    assert_ne!(operation.state.as_deref(), Some("Failed"), "{operation:?}");
    assert_class_and_secret_finalizers(bed, "class", "cloud").await;

    delete_machines(bed, &["m"]).await;
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_vm_and_owner_reference_a_restart_converges() {
    with_bed("restart-vm", async |bed| {
        restart_mid_create(bed, Method::POST, "/virtualmachines").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_owner_reference_and_machine_status_a_restart_converges() {
    with_bed("restart-owner", async |bed| {
        restart_mid_create(bed, Method::PATCH, "/secrets/userdata-m").await;
    })
    .await;
}
