//! One scenario's slice of the real cluster: a fresh namespace, the provider Secret and the
//! sample MachineClass in it, the sidecar binary started against it, and the checks every
//! scenario ends with (the machines' end state, nothing left behind).
//!
//! The one cluster `E2E_KUBECONFIG` names is control, target and provider cluster at once;
//! scenarios only ever touch their own namespace and the Nodes they register themselves
//! (labelled with [`SCENARIO_LABEL`]), so they can run side by side.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Node, NodeCondition, Pod, Secret, ServiceAccount};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, ObjectMeta, Patch,
    PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, Resource, ResourceExt};
use kubevirt_api::kubevirt::v1::virtualmachines::VirtualMachine;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use mcm_provider_kubevirt::kubevirt::ownership::{
    CLUSTER_LABEL, MACHINE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
};
use mcm_provider_kubevirt::mcm::{Machine, MachineClass};

use crate::kubelet::FakeKubelet;

/// MCM's finalizer on Machines and MachineClasses.
pub const MCM_FINALIZER: &str = "machine.sapcloud.io/machine-controller-manager";
/// The sidecar's finalizer on the Secrets classes refer to.
pub const SECRET_FINALIZER: &str = "machine.sapcloud.io/machine-controller";
/// On every cluster-scoped object a scenario creates (Nodes), naming its namespace, so
/// teardown finds them.
pub const SCENARIO_LABEL: &str = "e2e.kubevirt.provider.machine.sapcloud.io/namespace";
/// How long a scenario waits for a state it expects by default.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// The repository root.
pub fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// Polls `check` every half second until it answers `Ok` or `patience` has passed, then
/// panics with the last reason. Returns how long it took.
pub async fn eventually<F, Fut>(what: &str, patience: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    loop {
        let why = match check().await {
            Ok(()) => return started.elapsed(),
            Err(why) => why,
        };
        if started.elapsed() > patience {
            panic!("timed out after {patience:?} waiting for {what}: {why}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The condition of `type_` of `node`, if it has one.
pub fn node_condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|conditions| conditions.iter().find(|c| c.type_ == type_))
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// A scenario's namespace on the cluster `E2E_KUBECONFIG` names.
pub struct Bed {
    pub client: Client,
    pub kubeconfig_path: PathBuf,
    pub namespace: String,
    /// Objects outside the namespace for teardown to delete.
    outside: Mutex<Vec<(ApiResource, Option<String>, String)>>,
}

impl Bed {
    /// A fresh namespace `e2e-<scenario>-<random>`, or `None` (with a message) when
    /// `E2E_KUBECONFIG` is not set.
    pub async fn new(scenario: &str) -> Option<Bed> {
        let Ok(path) = std::env::var("E2E_KUBECONFIG") else {
            eprintln!(
                "skipping {scenario}: set E2E_KUBECONFIG to a kubeconfig of a cluster with the MCM and KubeVirt CRDs (see README, End-to-end tests)"
            );
            return None;
        };
        let client = client_from(Path::new(&path)).await;
        let namespace = format!("e2e-{scenario}-{:06x}", rand::random::<u32>() & 0xff_ffff);
        let object = Namespace {
            metadata: ObjectMeta {
                name: Some(namespace.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &object)
            .await
            .expect("namespace created");
        eprintln!("{scenario}: namespace {namespace}");
        Some(Bed {
            client,
            kubeconfig_path: PathBuf::from(path),
            namespace,
            outside: Mutex::new(Vec::new()),
        })
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn machines(&self) -> Api<Machine> {
        self.api()
    }

    pub fn classes(&self) -> Api<MachineClass> {
        self.api()
    }

    pub fn secrets(&self) -> Api<Secret> {
        self.api()
    }

    pub fn vms(&self) -> Api<VirtualMachine> {
        self.api()
    }

    pub fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// The provider kubeconfig for this cluster with the scenario's namespace for the VMs:
    /// the kubeconfig's current context with its files inlined.
    pub fn provider_kubeconfig(&self) -> String {
        let text = std::fs::read_to_string(&self.kubeconfig_path).expect("E2E_KUBECONFIG read");
        let dir = self
            .kubeconfig_path
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default();
        crate::provider_kubeconfig(&text, &dir, &self.namespace)
            .unwrap_or_else(|why| panic!("E2E_KUBECONFIG {why}"))
    }

    /// A provider Secret `name` with `kubeconfig` and a cloud-config userData.
    pub async fn create_provider_secret(&self, name: &str, kubeconfig: &str) -> Secret {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(
                [
                    (
                        "kubeconfig".to_owned(),
                        ByteString(kubeconfig.as_bytes().to_vec()),
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
        self.secrets()
            .create(&PostParams::default(), &secret)
            .await
            .expect("provider secret created")
    }

    /// The sample MachineClass (`kubernetes/machine-class.yaml`) as `name`, in this
    /// namespace, referring to the Secret `secret`; not yet created.
    pub fn sample_class(&self, name: &str, secret: &str) -> MachineClass {
        let sample =
            std::fs::read_to_string(repo("kubernetes/machine-class.yaml")).expect("sample class");
        let mut class: Value = serde_saphyr::from_str(&sample).expect("sample class parses");
        class["metadata"] = json!({"name": name, "namespace": self.namespace});
        class["secretRef"] = json!({"name": secret, "namespace": self.namespace});
        serde_json::from_value(class).expect("the sample is a MachineClass")
    }

    pub async fn create_class(&self, name: &str, secret: &str) -> MachineClass {
        self.classes()
            .create(&PostParams::default(), &self.sample_class(name, secret))
            .await
            .expect("machine class created")
    }

    /// A Machine of `class`, as a user applies it.
    pub async fn create_machine(&self, name: &str, class: &str) -> Machine {
        self.create_machine_with(name, class, json!({})).await
    }

    /// A Machine of `class` with `spec` merged into its spec (timeouts, for instance).
    pub async fn create_machine_with(&self, name: &str, class: &str, spec: Value) -> Machine {
        let mut machine = Machine::new(name, Default::default());
        machine.spec.class.kind = Some("MachineClass".into());
        machine.spec.class.name = class.into();
        if let Value::Object(fields) = spec {
            machine.spec.extra.extend(fields);
        }
        self.machines()
            .create(&PostParams::default(), &machine)
            .await
            .expect("machine created")
    }

    /// The sidecar binary with the flags of a Gardener deployment, against this cluster
    /// and namespace, without leader election; `extra` flags come last and win.
    pub fn sidecar(&self, name: &str, extra: &[String]) -> Sidecar {
        let kubeconfig = self.kubeconfig_path.display().to_string();
        let port = free_port();
        let mut args = vec![
            format!("--control-kubeconfig={kubeconfig}"),
            format!("--target-kubeconfig={kubeconfig}"),
            format!("--namespace={}", self.namespace),
            format!("--port={port}"),
            "--address=127.0.0.1".to_owned(),
            "--leader-elect=false".to_owned(),
            "--v=4".to_owned(),
        ];
        args.extend(extra.iter().cloned());
        Sidecar::start(name, &args, port)
    }

    /// The Machine `name`, for a check (`eventually`) to retry on any error.
    pub async fn machine(&self, name: &str) -> Result<Machine, String> {
        self.machines().get(name).await.map_err(|e| e.to_string())
    }

    /// The Node `name`, for a check to retry on any error.
    pub async fn node(&self, name: &str) -> Result<Node, String> {
        self.nodes().get(name).await.map_err(|e| e.to_string())
    }

    /// The start of a scenario about a joined machine: the provider Secret `cloud`, the
    /// class `class`, the sidecar, a fake kubelet, and the Machine `name` (`spec` merged
    /// into its spec) Running on its Ready Node `name`.
    pub async fn running_machine(&self, name: &str, spec: Value) -> (Sidecar, FakeKubelet) {
        let kubeconfig = self.provider_kubeconfig();
        self.create_provider_secret("cloud", &kubeconfig).await;
        self.create_class("class", "cloud").await;
        let sidecar = self.sidecar("sidecar", &[]);
        let kubelet = FakeKubelet::start(self.client.clone(), &self.namespace);
        self.create_machine_with(name, "class", spec).await;
        self.wait_for_phase(name, "Running", PATIENCE).await;
        (sidecar, kubelet)
    }

    /// The phase of the Machine `name` ("" while it has none).
    pub async fn machine_phase(&self, name: &str) -> Result<String, String> {
        let machine = self.machine(name).await?;
        Ok(machine
            .status
            .and_then(|s| s.current_status)
            .and_then(|c| c.phase)
            .unwrap_or_default())
    }

    /// Waits until the Machine `name` is in `phase`.
    pub async fn wait_for_phase(&self, name: &str, phase: &str, patience: Duration) {
        eventually(&format!("machine {name} {phase}"), patience, || async {
            match self.machine_phase(name).await? {
                current if current == phase => Ok(()),
                current => Err(format!("phase {current:?}")),
            }
        })
        .await;
    }

    /// Merges `patch` into the Node `name`, as a user or another controller edits it.
    pub async fn patch_node(&self, name: &str, patch: Value) -> Node {
        self.nodes()
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap_or_else(|e| panic!("node {name} patched: {e}"))
    }

    /// A Pod `name` bound to the Node `node` as the scheduler binds it (`spec.nodeName`),
    /// with the default termination grace period; its "kubelet" is the scenario's
    /// [`FakeKubelet`](crate::kubelet::FakeKubelet). Created once the namespace's default
    /// ServiceAccount exists, which admission requires.
    pub async fn create_pod_on(&self, name: &str, node: &str, labels: Value) -> Pod {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "nodeName": node,
                "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.7"}],
            },
        }))
        .expect("a Pod");
        let accounts = self.api::<ServiceAccount>();
        eventually("the default ServiceAccount", PATIENCE, || async {
            match accounts.get_opt("default").await {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err("not created yet".into()),
                Err(error) => Err(error.to_string()),
            }
        })
        .await;
        self.api::<Pod>()
            .create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("pod {name} created: {e}"))
    }

    /// Ok once `name` is created as CreateMachine and MCM's creation flow leave it: the
    /// VM with the provider's labels, its userdata Secret owned by the VM, and the Machine
    /// with finalizer, `node` label, providerID and phase Pending.
    pub async fn machine_created(&self, name: &str) -> Result<(), String> {
        let vm = self
            .vms()
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no VM {name} yet"))?;
        let labels = vm.labels();
        if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY_VALUE)
            || labels.get(MACHINE_LABEL).map(String::as_str) != Some(name)
            || labels.get(CLUSTER_LABEL) != Some(&self.namespace)
        {
            return Err(format!("VM {name} labels {labels:?}"));
        }
        let userdata = self
            .secrets()
            .get_opt(&format!("userdata-{name}"))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no userdata-{name}"))?;
        if !userdata
            .owner_references()
            .iter()
            .any(|owner| owner.kind == "VirtualMachine" && Some(&owner.uid) == vm.uid().as_ref())
        {
            return Err(format!("userdata-{name} is not owned by its VM"));
        }
        let machine = self.machines().get(name).await.map_err(|e| e.to_string())?;
        let status = machine.status.clone().unwrap_or_default();
        let phase = status.current_status.and_then(|c| c.phase);
        let node_label = machine.labels().get("node").cloned();
        let ok = machine.spec.provider_id.as_deref() == Some(&format!("kubevirt://{name}"))
            && node_label.as_deref() == Some(name)
            && machine.finalizers().iter().any(|f| f == MCM_FINALIZER)
            && matches!(phase.as_deref(), Some("Pending" | "Running"));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "machine {name}: providerID {:?}, node label {node_label:?}, finalizers {:?}, phase {phase:?}, lastOperation {:?}",
                machine.spec.provider_id,
                machine.finalizers(),
                status.last_operation
            ))
        }
    }

    /// Ok once neither the Machine `name`, nor its VM, nor its userdata Secret exist.
    pub async fn machine_gone(&self, name: &str) -> Result<(), String> {
        let machine = self
            .machines()
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())?;
        let vm = self.vms().get_opt(name).await.map_err(|e| e.to_string())?;
        let userdata = self
            .secrets()
            .get_opt(&format!("userdata-{name}"))
            .await
            .map_err(|e| e.to_string())?;
        if machine.is_none() && vm.is_none() && userdata.is_none() {
            Ok(())
        } else {
            Err(format!(
                "{name}: machine left {}, VM left {}, userdata Secret left {}",
                machine.is_some(),
                vm.is_some(),
                userdata.is_some()
            ))
        }
    }

    /// Deletes the Machine `name` as a user does and waits until the sidecar's deletion
    /// flow has removed it, its VM and its userdata Secret.
    pub async fn delete_machine(&self, name: &str, patience: Duration) {
        self.machines()
            .delete(name, &DeleteParams::default())
            .await
            .expect("machine deleted");
        eventually(&format!("machine {name} to be gone"), patience, || {
            self.machine_gone(name)
        })
        .await;
    }

    /// Deletes the MachineClass `class` and waits until the sidecar lets it go and takes
    /// its finalizer off the class's Secret `secret`.
    pub async fn delete_class(&self, class: &str, secret: &str, patience: Duration) {
        self.classes()
            .delete(class, &DeleteParams::default())
            .await
            .expect("class deleted");
        eventually(
            "the class gone and its Secret's finalizer removed",
            patience,
            || async {
                let class_left = self
                    .classes()
                    .get_opt(class)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some();
                let secret = self
                    .secrets()
                    .get(secret)
                    .await
                    .map_err(|e| e.to_string())?;
                let finalized = secret.finalizers().iter().any(|f| f == SECRET_FINALIZER);
                if class_left || finalized {
                    Err(format!(
                        "class left {class_left}, secret finalizer left {finalized}"
                    ))
                } else {
                    Ok(())
                }
            },
        )
        .await;
    }

    /// Names of the VMs in the namespace, sorted.
    pub async fn vm_names(&self) -> Vec<String> {
        names_in(&self.vms(), |_| true).await
    }

    /// Names of the userdata Secrets in the namespace, sorted.
    pub async fn userdata_secret_names(&self) -> Vec<String> {
        names_in(&self.secrets(), |name| name.starts_with("userdata-")).await
    }

    /// Everything a scenario may leave behind, by kind and name: Machines, VMs, userdata
    /// Secrets, and Nodes it registered; empty when nothing is left.
    pub async fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let machines = names_in(&self.machines(), |_| true).await;
        left.extend(machines.iter().map(|name| format!("Machine {name}")));
        let vms = self.vm_names().await;
        left.extend(vms.iter().map(|name| format!("VirtualMachine {name}")));
        let secrets = self.userdata_secret_names().await;
        left.extend(secrets.iter().map(|name| format!("Secret {name}")));
        let ours = ListParams::default().labels(&format!("{SCENARIO_LABEL}={}", self.namespace));
        for node in self.nodes().list(&ours).await.expect("nodes").items {
            left.push(format!("Node {}", node.name_any()));
        }
        left
    }

    /// Waits until nothing is left behind (see [`Bed::leftovers`]).
    pub async fn assert_nothing_left(&self, patience: Duration) {
        eventually("nothing left behind", patience, || async {
            let left = self.leftovers().await;
            if left.is_empty() {
                Ok(())
            } else {
                Err(left.join(", "))
            }
        })
        .await;
    }

    /// Has `teardown` delete an object outside the namespace that the scenario created
    /// (a ClusterRole, a Role in kube-system...), however the scenario ends.
    pub fn delete_at_teardown(&self, resource: ApiResource, namespace: Option<&str>, name: &str) {
        self.outside
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((resource, namespace.map(str::to_owned), name.to_owned()));
    }

    /// Removes the namespace, the scenario's Nodes and what it registered with
    /// [`Bed::delete_at_teardown`], finalizers and all, so that a failed scenario leaves no
    /// namespace stuck Terminating with its controllers gone.
    pub async fn teardown(self) {
        // MCM's kinds and the sidecar's: all carry finalizers of controllers now stopped.
        for kind in ["Machine", "MachineClass", "MachineSet", "MachineDeployment"] {
            let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
                "machine.sapcloud.io",
                "v1alpha1",
                kind,
            ));
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &self.namespace, &resource);
            strip_finalizers(&api, &ListParams::default()).await;
        }
        strip_finalizers(&self.secrets(), &ListParams::default()).await;
        // Pods bound to a scenario's Nodes have no kubelet left to finish a graceful
        // deletion, which would hold the namespace Terminating.
        let _ = self
            .api::<Pod>()
            .delete_collection(
                &DeleteParams::default().grace_period(0),
                &ListParams::default(),
            )
            .await;
        let ours = ListParams::default().labels(&format!("{SCENARIO_LABEL}={}", self.namespace));
        strip_finalizers(&self.nodes(), &ours).await;
        let _ = self
            .nodes()
            .delete_collection(&DeleteParams::default(), &ours)
            .await;
        let outside = std::mem::take(
            &mut *self
                .outside
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for (resource, namespace, name) in outside.iter().rev() {
            let api: Api<DynamicObject> = match namespace {
                Some(namespace) => Api::namespaced_with(self.client.clone(), namespace, resource),
                None => Api::all_with(self.client.clone(), resource),
            };
            let _ = api.delete(name, &DeleteParams::default()).await;
        }
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.namespace, &DeleteParams::default())
            .await;
    }
}

/// The sorted names of the objects `api` lists that `keep` accepts.
async fn names_in<K>(api: &Api<K>, keep: impl Fn(&str) -> bool) -> Vec<String>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut names: Vec<String> = api
        .list(&ListParams::default())
        .await
        .expect("objects listed")
        .items
        .iter()
        .map(ResourceExt::name_any)
        .filter(|name| keep(name))
        .collect();
    names.sort();
    names
}

/// Takes every finalizer off the objects `api` lists with `params`.
async fn strip_finalizers<K>(api: &Api<K>, params: &ListParams)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let strip = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    let Ok(list) = api.list(params).await else {
        return;
    };
    for object in list {
        if !object.finalizers().is_empty() {
            let _ = api
                .patch(&object.name_any(), &PatchParams::default(), &strip)
                .await;
        }
    }
}

/// A kube client for the kubeconfig at `path`.
pub async fn client_from(path: &Path) -> Client {
    client_for(Kubeconfig::read_from(path).expect("kubeconfig readable")).await
}

/// A kube client for `kubeconfig`'s current context.
pub async fn client_for(kubeconfig: Kubeconfig) -> Client {
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig usable");
    Client::try_from(config).expect("client")
}

/// The sidecar binary: `E2E_BINARY`, or `target/debug/machine-controller` (build it first
/// with `cargo build -p machine-controller`).
pub fn binary() -> PathBuf {
    let path = std::env::var("E2E_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo("target/debug/machine-controller"));
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p machine-controller` or set E2E_BINARY",
        path.display()
    );
    path
}

/// A running `machine-controller`, its stderr in a log file; stopped when dropped, and
/// its log's tail printed then if the scenario is failing.
pub struct Sidecar {
    pub name: String,
    pub port: u16,
    pub log_path: PathBuf,
    child: Option<Child>,
}

impl Sidecar {
    pub fn start(name: &str, args: &[String], port: u16) -> Sidecar {
        Sidecar::start_binary(&binary(), name, args, port)
    }

    /// [`Sidecar::start`] with another binary than [`binary`] (the benchmark compares builds).
    pub fn start_binary(binary: &Path, name: &str, args: &[String], port: u16) -> Sidecar {
        let log_path = std::env::temp_dir().join(format!(
            "e2e-{name}-{}-{:06x}.log",
            std::process::id(),
            rand::random::<u32>() & 0xff_ffff
        ));
        let log = std::fs::File::create(&log_path).expect("sidecar log file");
        let child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the sidecar: {e}"));
        Sidecar {
            name: name.into(),
            port,
            log_path,
            child: Some(child),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// What the sidecar has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the sidecar has logged `needle`.
    pub async fn wait_for_log(&self, needle: &str, patience: Duration) {
        eventually(
            &format!("sidecar {} to log {needle:?}", self.name),
            patience,
            || async {
                if self.log().contains(needle) {
                    Ok(())
                } else {
                    Err("not logged yet".into())
                }
            },
        )
        .await;
    }

    /// SIGKILL: no shutdown of any kind, as when a node dies under the Pod.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process has ended, and its exit code if it has.
    pub fn exited(&mut self) -> Option<Option<i32>> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.code()),
            _ => None,
        }
    }

    /// `GET path` on the sidecar's HTTP endpoint; the whole response, headers included.
    pub async fn http_get(&self, path: &str) -> Result<String, String> {
        let (port, path) = (self.port, path.to_owned());
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut stream =
                std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
            stream
                .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
                .map_err(|e| e.to_string())?;
            let mut body = String::new();
            stream
                .read_to_string(&mut body)
                .map_err(|e| e.to_string())?;
            Ok(body)
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(80)..].join("\n");
            eprintln!(
                "--- last lines of sidecar {} ({}) ---\n{tail}",
                self.name,
                self.log_path.display()
            );
        } else {
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}
