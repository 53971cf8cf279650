//! How a reconcile ends: [`Requeue`] when it did its part (even if MCM would look again
//! soon), [`ReconcileError`] when a stage failed, and the retry each failure gets
//! ([`ReconcileError::retry_after`], MCM's retry periods), which the controllers'
//! `error_policy` applies.

use std::time::Duration;

use mcm_provider_kubevirt::{MachineCode, MachineError};

use crate::machine::deletion::DeletionStep;
use crate::runtime::options::Options;

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

/// A reconcile that did its part: when to look again, and why (logged).
#[derive(Debug, Clone, PartialEq)]
pub struct Requeue {
    pub after: Duration,
    pub reason: String,
}

impl Requeue {
    pub fn after(after: Duration, reason: impl Into<String>) -> Self {
        Requeue {
            after,
            reason: reason.into(),
        }
    }
}

/// A failed API call: what it was for, and kube's error.
#[derive(Debug, thiserror::Error)]
#[error("{action}: {source}")]
pub struct ApiError {
    pub action: String,
    #[source]
    pub source: kube::Error,
}

impl ApiError {
    pub fn new(action: impl Into<String>, source: kube::Error) -> Self {
        ApiError {
            action: action.into(),
            source,
        }
    }

    /// Conflicts retry almost at once (the object changed under us), the rest soon.
    pub fn retry_after(&self) -> Duration {
        if crate::context::is_conflict(&self.source) {
            retry::CONFLICT
        } else {
            retry::SHORT
        }
    }
}

/// Why a machine's class cannot be used yet.
#[derive(Debug, thiserror::Error)]
pub enum ClassError {
    #[error("MachineClass {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error(transparent)]
    Get(ApiError),
    #[error(transparent)]
    SecretData(ApiError),
    #[error("The machine class {name} has no finalizers set. So not reconciling the machine.")]
    NoFinalizer { name: String },
    #[error("MachineClass {name:?} has an invalid nodeTemplate: {problems}")]
    InvalidNodeTemplate { name: String, problems: String },
}

/// A failed step of the creation flow; the status already records it where MCM does.
#[derive(Debug, thiserror::Error)]
pub enum CreationError {
    #[error("userdata field not found in secret for machine {machine:?}")]
    NoUserData { machine: String },
    #[error("bootstrap token for machine {machine:?}: {source}")]
    BootstrapToken {
        machine: String,
        #[source]
        source: kube::Error,
    },
    /// GetMachineStatus or CreateMachine answered an error.
    #[error(transparent)]
    Driver(MachineError),
    #[error(transparent)]
    Initialize(MachineError),
    #[error("machine marked Failed: its VM would use a stale node object")]
    StaleNode,
    #[error(
        "machine {machine:?}: nodeName ({node_name:?}) or providerID ({provider_id:?}) is empty after creation flow"
    )]
    Incomplete {
        machine: String,
        node_name: String,
        provider_id: String,
    },
    #[error(transparent)]
    Api(ApiError),
}

/// A failed health reconcile.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error(transparent)]
    Api(#[from] ApiError),
    /// MCM replaces one machine of a MachineDeployment at a time (maxReplacements).
    #[error("machine {machine:?} couldn't be marked FAILED, other machines are getting replaced")]
    ReplacementLimit { machine: String },
    #[error("timed out waiting to acquire lock for machine {machine:?}")]
    PermitTimeout { machine: String },
}

/// A failed deletion step; the status records it with the step to retry.
#[derive(Debug, thiserror::Error)]
pub enum DeletionError {
    #[error(transparent)]
    Api(ApiError),
    /// DeleteMachine answered an error.
    #[error("{description}")]
    Driver {
        description: String,
        #[source]
        source: MachineError,
    },
    #[error("{0}")]
    Drain(String),
    /// Reading, releasing or deleting the Node failed.
    #[error("{description}")]
    Node {
        description: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting bootstrap token: {0}")]
    BootstrapToken(#[source] kube::Error),
}

/// A failed preservation step (MCM v0.62's manageMachinePreservation).
#[derive(Debug, thiserror::Error)]
pub enum PreservationError {
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The drain of a preserved Failed machine's Node failed.
    #[error("drain of preserved node {node:?} failed: {error}")]
    Drain { node: String, error: String },
}

/// A failed step of an in-place update; a failed drain is recorded in the status first.
#[derive(Debug, thiserror::Error)]
pub enum InPlaceError {
    /// Writing the Node's InPlaceUpdate condition, the Machine's status or drain state.
    #[error(transparent)]
    Api(ApiError),
    /// The drain before the update failed (cordon, an eviction, a listing).
    #[error("{0}")]
    Drain(String),
}

/// Why a MachineClass or Secret finalizer could not be brought in line.
#[derive(Debug, thiserror::Error)]
pub enum FinalizerError {
    #[error(transparent)]
    Api(ApiError),
    /// Deletion waits for the referring objects to go.
    #[error("{0}")]
    StillReferenced(String),
}

/// The one error of every reconcile: a variant per stage, with its source.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Finalizer(ApiError),
    #[error("Machine controller has frozen. Retrying reconcile after resync period")]
    Frozen,
    #[error("validation of Machine failed: {0}")]
    InvalidMachine(String),
    #[error(transparent)]
    Class(#[from] ClassError),
    #[error(transparent)]
    Creation(#[from] CreationError),
    #[error(transparent)]
    Health(#[from] HealthError),
    #[error(transparent)]
    NodeSync(ApiError),
    #[error(transparent)]
    Preservation(#[from] PreservationError),
    #[error(transparent)]
    InPlaceUpdate(#[from] InPlaceError),
    #[error("{source}")]
    Deletion {
        step: DeletionStep,
        #[source]
        source: DeletionError,
    },
    #[error(transparent)]
    MachineClass(FinalizerError),
    #[error(transparent)]
    Secret(FinalizerError),
}

impl ReconcileError {
    pub fn deletion(step: DeletionStep, source: DeletionError) -> Self {
        ReconcileError::Deletion { step, source }
    }

    /// The retry MCM gives this failure.
    pub fn retry_after(&self, options: &Options) -> Duration {
        use ReconcileError as E;
        match self {
            E::Finalizer(api) | E::NodeSync(api) => api.retry_after(),
            E::Health(HealthError::Api(api)) => api.retry_after(),
            E::Health(HealthError::ReplacementLimit { .. } | HealthError::PermitTimeout { .. }) => {
                retry::SHORT
            }
            E::Preservation(PreservationError::Api(api)) => api.retry_after(),
            E::Preservation(PreservationError::Drain { .. }) => retry::SHORT,
            E::InPlaceUpdate(InPlaceError::Api(api)) => api.retry_after(),
            E::InPlaceUpdate(InPlaceError::Drain(_)) => retry::SHORT,
            E::Frozen | E::InvalidMachine(_) => retry::LONG,
            E::Class(error) => match error {
                ClassError::NotFound { .. } | ClassError::SecretData(_) => retry::LONG,
                ClassError::Get(api) => api.retry_after(),
                ClassError::NoFinalizer { .. } | ClassError::InvalidNodeTemplate { .. } => {
                    retry::SHORT
                }
            },
            E::Creation(error) => match error {
                CreationError::Driver(error) => match error.code {
                    MachineCode::ResourceExhausted => options.effective_resource_exhausted_retry(),
                    code if retry::is_transient(code) => retry::SHORT,
                    _ => retry::MEDIUM,
                },
                CreationError::NoUserData { .. }
                | CreationError::BootstrapToken { .. }
                | CreationError::Initialize(_)
                | CreationError::StaleNode => retry::SHORT,
                CreationError::Incomplete { .. } => retry::MEDIUM,
                CreationError::Api(api) => api.retry_after(),
            },
            E::Deletion { source, .. } => match source {
                DeletionError::Api(api) => api.retry_after(),
                DeletionError::Driver { source, .. } if retry::is_transient(source.code) => {
                    retry::SHORT
                }
                DeletionError::Driver { .. } => retry::LONG,
                DeletionError::Drain(_)
                | DeletionError::Node { .. }
                | DeletionError::BootstrapToken(_) => retry::SHORT,
            },
            E::MachineClass(error) => match error {
                FinalizerError::Api(api) => api.retry_after(),
                FinalizerError::StillReferenced(_) => retry::MEDIUM,
            },
            E::Secret(error) => match error {
                FinalizerError::Api(api) => api.retry_after(),
                FinalizerError::StillReferenced(_) => retry::LONG,
            },
        }
    }

    /// The metric label of the variant.
    pub fn kind(&self) -> &'static str {
        use ReconcileError as E;
        match self {
            E::Finalizer(_) => "finalizer",
            E::Frozen => "frozen",
            E::InvalidMachine(_) => "invalid_machine",
            E::Class(_) => "class",
            E::Creation(_) => "creation",
            E::Health(_) => "health",
            E::NodeSync(_) => "node_sync",
            E::Preservation(_) => "preservation",
            E::InPlaceUpdate(_) => "in_place_update",
            E::Deletion { .. } => "deletion",
            E::MachineClass(_) => "machine_class",
            E::Secret(_) => "secret",
        }
    }
}

/// A reconcile's result as the controller acts on it: when it looks again, why, and
/// whether that is a failure. What logs, metrics and tests read.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub after: Duration,
    pub reason: String,
    pub failed: bool,
}

impl Outcome {
    pub fn of(result: &Result<Requeue, ReconcileError>, options: &Options) -> Self {
        match result {
            Ok(requeue) => Outcome {
                after: requeue.after,
                reason: requeue.reason.clone(),
                failed: false,
            },
            Err(error) => Outcome {
                after: error.retry_after(options),
                reason: error.to_string(),
                failed: true,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> ApiError {
        ApiError::new(
            "writing",
            kube::Error::Api(
                kube::core::Status::failure("m", "r")
                    .with_code(code)
                    .boxed(),
            ),
        )
    }

    #[test]
    fn api_failures_retry_at_once_only_on_conflict() {
        let options = Options::default();
        assert_eq!(
            ReconcileError::from(HealthError::Api(api(409))).retry_after(&options),
            retry::CONFLICT
        );
        assert_eq!(
            ReconcileError::from(HealthError::Api(api(500))).retry_after(&options),
            retry::SHORT
        );
    }

    #[test]
    fn create_errors_retry_by_code() {
        let options = Options::default();
        let create = |code| {
            ReconcileError::from(CreationError::Driver(MachineError::new(code, "x")))
                .retry_after(&options)
        };
        assert_eq!(create(MachineCode::Unavailable), retry::SHORT);
        assert_eq!(create(MachineCode::InvalidArgument), retry::MEDIUM);
        assert_eq!(
            create(MachineCode::ResourceExhausted),
            options.effective_resource_exhausted_retry()
        );
    }

    #[test]
    fn vm_deletion_errors_retry_soon_only_when_transient() {
        let options = Options::default();
        let delete = |code| {
            ReconcileError::deletion(
                DeletionStep::DeleteVm,
                DeletionError::Driver {
                    description: "d".into(),
                    source: MachineError::new(code, "x"),
                },
            )
            .retry_after(&options)
        };
        assert_eq!(delete(MachineCode::Unavailable), retry::SHORT);
        assert_eq!(delete(MachineCode::Internal), retry::LONG);
    }

    #[test]
    fn outcome_marks_only_errors_failed() {
        let options = Options::default();
        let ok = Outcome::of(&Ok(Requeue::after(retry::SHORT, "done")), &options);
        assert!(!ok.failed);
        let failed = Outcome::of(&Err(ReconcileError::Frozen), &options);
        assert!(failed.failed);
        assert_eq!(failed.after, retry::LONG);
        assert!(failed.reason.contains("frozen"));
    }
}
