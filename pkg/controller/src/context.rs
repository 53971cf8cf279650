//! What every reconcile shares: the clients, the driver, the flags and the safety state.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::{Node, NodeCondition, Secret};
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client};
use serde::de::DeserializeOwned;

use mcm_provider_kubevirt::Driver;
use mcm_provider_kubevirt::mcm::{Machine, MachineClass};

use crate::cache::{Caches, cached, cached_all};
use crate::error::ApiError;
use crate::machine::health::permits::ReplacementPermits;
use crate::runtime::metrics::Metrics;
use crate::runtime::options::Options;

/// The Node `name` of the target cluster, if it exists.
pub async fn get_node(nodes: &Api<Node>, name: &str) -> Result<Option<Node>, ApiError> {
    nodes
        .get_opt(name)
        .await
        .map_err(|error| node_read_failed(name, error))
}

fn node_read_failed(name: &str, error: kube::Error) -> ApiError {
    ApiError::new(format!("getting node {name:?}"), error)
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

/// The object `name` (in `namespace`) of `store` once it has listed, or a GET of `api`
/// without one.
async fn got<K>(
    store: Option<&Store<K>>,
    namespace: Option<&str>,
    api: &Api<K>,
    name: &str,
) -> Result<Option<K>, kube::Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + 'static,
{
    if let Some(store) = store
        && let Some(found) = cached(store, name, namespace).await
    {
        return Ok(found);
    }
    api.get_opt(name).await
}

/// Every object of `store` once it has listed, or of a LIST of `api` without one.
async fn listed<K>(store: Option<&Store<K>>, api: &Api<K>) -> Result<Vec<Arc<K>>, kube::Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + 'static,
{
    if let Some(store) = store
        && let Some(all) = cached_all(store).await
    {
        return Ok(all);
    }
    let listed = api.list(&ListParams::default()).await?;
    Ok(listed.items.into_iter().map(Arc::new).collect())
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
    /// The informers' stores; without them (tests of single reconciles) every read asks
    /// the API server.
    caches: Option<Caches>,
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
            caches: None,
            frozen: AtomicBool::new(false),
        }
    }

    /// Reads from the informers' stores from now on (see the read methods below).
    pub fn with_caches(mut self, caches: Caches) -> Self {
        self.caches = Some(caches);
        self
    }

    pub fn caches(&self) -> Option<&Caches> {
        self.caches.as_ref()
    }

    /// The MachineClass `name` of `--namespace`, from the store (MCM's class lister).
    pub async fn machine_class(&self, name: &str) -> Result<Option<MachineClass>, kube::Error> {
        let store = self.caches.as_ref().map(|c| &c.classes);
        got(store, Some(self.namespace()), &self.machine_classes(), name).await
    }

    /// A Secret, from the store when it is in `--namespace` (the only one watched).
    pub async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, kube::Error> {
        let store = (namespace == self.namespace())
            .then(|| self.caches.as_ref().map(|c| &c.secrets))
            .flatten();
        got(store, Some(namespace), &self.secrets_in(namespace), name).await
    }

    /// The Node `name` of the target cluster, from the store (MCM's node lister); `None`
    /// also without a target cluster. Where a Node written a moment ago must be read as
    /// written, callers use [`get_node`] instead.
    pub async fn node(&self, name: &str) -> Result<Option<Node>, ApiError> {
        let Some(nodes) = self.nodes() else {
            return Ok(None);
        };
        let store = self.caches.as_ref().and_then(|c| c.nodes.as_ref());
        got(store, None, &nodes, name)
            .await
            .map_err(|error| node_read_failed(name, error))
    }

    /// The Machines of `--namespace`, from the store.
    pub async fn list_machines(&self) -> Result<Vec<Arc<Machine>>, kube::Error> {
        let store = self.caches.as_ref().map(|c| &c.machines);
        listed(store, &self.machines()).await
    }

    /// The MachineClasses of `--namespace`, from the store.
    pub async fn list_machine_classes(&self) -> Result<Vec<Arc<MachineClass>>, kube::Error> {
        let store = self.caches.as_ref().map(|c| &c.classes);
        listed(store, &self.machine_classes()).await
    }

    /// The Nodes of the target cluster, from the store; none without a target cluster.
    pub async fn list_nodes(&self) -> Result<Vec<Arc<Node>>, kube::Error> {
        let Some(nodes) = self.nodes() else {
            return Ok(Vec::new());
        };
        let store = self.caches.as_ref().and_then(|c| c.nodes.as_ref());
        listed(store, &nodes).await
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
