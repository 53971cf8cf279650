//! A fake kubelet for scenarios without real VMs: it registers a Ready Node for every
//! Machine that has a `node` label, as the kubelet on the booted VM would, and renews its
//! heartbeat so kube-controller-manager's node lifecycle controller keeps it Ready.
//!
//! It stands for the kubelet only: labels, finalizers and taints MCM puts on the Node
//! are left to the controller under test.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, NodeSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use mcm_provider_kubevirt::mcm::Machine;

use crate::bed::SCENARIO_LABEL;

/// How often Machines are looked at for a Node to register.
const POLL: Duration = Duration::from_millis(500);
/// How often a registered Node's heartbeat is renewed: well within the node lifecycle
/// controller's 40s grace period, as kubelet's 10s status updates are.
const HEARTBEAT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct State {
    /// Node name -> when its status was last written.
    registered: BTreeMap<String, Instant>,
    /// Nodes never to be registered or renewed again: their kubelet is gone.
    forgotten: BTreeSet<String>,
}

/// The running fake kubelet; stopped when dropped.
pub struct FakeKubelet {
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeKubelet {
    /// Starts registering Nodes for the Machines in `namespace`, each labelled
    /// `SCENARIO_LABEL=<namespace>`.
    pub fn start(client: Client, namespace: &str) -> FakeKubelet {
        let state = Arc::new(Mutex::new(State::default()));
        let machines: Api<Machine> = Api::namespaced(client.clone(), namespace);
        let nodes: Api<Node> = Api::all(client);
        let task = tokio::spawn(run(machines, nodes, namespace.to_owned(), state.clone()));
        FakeKubelet { state, task }
    }

    /// The kubelet of `node` is gone (its VM is lost): the Node is neither registered
    /// again nor renewed, so a Node the scenario deletes stays deleted.
    pub fn forget(&self, node: &str) {
        let mut state = self.state.lock().expect("kubelet state");
        state.registered.remove(node);
        state.forgotten.insert(node.to_owned());
    }

    /// Names of the Nodes registered so far (and not forgotten).
    pub fn registered(&self) -> Vec<String> {
        let state = self.state.lock().expect("kubelet state");
        state.registered.keys().cloned().collect()
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    machines: Api<Machine>,
    nodes: Api<Node>,
    namespace: String,
    state: Arc<Mutex<State>>,
) {
    loop {
        // Errors are transient here (the API server is busy); the next round retries.
        if let Ok(list) = machines.list(&ListParams::default()).await {
            for machine in list.items {
                let _ = register(&machine, &nodes, &namespace, &state).await;
            }
        }
        let due: Vec<String> = {
            let state = state.lock().expect("kubelet state");
            state
                .registered
                .iter()
                .filter(|(_, last)| last.elapsed() >= HEARTBEAT)
                .map(|(name, _)| name.clone())
                .collect()
        };
        for name in due {
            match report_ready(&nodes, &name, false).await {
                Ok(()) => {
                    let mut state = state.lock().expect("kubelet state");
                    if let Some(last) = state.registered.get_mut(&name) {
                        *last = Instant::now();
                    }
                }
                // The Node is gone (the machine controller deleted it with its VM):
                // this kubelet is gone too.
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    state
                        .lock()
                        .expect("kubelet state")
                        .registered
                        .remove(&name);
                }
                Err(_) => {}
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Registers the Node of a Machine whose VM exists: once the machine controller has set
/// its `node` label and providerID, and while it is not being deleted (a VM being
/// deleted does not boot a kubelet).
async fn register(
    machine: &Machine,
    nodes: &Api<Node>,
    namespace: &str,
    state: &Mutex<State>,
) -> Result<(), kube::Error> {
    if machine.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let (Some(name), Some(provider_id)) = (
        machine.labels().get("node").cloned(),
        machine.spec.provider_id.clone().filter(|id| !id.is_empty()),
    ) else {
        return Ok(());
    };
    {
        let state = state.lock().expect("kubelet state");
        if state.registered.contains_key(&name) || state.forgotten.contains(&name) {
            return Ok(());
        }
    }
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(
                [
                    (SCENARIO_LABEL.to_owned(), namespace.to_owned()),
                    ("kubernetes.io/hostname".to_owned(), name.clone()),
                    ("kubernetes.io/os".to_owned(), "linux".to_owned()),
                    ("kubernetes.io/arch".to_owned(), "amd64".to_owned()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            provider_id: Some(provider_id),
            ..Default::default()
        }),
        ..Default::default()
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        // Registered in an earlier round whose status write failed.
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => return Err(error),
    }
    report_ready(nodes, &name, true).await?;
    state
        .lock()
        .expect("kubelet state")
        .registered
        .insert(name, Instant::now());
    Ok(())
}

/// Kubelet's status update: Ready, no pressure, heartbeat now (and transition time on
/// the `first` one). A strategic merge keeps conditions others set (the machine
/// controller's Terminating) by type.
async fn report_ready(nodes: &Api<Node>, name: &str, first: bool) -> Result<(), kube::Error> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let condition = |type_: &str, status: &str, reason: &str| {
        let mut condition = json!({
            "type": type_,
            "status": status,
            "reason": reason,
            "lastHeartbeatTime": now,
        });
        if first {
            condition["lastTransitionTime"] = json!(now);
        }
        condition
    };
    let status = json!({
        "status": {
            "conditions": [
                condition("Ready", "True", "KubeletReady"),
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID"),
            ]
        }
    });
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(status))
        .await
        .map(|_| ())
}
