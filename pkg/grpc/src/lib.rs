//! The machine driver served over gRPC: Gardener's cmi.v1 protocol (`proto/cmi.proto`),
//! so that callers in any language can drive KubeVirt machines.
//!
//! - [`proto`]: the generated messages, clients and servers; request `Debug` is redacted.
//! - [`status`]: MCM machine codes to gRPC statuses and back.
//! - [`service`]: the Identity and Machine services over a [`Driver`](mcm_provider_kubevirt::Driver).
//! - [`server`]: listening on TCP or a unix socket, health, size limits, graceful shutdown.

pub mod proto;
pub mod server;
pub mod service;
pub mod status;

pub use server::{Listen, Listener, ServeOptions, serve};
pub use service::{IdentityService, MachineService, PLUGIN_NAME};
