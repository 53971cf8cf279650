//! What every reconcile shares: the clients, the driver, the flags and the safety state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Secret};
use kube::{Api, Client};

use mcm_provider_kubevirt::Driver;
use mcm_provider_kubevirt::mcm::{Machine, MachineClass};

use crate::metrics::Metrics;
use crate::options::Options;

/// MCM's retry periods (`machineutils.RetryPeriod`).
pub mod retry {
    use std::time::Duration;
    pub const CONFLICT: Duration = Duration::from_millis(200);
    pub const SHORT: Duration = Duration::from_secs(5);
    pub const MEDIUM: Duration = Duration::from_secs(3 * 60);
    pub const LONG: Duration = Duration::from_secs(10 * 60);

    /// The driver codes MCM retries after [`SHORT`]: the call may succeed as it is.
    pub fn is_transient(code: mcm_provider_kubevirt::MachineCode) -> bool {
        use mcm_provider_kubevirt::MachineCode;
        matches!(
            code,
            MachineCode::Unknown
                | MachineCode::DeadlineExceeded
                | MachineCode::Aborted
                | MachineCode::Unavailable
        )
    }
}

/// When to look at an object again, and why (logged; an error when `failed`).
#[derive(Debug, Clone, PartialEq)]
pub struct Requeue {
    pub after: Duration,
    pub reason: String,
    /// MCM returns an error alongside most requeues, including ones after successful
    /// writes ("Machine creation in process..."); this marks the real failures.
    pub failed: bool,
}

impl Requeue {
    pub fn after(after: Duration, reason: impl Into<String>) -> Self {
        Requeue {
            after,
            reason: reason.into(),
            failed: false,
        }
    }

    pub fn failure(after: Duration, reason: impl Into<String>) -> Self {
        Requeue {
            after,
            reason: reason.into(),
            failed: true,
        }
    }

    /// The retry MCM picks after a failed API write: conflicts retry almost at once.
    pub fn api_failure(error: &kube::Error, what: &str) -> Self {
        let after = if is_conflict(error) {
            retry::CONFLICT
        } else {
            retry::SHORT
        };
        Requeue::failure(after, format!("{what}: {error}"))
    }
}

/// The Node `name` of the target cluster, if it exists; a failed read retries soon.
pub async fn get_node(nodes: &Api<Node>, name: &str) -> Result<Option<Node>, Requeue> {
    nodes
        .get_opt(name)
        .await
        .map_err(|error| Requeue::failure(retry::SHORT, format!("getting node {name:?}: {error}")))
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
