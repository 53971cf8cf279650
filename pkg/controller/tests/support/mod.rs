//! Test doubles for the controller: a scripted in-memory [`Driver`] and fixtures in the
//! in-memory API server (control and target cluster share one server, as a Gardener seed
//! and shoot would be two; paths keep them apart: namespaced vs. cluster-scoped).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use kube_fake::FakeApiServer;
use serde_json::{Value, json};

use mcm_machine_controller::runtime::metrics::Metrics;
use mcm_machine_controller::{Context, Options, Outcome};
use mcm_provider_kubevirt::driver::*;
use mcm_provider_kubevirt::{Driver, MachineCode, MachineError};

pub const NS: &str = "shoot--dev--kv";
pub const MACHINES: &str = "/apis/machine.sapcloud.io/v1alpha1/namespaces/shoot--dev--kv/machines";
pub const CLASSES: &str =
    "/apis/machine.sapcloud.io/v1alpha1/namespaces/shoot--dev--kv/machineclasses";
pub const SECRETS: &str = "/api/v1/namespaces/shoot--dev--kv/secrets";
pub const NODES: &str = "/api/v1/nodes";
pub const KUBE_SYSTEM_SECRETS: &str = "/api/v1/namespaces/kube-system/secrets";
pub const USER_DATA: &str = "#cloud-config\nruncmd: [join <<BOOTSTRAP_TOKEN>> <<MACHINE_NAME>>]\n";

/// One recorded driver call: operation, machine name, userData as the driver saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub operation: &'static str,
    pub machine: String,
    pub user_data: String,
}

#[derive(Default)]
struct DriverState {
    /// VM name -> providerID.
    vms: BTreeMap<String, String>,
    calls: Vec<Call>,
    /// Errors to answer instead, per operation, consumed in order.
    failures: BTreeMap<&'static str, Vec<MachineError>>,
}

/// A driver whose VMs live in memory; stands for any MCM provider.
#[derive(Clone, Default)]
pub struct FakeDriver {
    state: Arc<Mutex<DriverState>>,
}

impl FakeDriver {
    pub fn fail_next(&self, operation: &'static str, error: MachineError) {
        self.state
            .lock()
            .unwrap()
            .failures
            .entry(operation)
            .or_default()
            .push(error);
    }
    pub fn add_vm(&self, name: &str) {
        self.state
            .lock()
            .unwrap()
            .vms
            .insert(name.into(), format!("fake://{name}"));
    }
    pub fn vms(&self) -> Vec<String> {
        self.state.lock().unwrap().vms.keys().cloned().collect()
    }
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }
    pub fn operations(&self) -> Vec<&'static str> {
        self.calls().iter().map(|c| c.operation).collect()
    }
    fn enter(
        &self,
        operation: &'static str,
        request: Option<&MachineRequest>,
    ) -> Result<(), MachineError> {
        let mut state = self.state.lock().unwrap();
        let (machine, user_data) = request
            .map(|r| {
                let user_data = r
                    .secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get("userData"))
                    .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                    .unwrap_or_default();
                (
                    r.machine.metadata.name.clone().unwrap_or_default(),
                    user_data,
                )
            })
            .unwrap_or_default();
        state.calls.push(Call {
            operation,
            machine,
            user_data,
        });
        match state.failures.get_mut(operation) {
            Some(queue) if !queue.is_empty() => Err(queue.remove(0)),
            _ => Ok(()),
        }
    }
}

/// The address the fake CreateMachine reports, and the one GetMachineStatus reports.
pub const CREATE_ADDRESS: &str = "192.0.2.10";
pub const STATUS_ADDRESS: &str = "10.0.0.7";

pub fn node_address(type_: &str, address: &str) -> k8s_openapi::api::core::v1::NodeAddress {
    k8s_openapi::api::core::v1::NodeAddress {
        type_: type_.into(),
        address: address.into(),
    }
}

fn name_of(request: &MachineRequest) -> String {
    request.machine.metadata.name.clone().unwrap_or_default()
}

#[async_trait]
impl Driver for FakeDriver {
    async fn create_machine(
        &self,
        request: &CreateMachineRequest,
    ) -> Result<CreateMachineResponse, MachineError> {
        self.enter("CreateMachine", Some(request))?;
        let name = name_of(request);
        let provider_id = format!("fake://{name}");
        self.state
            .lock()
            .unwrap()
            .vms
            .insert(name.clone(), provider_id.clone());
        Ok(CreateMachineResponse {
            provider_id,
            node_name: name,
            last_known_state: "created".into(),
            // Reported by CreateMachine only, as some providers do.
            addresses: vec![node_address("ExternalIP", CREATE_ADDRESS)],
        })
    }
    async fn initialize_machine(
        &self,
        request: &InitializeMachineRequest,
    ) -> Result<InitializeMachineResponse, MachineError> {
        self.enter("InitializeMachine", Some(request))?;
        Err(MachineError::unimplemented("not needed"))
    }
    async fn delete_machine(
        &self,
        request: &DeleteMachineRequest,
    ) -> Result<DeleteMachineResponse, MachineError> {
        self.enter("DeleteMachine", Some(request))?;
        self.state.lock().unwrap().vms.remove(&name_of(request));
        Ok(DeleteMachineResponse {
            last_known_state: "deleted".into(),
        })
    }
    async fn get_machine_status(
        &self,
        request: &GetMachineStatusRequest,
    ) -> Result<GetMachineStatusResponse, MachineError> {
        self.enter("GetMachineStatus", Some(request))?;
        let name = name_of(request);
        match self.state.lock().unwrap().vms.get(&name) {
            Some(id) => Ok(GetMachineStatusResponse {
                provider_id: id.clone(),
                node_name: name,
                addresses: vec![node_address("InternalIP", STATUS_ADDRESS)],
            }),
            None => Err(MachineError::not_found(format!(
                "machine {name:?} not found"
            ))),
        }
    }
    async fn list_machines(
        &self,
        _request: &ListMachinesRequest,
    ) -> Result<ListMachinesResponse, MachineError> {
        self.enter("ListMachines", None)?;
        let vms = self.state.lock().unwrap().vms.clone();
        Ok(ListMachinesResponse {
            machine_list: vms.into_iter().map(|(name, id)| (id, name)).collect(),
        })
    }
    async fn get_volume_ids(
        &self,
        request: &GetVolumeIdsRequest,
    ) -> Result<GetVolumeIdsResponse, MachineError> {
        self.enter("GetVolumeIDs", None)?;
        let volume_ids = request
            .pv_specs
            .iter()
            .filter_map(|s| s.csi.as_ref())
            .map(|c| c.volume_handle.clone())
            .collect();
        Ok(GetVolumeIdsResponse { volume_ids })
    }
}

pub fn code_error(code: MachineCode) -> MachineError {
    MachineError::new(code, format!("injected {}", code.name()))
}

pub struct World {
    pub server: FakeApiServer,
    pub driver: FakeDriver,
    pub ctx: Context,
}

pub fn options(args: &[&str]) -> Options {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        options: Options,
    }
    let mut argv = vec!["machine-controller", "--namespace", NS];
    argv.extend_from_slice(args);
    <Cli as clap::Parser>::parse_from(argv).options
}

/// A control cluster with a MachineClass (finalized) and its Secret; with a target cluster.
pub fn world() -> World {
    world_with(&[], true)
}

pub fn world_with(args: &[&str], with_target: bool) -> World {
    let server = FakeApiServer::new();
    let driver = FakeDriver::default();
    server.insert(
        SECRETS,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cloud", "namespace": NS},
               "data": {"userData": b64(USER_DATA), "kubeconfig": b64("not used by the fake")}}),
    );
    server.insert(
        CLASSES,
        json!({"apiVersion": "machine.sapcloud.io/v1alpha1", "kind": "MachineClass",
               "metadata": {"name": "class-a", "namespace": NS, "finalizers": ["machine.sapcloud.io/machine-controller-manager"]},
               "providerSpec": {"zone": "z1"},
               "secretRef": {"name": "cloud", "namespace": NS}}),
    );
    let target = with_target.then(|| server.client("default"));
    let ctx = Context::new(
        server.client(NS),
        target,
        Arc::new(driver.clone()),
        options(args),
        Arc::new(Metrics::new()),
    );
    World {
        server,
        driver,
        ctx,
    }
}

pub fn b64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Seconds-ago timestamp in RFC 3339.
pub fn ago(seconds: i64) -> String {
    let t =
        k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(seconds);
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn machine_json(name: &str, extra: Value) -> Value {
    let mut machine = json!({
        "apiVersion": "machine.sapcloud.io/v1alpha1", "kind": "Machine",
        "metadata": {"name": name, "namespace": NS, "creationTimestamp": ago(10), "labels": {"name": "pool-a"}},
        "spec": {"class": {"kind": "MachineClass", "name": "class-a"}}
    });
    json_patch::merge(&mut machine, &extra);
    machine
}

pub fn ready_node(name: &str, ready: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
           "status": {"conditions": [
               {"type": "Ready", "status": ready, "lastTransitionTime": ago(3600)},
               {"type": "DiskPressure", "status": "False"}]}})
}

impl World {
    pub fn machine(&self, name: &str) -> Option<Value> {
        self.server.get(MACHINES, name)
    }
    pub async fn get_machine(&self, name: &str) -> mcm_provider_kubevirt::mcm::Machine {
        self.ctx.machines().get(name).await.unwrap()
    }
    pub async fn reconcile(&self, name: &str) -> Outcome {
        let machine = self.get_machine(name).await;
        let result = mcm_machine_controller::machine::reconcile_machine(&self.ctx, &machine).await;
        Outcome::of(&result, &self.ctx.options)
    }
    /// Reconciles until `done` holds (at most `limit` times); returns the requeues.
    pub async fn reconcile_until(
        &self,
        name: &str,
        limit: usize,
        done: impl Fn(&World) -> bool,
    ) -> Vec<Outcome> {
        let mut requeues = Vec::new();
        for _ in 0..limit {
            if done(self) {
                return requeues;
            }
            requeues.push(self.reconcile(name).await);
        }
        assert!(
            done(self),
            "not converged after {limit} reconciles: {requeues:#?}\nmachine: {:#}",
            self.machine(name).unwrap_or_default()
        );
        requeues
    }
    pub fn status(&self, name: &str, pointer: &str) -> Value {
        self.machine(name).unwrap_or_default()["status"]
            .pointer(pointer)
            .cloned()
            .unwrap_or(Value::Null)
    }
}

// --- The real KubeVirt driver over the fake server -----------------------------------------
//
// One in-memory server plays control cluster (Machines in NS), target cluster (Nodes,
// kube-system) and KubeVirt provider cluster (VMs and userdata Secrets in VM_NS), so a test
// sees every write of the whole stack: reconcile -> driver -> KubeVirt SPI.

pub const VM_NS: &str = "vms";
pub const VMS: &str = "/apis/kubevirt.io/v1/namespaces/vms/virtualmachines";
pub const VM_SECRETS: &str = "/api/v1/namespaces/vms/secrets";
/// Markers that must never leave the Secret they are in (logs, errors, statuses).
pub const KUBECONFIG_TOKEN: &str = "kubeconfig-token-7d2f9c";
pub const USER_DATA_MARKER: &str = "userdata-marker-51e8a0";

/// Provider-cluster clients from the fake server: the driver parses the kubeconfig (and
/// takes its namespace) as it would for a real cluster, but talks to the double.
pub struct FakeProviderClients(pub FakeApiServer);

#[async_trait]
impl mcm_provider_kubevirt::kubevirt::kube_spi::ClientFactory for FakeProviderClients {
    async fn client(
        &self,
        access: &mcm_provider_kubevirt::secret::ClusterAccess,
    ) -> Result<kube::Client, mcm_provider_kubevirt::spi::SpiError> {
        Ok(self.0.client(&access.namespace))
    }
}

pub fn provider_kubeconfig() -> String {
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: kv\nclusters:\n- name: kv\n  cluster:\n    server: https://kubevirt.example:6443\ncontexts:\n- name: kv\n  context:\n    cluster: kv\n    user: u\n    namespace: {VM_NS}\nusers:\n- name: u\n  user:\n    token: {KUBECONFIG_TOKEN}\n"
    )
}

/// A context as a freshly started sidecar would have it, over the server's store.
pub fn kubevirt_context(server: &FakeApiServer) -> Context {
    let driver = mcm_provider_kubevirt::MachinePlugin::new(
        mcm_provider_kubevirt::KubeVirtSpi::new(FakeProviderClients(server.clone())),
    );
    Context::new(
        server.client(NS),
        Some(server.client("default")),
        Arc::new(driver),
        options(&[]),
        Arc::new(Metrics::new()),
    )
}

/// The control cluster with a KubeVirt MachineClass "class-a" and its Secret.
pub fn kubevirt_server() -> FakeApiServer {
    let server = FakeApiServer::new();
    let user_data = format!(
        "#cloud-config\nruncmd: [echo {USER_DATA_MARKER} <<BOOTSTRAP_TOKEN>> <<MACHINE_NAME>>]\n"
    );
    server.insert(
        SECRETS,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cloud", "namespace": NS},
               "data": {"userData": b64(&user_data), "kubeconfig": b64(&provider_kubeconfig())}}),
    );
    server.insert(
        CLASSES,
        json!({"apiVersion": "machine.sapcloud.io/v1alpha1", "kind": "MachineClass",
               "metadata": {"name": "class-a", "namespace": NS,
                            "finalizers": ["machine.sapcloud.io/machine-controller-manager"]},
               "provider": "KubeVirt",
               "providerSpec": {
                   "region": "r", "zone": "z",
                   "resources": {"requests": {"cpu": 1, "memory": "1Gi"}},
                   "rootVolume": {"pvc": {"resources": {"requests": {"storage": "8Gi"}}},
                                  "source": {"blank": {}}}},
               "secretRef": {"name": "cloud", "namespace": NS}}),
    );
    server
}

/// Reconciles the stored machine, read from the store directly: the controller's watch
/// delivers it, and a fault test must not fail on its own reads. `None` once it is gone.
pub async fn reconcile_stored(
    ctx: &Context,
    server: &FakeApiServer,
    name: &str,
) -> Option<Outcome> {
    let machine = serde_json::from_value(server.get(MACHINES, name)?).ok()?;
    let result = mcm_machine_controller::machine::reconcile_machine(ctx, &machine).await;
    Some(Outcome::of(&result, &ctx.options))
}
