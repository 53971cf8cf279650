//! The plugin SPI: the provider-cluster operations the driver needs, as a trait so the
//! driver can be tested over a mock and the KubeVirt implementation over a fake API.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::NodeAddress;

use crate::codes::MachineCode;
use crate::field::FieldErrors;
use crate::kubevirt::ownership::Ownership;
use crate::provider_spec::KubeVirtProviderSpec;
use crate::secret::{ClusterAccess, ProviderSecret};

/// What CreateMachine needs: who the VM is for, what it looks like, and the secret.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub ownership: Ownership,
    pub spec: KubeVirtProviderSpec,
    pub secret: ProviderSecret,
}

/// What the other per-machine calls need: they work from the kubeconfig alone, so a
/// MachineClass edited into an invalid state cannot block deleting its machines.
#[derive(Debug, Clone)]
pub struct MachineRef {
    pub ownership: Ownership,
    pub access: ClusterAccess,
}

/// What ListMachines needs: the cluster identity and where to look.
#[derive(Debug, Clone)]
pub struct ListRequest {
    pub cluster: String,
    pub access: ClusterAccess,
}

/// A VM as MCM sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmStatus {
    pub provider_id: String,
    pub node_name: String,
    /// From the VirtualMachineInstance, when one runs.
    pub addresses: Vec<NodeAddress>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The VM (and its userdata Secret) were asked to go away.
    Deleted,
    /// Nothing of this machine was left; deletion is complete.
    AlreadyGone,
    /// A VM with this name exists but another owner made it: left alone.
    NotOwned,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpiError {
    #[error("VirtualMachine {0:?} not found")]
    NotFound(String),
    /// Input the composition rejected (e.g. userData that sshKeys cannot be merged into).
    #[error("{0}")]
    InvalidInput(#[from] FieldErrors),
    #[error("{kind} {name:?} already exists and was not created by this provider for this machine")]
    NotOwned { kind: &'static str, name: String },
    /// An API call failed; `code` is the MCM code its HTTP status or transport error maps to.
    #[error("{action}: {message}")]
    Api {
        action: String,
        code: MachineCode,
        message: String,
    },
}

impl SpiError {
    pub fn code(&self) -> MachineCode {
        match self {
            SpiError::NotFound(_) => MachineCode::NotFound,
            SpiError::InvalidInput(_) => MachineCode::InvalidArgument,
            SpiError::NotOwned { .. } => MachineCode::AlreadyExists,
            SpiError::Api { code, .. } => *code,
        }
    }
}

#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait PluginSpi: Send + Sync {
    /// Creates the userdata Secret and the VM, or finds them from an earlier attempt.
    async fn create_machine(&self, request: &CreateRequest) -> Result<VmStatus, SpiError>;
    /// Deletes the VM and its userdata Secret; succeeds when they are already gone.
    async fn delete_machine(&self, machine: &MachineRef) -> Result<DeleteOutcome, SpiError>;
    /// The VM's status, or `SpiError::NotFound`.
    async fn get_machine_status(&self, machine: &MachineRef) -> Result<VmStatus, SpiError>;
    /// providerID -> machine name of every VM this provider made for the cluster.
    async fn list_machines(
        &self,
        request: &ListRequest,
    ) -> Result<BTreeMap<String, String>, SpiError>;
}
