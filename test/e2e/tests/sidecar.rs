//! End-to-end: the `machine-controller` binary against a real kube-apiserver.
//!
//! Runs when `E2E_KUBECONFIG` names a kubeconfig of a cluster with the MCM CRDs
//! (machine.sapcloud.io) and the KubeVirt CRDs (kubevirt.io) installed; skipped with a
//! message otherwise. The same cluster serves as control cluster (Machines), target
//! cluster (Nodes) and provider cluster (VMs), in a fresh namespace that is removed at
//! the end. No VM needs to boot: the suite asserts objects, not a joined node.
//!
//! `E2E_BINARY` may name the binary; otherwise `target/debug/machine-controller` (build
//! it first with `cargo build -p machine-controller`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use kubevirt_api::kubevirt::v1::virtualmachines::VirtualMachine;
use serde_json::{Value, json};

use mcm_provider_kubevirt::Driver;
use mcm_provider_kubevirt::driver::MachineRequest;
use mcm_provider_kubevirt::kubevirt::ownership::{
    CLUSTER_LABEL, MACHINE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
};
use mcm_provider_kubevirt::mcm::{Machine, MachineClass};

const TIMEOUT: Duration = Duration::from_secs(180);

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// Stops the sidecar when the test ends, however it ends.
struct Sidecar(Child);

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < TIMEOUT {
        match check().await {
            Ok(()) => return,
            Err(why) => last = why,
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    panic!("timed out waiting for {what}: {last}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(10259)
}

#[tokio::test]
async fn sidecar_creates_deletes_and_collects_orphans() {
    let Ok(kubeconfig_path) = std::env::var("E2E_KUBECONFIG") else {
        eprintln!(
            "skipping the end-to-end suite: set E2E_KUBECONFIG to a kubeconfig of a cluster with the MCM and KubeVirt CRDs"
        );
        return;
    };
    let kubeconfig = Kubeconfig::read_from(&kubeconfig_path).expect("E2E_KUBECONFIG is readable");
    let config = Config::from_custom_kubeconfig(kubeconfig.clone(), &KubeConfigOptions::default())
        .await
        .expect("E2E_KUBECONFIG is usable");
    let client = Client::try_from(config).expect("client");
    let ns = format!("mcm-kv-e2e-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .expect("namespace created");
    eprintln!("e2e namespace {ns}");

    // The provider secret: this cluster, with the test namespace for the VMs.
    let kubeconfig_dir = PathBuf::from(&kubeconfig_path)
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let kubeconfig_text =
        std::fs::read_to_string(&kubeconfig_path).expect("E2E_KUBECONFIG is readable");
    let provider_kubeconfig = e2e::provider_kubeconfig(&kubeconfig_text, &kubeconfig_dir, &ns)
        .unwrap_or_else(|why| panic!("E2E_KUBECONFIG {why}"));
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("e2e-cloud".into()),
            ..Default::default()
        },
        data: Some(
            [
                (
                    "kubeconfig".to_owned(),
                    ByteString(provider_kubeconfig.into_bytes()),
                ),
                (
                    "userData".to_owned(),
                    ByteString(b"#cloud-config\nruncmd: [echo <<MACHINE_NAME>>]\n".to_vec()),
                ),
            ]
            .into(),
        ),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret created");

    // The sample MachineClass, in the test namespace.
    let sample =
        std::fs::read_to_string(repo("kubernetes/machine-class.yaml")).expect("sample class");
    let mut class: Value = serde_saphyr::from_str(&sample).expect("sample class parses");
    class["metadata"] = json!({"name": "e2e-class", "namespace": ns});
    class["secretRef"] = json!({"name": "e2e-cloud", "namespace": ns});
    let class: MachineClass = serde_json::from_value(class).expect("sample is a MachineClass");
    let classes: Api<MachineClass> = Api::namespaced(client.clone(), &ns);
    classes
        .create(&PostParams::default(), &class)
        .await
        .expect("class created");

    let binary = std::env::var("E2E_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo("target/debug/machine-controller"));
    let port = free_port();
    let sidecar = Sidecar(
        Command::new(&binary)
            .args([
                &format!("--control-kubeconfig={kubeconfig_path}"),
                &format!("--target-kubeconfig={kubeconfig_path}"),
                &format!("--namespace={ns}"),
                &format!("--port={port}"),
                "--address=127.0.0.1",
                "--leader-elect=false",
                "--machine-safety-orphan-vms-period=10s",
                "--v=4",
            ])
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display())),
    );

    let machines: Api<Machine> = Api::namespaced(client.clone(), &ns);
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), &ns);
    let mut machine = Machine::new("e2e-m1", Default::default());
    machine.spec.class.kind = Some("MachineClass".into());
    machine.spec.class.name = "e2e-class".into();
    machines
        .create(&PostParams::default(), &machine)
        .await
        .expect("machine created");

    eventually("the VM and a Pending machine", || async {
        let vm = vms
            .get_opt("e2e-m1")
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no VM yet")?;
        let labels = vm.metadata.labels.clone().unwrap_or_default();
        if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY_VALUE)
            || labels.get(MACHINE_LABEL).map(String::as_str) != Some("e2e-m1")
            || labels.get(CLUSTER_LABEL) != Some(&ns)
        {
            return Err(format!("VM labels {labels:?}"));
        }
        let m = machines.get("e2e-m1").await.map_err(|e| e.to_string())?;
        let phase = m
            .status
            .as_ref()
            .and_then(|s| s.current_status.as_ref())
            .and_then(|c| c.phase.clone());
        let description = m
            .status
            .as_ref()
            .and_then(|s| s.last_operation.as_ref())
            .and_then(|o| o.description.clone());
        let ok = m.spec.provider_id.as_deref() == Some("kubevirt://e2e-m1")
            && m.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("node"))
                .map(String::as_str)
                == Some("e2e-m1")
            && m.metadata.finalizers.as_ref().is_some_and(|f| {
                f.iter()
                    .any(|f| f == "machine.sapcloud.io/machine-controller-manager")
            })
            && phase.as_deref() == Some("Pending")
            && description.as_deref() == Some("Creating machine on cloud provider");
        if ok {
            Ok(())
        } else {
            Err(format!(
                "machine {:?} {phase:?} {description:?}",
                m.metadata
            ))
        }
    })
    .await;
    assert!(
        secrets.get_opt("userdata-e2e-m1").await.unwrap().is_some(),
        "userdata secret written"
    );
    let class_now = classes.get("e2e-class").await.unwrap();
    assert!(
        class_now
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"machine.sapcloud.io/machine-controller-manager".to_owned())
    );
    eventually("the secret finalizer", || async {
        let s = secrets.get("e2e-cloud").await.map_err(|e| e.to_string())?;
        if s.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"machine.sapcloud.io/machine-controller".to_owned())
        {
            Ok(())
        } else {
            Err("missing".into())
        }
    })
    .await;

    // /healthz and /metrics on --address:--port.
    let metrics = http_get(port, "/metrics").await;
    assert!(metrics.contains("mcm_machine_items_total 1"), "{metrics}");
    assert!(http_get(port, "/healthz").await.contains("ok"));

    // Deletion: the flow runs to the end and removes VM, userdata secret and finalizer.
    machines
        .delete("e2e-m1", &DeleteParams::default())
        .await
        .expect("machine deleted");
    eventually(
        "the machine, its VM and its userdata secret to be gone",
        || async {
            let machine_left = machines
                .get_opt("e2e-m1")
                .await
                .map_err(|e| e.to_string())?
                .is_some();
            let vm_left = vms
                .get_opt("e2e-m1")
                .await
                .map_err(|e| e.to_string())?
                .is_some();
            let secret_left = secrets
                .get_opt("userdata-e2e-m1")
                .await
                .map_err(|e| e.to_string())?
                .is_some();
            if machine_left || vm_left || secret_left {
                Err(format!(
                    "machine {machine_left} vm {vm_left} secret {secret_left}"
                ))
            } else {
                Ok(())
            }
        },
    )
    .await;

    // Orphan collection: a VM made by this provider for a Machine that does not exist.
    let mut orphan = Machine::new("e2e-orphan", Default::default());
    orphan.metadata.namespace = Some(ns.clone());
    let driver = mcm_provider_kubevirt::kubevirt_driver();
    let secret_now = secrets.get("e2e-cloud").await.unwrap();
    driver
        .create_machine(&MachineRequest {
            machine: orphan,
            machine_class: classes.get("e2e-class").await.unwrap(),
            secret: secret_now,
        })
        .await
        .expect("orphan VM created");
    assert!(vms.get_opt("e2e-orphan").await.unwrap().is_some());
    eventually("the orphan VM to be collected", || async {
        match vms.get_opt("e2e-orphan").await.map_err(|e| e.to_string())? {
            Some(_) => Err("orphan VM still there".into()),
            None => Ok(()),
        }
    })
    .await;

    // Clean-up: the class loses its finalizer once unused, then the secret; then the namespace.
    classes
        .delete("e2e-class", &DeleteParams::default())
        .await
        .ok();
    eventually("the class and the secret finalizer to go", || async {
        let class_left = classes
            .get_opt("e2e-class")
            .await
            .map_err(|e| e.to_string())?
            .is_some();
        let secret = secrets.get("e2e-cloud").await.map_err(|e| e.to_string())?;
        let finalized = secret
            .metadata
            .finalizers
            .unwrap_or_default()
            .iter()
            .any(|f| f == "machine.sapcloud.io/machine-controller");
        if class_left || finalized {
            Err(format!("class {class_left} secret finalizer {finalized}"))
        } else {
            Ok(())
        }
    })
    .await;
    drop(sidecar);
    namespaces.delete(&ns, &DeleteParams::default()).await.ok();
}

/// A plain HTTP/1.0 GET, enough for the sidecar's endpoint.
async fn http_get(port: u16, path: &str) -> String {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", port)).expect("endpoint reachable");
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
            .expect("request sent");
        let mut body = String::new();
        stream.read_to_string(&mut body).expect("response read");
        body
    })
    .await
    .expect("GET finished")
}
