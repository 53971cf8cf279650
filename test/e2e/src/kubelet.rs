//! A fake kubelet for scenarios without real VMs: it registers a Ready Node for every
//! Machine that has a `node` label, as the kubelet on the booted VM would, and renews its
//! heartbeat so kube-controller-manager's node lifecycle controller keeps it Ready.
//!
//! It also plays the kubelet's part in a pod's life on its Nodes: a pod bound to a Ready
//! Node is reported Running and Ready (its containers started), and a pod being deleted
//! gracefully (an eviction) is removed once its containers would have stopped, with the
//! final grace-0 delete a kubelet sends. Without it such a pod stays Terminating forever
//! on a real API server, and no drain could end.
//!
//! It stands for the kubelet only: labels, finalizers and taints MCM puts on the Node
//! are left to the controller under test.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, NodeSpec, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{
    DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions,
};
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
    /// Nodes whose kubelet reports NotReady (it runs, its node does not work).
    not_ready: BTreeSet<String>,
    /// Nodes whose Ready condition changes with their next status update.
    transitions: BTreeSet<String>,
    /// Pods (`namespace/name`) seen Terminating and removed, in that order.
    finished: Vec<String>,
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
        let task = tokio::spawn(run(client, namespace.to_owned(), state.clone()));
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

    /// From its next status update on, the kubelet of `node` reports the Node NotReady
    /// (reason `KubeletNotReady`, as when the container network is down) while it keeps
    /// renewing its heartbeat and finishing pods being deleted: a node that stopped
    /// working, not a lost one (whose Ready condition the node lifecycle controller would
    /// turn Unknown).
    pub fn report_not_ready(&self, node: &str) {
        let mut state = self.state.lock().expect("kubelet state");
        if state.not_ready.insert(node.to_owned()) {
            state.transitions.insert(node.to_owned());
        }
    }

    /// The pods (`namespace/name`) this kubelet saw being deleted gracefully and removed.
    pub fn finished_pods(&self) -> Vec<String> {
        let state = self.state.lock().expect("kubelet state");
        state.finished.clone()
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(client: Client, namespace: String, state: Arc<Mutex<State>>) {
    let machines: Api<Machine> = Api::namespaced(client.clone(), &namespace);
    let nodes: Api<Node> = Api::all(client.clone());
    loop {
        // Errors are transient here (the API server is busy); the next round retries.
        if let Ok(list) = machines.list(&ListParams::default()).await {
            for machine in list.items {
                let _ = register(&machine, &nodes, &namespace, &state).await;
            }
        }
        let due: Vec<(String, bool, bool)> = {
            let state = state.lock().expect("kubelet state");
            state
                .registered
                .iter()
                .filter(|(name, last)| {
                    last.elapsed() >= HEARTBEAT || state.transitions.contains(*name)
                })
                .map(|(name, _)| {
                    let ready = !state.not_ready.contains(name);
                    (name.clone(), ready, state.transitions.contains(name))
                })
                .collect()
        };
        for (name, ready, transition) in due {
            match report_status(&nodes, &name, ready, false, transition).await {
                Ok(()) => {
                    let mut state = state.lock().expect("kubelet state");
                    if let Some(last) = state.registered.get_mut(&name) {
                        *last = Instant::now();
                    }
                    if transition {
                        state.transitions.remove(&name);
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
        let _ = run_pods(&client, &state).await;
        tokio::time::sleep(POLL).await;
    }
}

/// The kubelet's part in the life of the pods bound to the registered Nodes: a new pod on
/// a Ready Node is started (Running and Ready); a pod being deleted is removed, as the
/// kubelet removes it once its containers have stopped.
async fn run_pods(client: &Client, state: &Mutex<State>) -> Result<(), kube::Error> {
    let (registered, not_ready) = {
        let state = state.lock().expect("kubelet state");
        let registered: BTreeSet<String> = state.registered.keys().cloned().collect();
        (registered, state.not_ready.clone())
    };
    if registered.is_empty() {
        return Ok(());
    }
    let all: Api<Pod> = Api::all(client.clone());
    for pod in all.list(&ListParams::default()).await?.items {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        if !registered.contains(&node) {
            continue;
        }
        let namespace = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        if pod.metadata.deletion_timestamp.is_some() {
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: pod.uid(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            if api.delete(&name, &params).await.is_ok() {
                let mut state = state.lock().expect("kubelet state");
                state.finished.push(format!("{namespace}/{name}"));
            }
        } else if !not_ready.contains(&node) && !is_running(&pod) {
            let _ = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(running()))
                .await;
        }
    }
    Ok(())
}

fn is_running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// A pod's status once its containers run and pass their readiness probes.
fn running() -> serde_json::Value {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let condition =
        |type_: &str| json!({"type": type_, "status": "True", "lastTransitionTime": now});
    json!({"status": {
        "phase": "Running",
        "startTime": now,
        "conditions": [
            condition("Initialized"),
            condition("Ready"),
            condition("ContainersReady"),
            condition("PodScheduled"),
        ],
    }})
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
    report_status(nodes, &name, true, true, false).await?;
    state
        .lock()
        .expect("kubelet state")
        .registered
        .insert(name, Instant::now());
    Ok(())
}

/// Kubelet's status update: Ready or not, no pressure, heartbeat now; transition times
/// on the `first` one, and the Ready condition's on a `transition` of it. A strategic
/// merge keeps conditions others set (the machine controller's Terminating) by type.
async fn report_status(
    nodes: &Api<Node>,
    name: &str,
    ready: bool,
    first: bool,
    transition: bool,
) -> Result<(), kube::Error> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let condition = |type_: &str, status: &str, reason: &str, changed: bool| {
        let mut condition = json!({
            "type": type_,
            "status": status,
            "reason": reason,
            "lastHeartbeatTime": now,
        });
        if changed {
            condition["lastTransitionTime"] = json!(now);
        }
        condition
    };
    let mut ready_condition = if ready {
        condition("Ready", "True", "KubeletReady", first || transition)
    } else {
        condition("Ready", "False", "KubeletNotReady", first || transition)
    };
    // Kubelet's messages; a strategic merge would keep a stale one otherwise.
    ready_condition["message"] = json!(if ready {
        "kubelet is posting ready status"
    } else {
        "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady"
    });
    let status = json!({
        "status": {
            "conditions": [
                ready_condition,
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", first),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", first),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", first),
            ]
        }
    });
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(status))
        .await
        .map(|_| ())
}
