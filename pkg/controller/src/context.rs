//! What every reconcile shares: the clients, the driver, the flags and the safety state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::{Node, NodeCondition, Secret};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use mcm_provider_kubevirt::Driver;
use mcm_provider_kubevirt::mcm::{Machine, MachineClass};

use crate::error::ApiError;
use crate::machine::health::permits::ReplacementPermits;
use crate::runtime::metrics::Metrics;
use crate::runtime::options::Options;

/// The Node `name` of the target cluster, if it exists.
pub async fn get_node(nodes: &Api<Node>, name: &str) -> Result<Option<Node>, ApiError> {
    nodes
        .get_opt(name)
        .await
        .map_err(|error| ApiError::new(format!("getting node {name:?}"), error))
}

/// The Node's condition of `type_`, if it has one.
pub fn node_condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|conditions| conditions.iter().find(|c| c.type_ == type_))
}

/// Sets one condition of the Node; a strategic merge by type keeps the kubelet's others.
pub async fn set_node_condition(
    nodes: &Api<Node>,
    node_name: &str,
    condition: NodeCondition,
) -> Result<(), kube::Error> {
    let patch = serde_json::json!({"status": {"conditions": [condition]}});
    nodes
        .patch_status(node_name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .map(drop)
}

pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// Shared state of the machine controller.
pub struct Context {
    /// The control cluster (Machines, MachineClasses, Secrets, the Lease).
    pub control: Client,
    /// The target cluster (Nodes, Pods, bootstrap tokens); `None` with `--target-kubeconfig=none`.
    pub target: Option<Client>,
    pub driver: Arc<dyn Driver>,
    pub options: Options,
    pub metrics: Arc<Metrics>,
    /// One machine replacement at a time per MachineDeployment.
    pub replacement_permits: ReplacementPermits,
    frozen: AtomicBool,
}

impl Context {
    pub fn new(
        control: Client,
        target: Option<Client>,
        driver: Arc<dyn Driver>,
        options: Options,
        metrics: Arc<Metrics>,
    ) -> Self {
        Context {
            control,
            target,
            driver,
            options,
            metrics,
            replacement_permits: ReplacementPermits::default(),
            frozen: AtomicBool::new(false),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.options.clusters.namespace
    }

    pub fn machines(&self) -> Api<Machine> {
        Api::namespaced(self.control.clone(), self.namespace())
    }

    pub fn machine_classes(&self) -> Api<MachineClass> {
        Api::namespaced(self.control.clone(), self.namespace())
    }

    pub fn secrets_in(&self, namespace: &str) -> Api<Secret> {
        Api::namespaced(self.control.clone(), namespace)
    }

    pub fn nodes(&self) -> Option<Api<Node>> {
        self.target.clone().map(Api::all)
    }

    /// Frozen by the safety controller while an API server is unreachable: machines
    /// not being deleted are left alone.
    pub fn is_frozen(&self) -> bool {
        self.frozen.load(Ordering::SeqCst)
    }

    pub fn set_frozen(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::SeqCst);
    }
}
