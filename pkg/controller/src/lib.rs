//! MCM's provider-independent machine controller, over the [`Driver`] interface: what the
//! Go sidecar (`machine-controller-manager/pkg/util/provider`) does, on kube-runtime.
//!
//! - [`machine`]: the machine reconcile: [`machine::creation`], [`machine::health`],
//!   [`machine::node_sync`], [`machine::deletion`] with its drain; each flow decides in a
//!   pure module and applies the decision in a thin shell.
//! - [`machine_class`] and [`secrets`]: their finalizers; [`triggers`]: which events of one
//!   kind concern objects of another.
//! - [`safety`]: orphan VM collection and the API server freeze; [`node_lifecycle`]: Nodes
//!   without a live Machine.
//! - [`error`]: the one error of every reconcile and the retry it gets; [`context`]: what
//!   every reconcile shares; [`cache`]: the informers whose stores the reconciles read.
//! - [`runtime`]: the process around them: flags, clients, leader election, HTTP, metrics.
//! - [`names`]: MCM's wire names; [`util`]: finalizers and Go durations.
//!
//! [`Driver`]: mcm_provider_kubevirt::Driver

pub mod cache;
pub mod context;
pub mod error;
pub mod machine;
pub mod machine_class;
pub mod names;
pub mod node_lifecycle;
pub mod runtime;
pub mod safety;
pub mod secrets;
pub mod triggers;
pub mod util;

pub use context::Context;
pub use error::{Outcome, ReconcileError, Requeue};
pub use runtime::options::Options;
