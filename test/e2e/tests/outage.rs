//! End-to-end: the provider cluster unreachable for a while.
//!
//! The provider Secret's kubeconfig first names a loopback port nothing listens on: the
//! Machines must report the connection problem in `status.lastOperation` (Failed, code
//! Unavailable, no credential quoted) and create nothing. Then the Secret is fixed, and
//! the same sidecar must pick the new kubeconfig up and create every machine within
//! seconds, with one VM and one userdata Secret each; deleting them leaves nothing.
//!
//! Runs when `E2E_KUBECONFIG` is set (see README, End-to-end tests).

use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

use e2e::bed::{Bed, PATIENCE, eventually, free_port};
use e2e::scenario::with_bed;

const MACHINES: [&str; 2] = ["m1", "m2"];
/// After the fix, a machine must be created within this; the sidecar retries an
/// Unavailable create after 5s (MCM's short retry).
const CONVERGENCE: Duration = Duration::from_secs(60);

/// `kubeconfig` with its cluster's server replaced by `server`.
fn with_server(kubeconfig: &str, server: &str) -> String {
    let mut config: Value = serde_saphyr::from_str(kubeconfig).expect("kubeconfig parses");
    config["clusters"][0]["cluster"]["server"] = Value::String(server.to_owned());
    serde_saphyr::to_string(&config).expect("kubeconfig serialises")
}

/// Strings of the kubeconfig that would give it away if quoted: every inline credential,
/// base64 and decoded, and the decoded PEM's first body line.
fn credentials(kubeconfig: &str) -> Vec<String> {
    let config: Value = serde_saphyr::from_str(kubeconfig).expect("kubeconfig parses");
    let user = &config["users"][0]["user"];
    let mut found = Vec::new();
    for key in ["client-certificate-data", "client-key-data", "token"] {
        let Some(value) = user[key].as_str().filter(|v| !v.is_empty()) else {
            continue;
        };
        found.push(value.to_owned());
        if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(value) {
            let text = String::from_utf8_lossy(&decoded).into_owned();
            if let Some(body) = text.lines().find(|l| !l.starts_with("-----")) {
                found.push(body.to_owned());
            }
        }
    }
    assert!(
        !found.is_empty(),
        "E2E_KUBECONFIG has no inline credential to look for"
    );
    found
}

async fn set_kubeconfig(bed: &Bed, secret: &str, kubeconfig: &str) {
    let data = ByteString(kubeconfig.as_bytes().to_vec());
    bed.secrets()
        .patch(
            secret,
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"kubeconfig": data}})),
        )
        .await
        .expect("secret patched");
}

/// Ok once `name` reports the unreachable provider cluster as MCM shows a failed create.
async fn reports_unreachable(bed: &Bed, name: &str) -> Result<(), String> {
    let machine = bed.machines().get(name).await.map_err(|e| e.to_string())?;
    let status = machine.status.unwrap_or_default();
    let operation = status.last_operation.unwrap_or_default();
    let phase = status.current_status.and_then(|c| c.phase);
    let description = operation.description.clone().unwrap_or_default();
    let ok = operation.state.as_deref() == Some("Failed")
        && operation.type_.as_deref() == Some("Create")
        && operation.error_code.as_deref() == Some("Unavailable")
        && description.starts_with("Cloud provider message - ")
        && description.contains("API server unreachable")
        && description.to_lowercase().contains("connection refused")
        && phase.as_deref() == Some("CrashLoopBackOff")
        && machine.spec.provider_id.is_none();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name}: phase {phase:?}, providerID {:?}, lastOperation {operation:?}",
            machine.spec.provider_id
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_provider_is_reported_and_machines_converge_after_the_fix() {
    with_bed("outage", async |bed| {
        let good = bed.provider_kubeconfig();
        let closed = free_port();
        let broken = with_server(&good, &format!("https://127.0.0.1:{closed}"));
        bed.create_provider_secret("cloud", &broken).await;
        bed.create_class("class", "cloud").await;
        for name in MACHINES {
            bed.create_machine(name, "class").await;
        }
        let mut sidecar = bed.sidecar("sidecar", &[]);

        for name in MACHINES {
            eventually(
                &format!("{name} to report the unreachable provider"),
                PATIENCE,
                || reports_unreachable(bed, name),
            )
            .await;
        }
        // Still failing, not stalled or half-created, after more than one retry period.
        tokio::time::sleep(Duration::from_secs(12)).await;
        for name in MACHINES {
            reports_unreachable(bed, name)
                .await
                .unwrap_or_else(|why| panic!("after 12s: {why}"));
        }
        assert_eq!(bed.vm_names().await, Vec::<String>::new());
        assert_eq!(
            bed.leftovers().await,
            ["Machine m1", "Machine m2"],
            "only the Machines may exist during the outage"
        );
        // Each attempt fails at GetMachineStatus, before any CreateMachine.
        let attempts = sidecar.log().matches("API server unreachable").count();
        assert!(
            attempts >= 2 * MACHINES.len(),
            "{attempts} failed attempts logged in the outage: the sidecar does not retry"
        );
        let machines = serde_json::to_string(
            &bed.machines()
                .list(&Default::default())
                .await
                .expect("machines")
                .items,
        )
        .expect("machines serialise");
        let log = sidecar.log();
        for credential in credentials(&broken) {
            assert!(
                !machines.contains(&credential),
                "a credential is quoted in a Machine"
            );
            assert!(
                !log.contains(&credential),
                "a credential is quoted in the log"
            );
        }

        // The fix: the same Secret, the real server. No restart.
        set_kubeconfig(bed, "cloud", &good).await;
        let fixed = Instant::now();
        for name in MACHINES {
            eventually(
                &format!("{name} created after the fix"),
                CONVERGENCE,
                || bed.machine_created(name),
            )
            .await;
        }
        eprintln!(
            "outage: all machines created {:?} after the fix",
            fixed.elapsed()
        );
        assert_eq!(sidecar.exited(), None, "the sidecar stopped");
        assert_eq!(bed.vm_names().await, MACHINES);
        for name in MACHINES {
            let machine = bed.machines().get(name).await.expect("machine");
            let operation = machine
                .status
                .and_then(|s| s.last_operation)
                .unwrap_or_default();
            assert_ne!(operation.state.as_deref(), Some("Failed"), "{operation:?}");
            assert_eq!(operation.error_code, None, "{operation:?}");
        }

        for name in MACHINES {
            bed.machines()
                .delete(name, &DeleteParams::default())
                .await
                .expect("machine deleted");
        }
        bed.assert_nothing_left(PATIENCE).await;
    })
    .await;
}
