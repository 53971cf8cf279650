//! Everything KubeVirt-specific: how a machine becomes a VirtualMachine, and the API calls.

pub mod affinity;
pub mod api_calls;
pub mod convert;
pub mod kube_spi;
pub mod networks;
pub mod ownership;
pub mod userdata;
pub mod vm;
pub mod volumes;
