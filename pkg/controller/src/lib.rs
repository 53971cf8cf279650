//! MCM's provider-independent machine controller, over the [`Driver`] interface: what the
//! Go sidecar (`machine-controller-manager/pkg/util/provider`) does, on kube-runtime.
//!
//! - [`options`]: the sidecar's flags, names and defaults as MCM's.
//! - [`machine`]: the machine reconcile: [`creation`], [`health`], [`node_sync`],
//!   [`deletion`] with [`drain`].
//! - [`machine_class`] and [`secrets`]: their finalizers; [`triggers`]: which events
//!   of one kind concern objects of another.
//! - [`safety`]: orphan VM collection and the API server freeze.
//! - [`metrics`], [`http`], [`leader`], [`run`]: the process around them.
//!
//! [`Driver`]: mcm_provider_kubevirt::Driver

pub mod bootstrap_token;
pub mod clients;
pub mod context;
pub mod creation;
pub mod deletion;
pub mod drain;
pub mod driver_metrics;
pub mod finalizers;
pub mod go_duration;
pub mod health;
pub mod http;
pub mod leader;
pub mod machine;
pub mod machine_class;
pub mod machine_settings;
pub mod metrics;
pub mod names;
pub mod node_sync;
pub mod options;
pub mod run;
pub mod safety;
pub mod secrets;
pub mod status;
pub mod triggers;

pub use context::{Context, Requeue};
pub use options::Options;
