//! MCM's provider driver interface (`pkg/util/provider/driver`) and its KubeVirt
//! implementation over a [`PluginSpi`].
//!
//! Every answer is either a response or a [`MachineError`] whose code MCM acts on:
//! InvalidArgument for bad MachineClasses or Secrets (never Internal), NotFound when the
//! VM is missing, and the API error's own class otherwise.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{NodeAddress, PersistentVolumeSpec, Secret};
use tracing::{debug, info, warn};

use crate::codes::MachineError;
use crate::field::FieldErrors;
use crate::kubevirt::ownership::{Ownership, encode_provider_id};
use crate::mcm::{Machine, MachineClass};
use crate::provider_spec::decode_provider_spec;
use crate::secret::{ClusterAccess, ProviderSecret};
use crate::spi::{CreateRequest, DeleteOutcome, ListRequest, MachineRef, PluginSpi, SpiError};
use crate::validation::validate_machine_name;

/// The CSI driver of KubeVirt's hot-plugged volumes (kubevirt-csi-driver).
pub const KUBEVIRT_CSI_DRIVER: &str = "csi.kubevirt.io";

/// Request of CreateMachine, InitializeMachine, DeleteMachine and GetMachineStatus.
#[derive(Clone, Default)]
pub struct MachineRequest {
    pub machine: Machine,
    pub machine_class: MachineClass,
    /// Merged data of the class's secretRef and credentialsSecretRef.
    pub secret: Secret,
}

pub type CreateMachineRequest = MachineRequest;
pub type InitializeMachineRequest = MachineRequest;
pub type DeleteMachineRequest = MachineRequest;
pub type GetMachineStatusRequest = MachineRequest;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateMachineResponse {
    pub provider_id: String,
    pub node_name: String,
    pub last_known_state: String,
    pub addresses: Vec<NodeAddress>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct InitializeMachineResponse {
    pub provider_id: String,
    pub node_name: String,
    pub last_known_state: String,
    pub addresses: Vec<NodeAddress>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeleteMachineResponse {
    pub last_known_state: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct GetMachineStatusResponse {
    pub provider_id: String,
    pub node_name: String,
    pub addresses: Vec<NodeAddress>,
}

#[derive(Clone, Default)]
pub struct ListMachinesRequest {
    pub machine_class: MachineClass,
    pub secret: Secret,
}

/// The Secret's keys only: its values are the kubeconfig and userData.
fn secret_keys(secret: &Secret) -> Vec<&String> {
    secret.data.iter().flat_map(|data| data.keys()).collect()
}

impl fmt::Debug for MachineRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MachineRequest")
            .field("machine", &self.machine.metadata.name)
            .field("machine_class", &self.machine_class.metadata.name)
            .field("secret_keys", &secret_keys(&self.secret))
            .finish()
    }
}

impl fmt::Debug for ListMachinesRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListMachinesRequest")
            .field("machine_class", &self.machine_class.metadata.name)
            .field("secret_keys", &secret_keys(&self.secret))
            .finish()
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListMachinesResponse {
    /// providerID -> machine name.
    pub machine_list: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default)]
pub struct GetVolumeIdsRequest {
    pub pv_specs: Vec<PersistentVolumeSpec>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct GetVolumeIdsResponse {
    pub volume_ids: Vec<String>,
}

/// MCM's `driver.Driver`.
#[async_trait]
pub trait Driver: Send + Sync {
    async fn create_machine(
        &self,
        request: &CreateMachineRequest,
    ) -> Result<CreateMachineResponse, MachineError>;
    async fn initialize_machine(
        &self,
        request: &InitializeMachineRequest,
    ) -> Result<InitializeMachineResponse, MachineError>;
    async fn delete_machine(
        &self,
        request: &DeleteMachineRequest,
    ) -> Result<DeleteMachineResponse, MachineError>;
    async fn get_machine_status(
        &self,
        request: &GetMachineStatusRequest,
    ) -> Result<GetMachineStatusResponse, MachineError>;
    async fn list_machines(
        &self,
        request: &ListMachinesRequest,
    ) -> Result<ListMachinesResponse, MachineError>;
    async fn get_volume_ids(
        &self,
        request: &GetVolumeIdsRequest,
    ) -> Result<GetVolumeIdsResponse, MachineError>;
}

/// The KubeVirt driver: validates MCM's objects, then delegates to the SPI.
pub struct MachinePlugin<S> {
    spi: S,
}

impl<S: PluginSpi> MachinePlugin<S> {
    pub fn new(spi: S) -> Self {
        MachinePlugin { spi }
    }

    pub fn spi(&self) -> &S {
        &self.spi
    }
}

/// The cluster identity VMs are labelled with: the namespace of the MCM owning the class.
pub fn cluster_identity(machine_class: &MachineClass) -> String {
    machine_class
        .metadata
        .namespace
        .clone()
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

fn invalid(errors: FieldErrors) -> MachineError {
    MachineError::invalid_argument(errors.to_string())
}

/// Who a VM is for: the machine (its name checked), its class, and the cluster.
fn ownership_of(
    machine_name: &str,
    machine_class: &MachineClass,
) -> Result<Ownership, FieldErrors> {
    validate_machine_name(machine_name).into_result()?;
    Ok(Ownership {
        machine_name: machine_name.to_owned(),
        machine_class: machine_class.metadata.name.clone().unwrap_or_default(),
        cluster: cluster_identity(machine_class),
    })
}

fn ownership(request: &MachineRequest) -> Result<Ownership, FieldErrors> {
    let name = request.machine.metadata.name.as_deref().unwrap_or_default();
    ownership_of(name, &request.machine_class)
}

/// Everything CreateMachine validates (machine name, providerSpec, Secret), with every
/// problem at once: the SPI's request, as the driver and `render` build it.
pub fn create_request(
    machine_name: &str,
    machine_class: &MachineClass,
    secret: &Secret,
) -> Result<CreateRequest, FieldErrors> {
    let mut errors = FieldErrors::default();
    let ownership = ownership_of(machine_name, machine_class)
        .map_err(|e| errors.extend(e))
        .ok();
    let spec = decode_provider_spec(&machine_class.provider_spec)
        .map_err(|e| errors.extend(e))
        .ok();
    let secret = ProviderSecret::from_secret(secret)
        .map_err(|e| errors.extend(e))
        .ok();
    match (ownership, spec, secret) {
        (Some(ownership), Some(spec), Some(secret)) => Ok(CreateRequest {
            ownership,
            spec,
            secret,
        }),
        _ => Err(errors),
    }
}

/// What delete, status and list need: a valid name and kubeconfig, nothing of the spec.
fn machine_ref(request: &MachineRequest) -> Result<MachineRef, MachineError> {
    match (
        ownership(request),
        ClusterAccess::from_secret(&request.secret),
    ) {
        (Ok(ownership), Ok(access)) => Ok(MachineRef { ownership, access }),
        (ownership, access) => {
            let mut errors = ownership.err().unwrap_or_default();
            errors.extend(access.err().unwrap_or_default());
            Err(invalid(errors))
        }
    }
}

/// Turns an SPI failure into MCM's error, with the operation named for the operator.
fn spi_error(operation: &str, machine: &str, error: SpiError) -> MachineError {
    let code = error.code();
    let message = match &error {
        SpiError::NotFound(_) => error.to_string(),
        _ => format!("could not {operation} machine {machine:?}: {error}"),
    };
    MachineError::new(code, message)
}

#[async_trait]
impl<S: PluginSpi> Driver for MachinePlugin<S> {
    async fn create_machine(
        &self,
        request: &CreateMachineRequest,
    ) -> Result<CreateMachineResponse, MachineError> {
        let machine_name = request.machine.metadata.name.as_deref().unwrap_or_default();
        let create = create_request(machine_name, &request.machine_class, &request.secret)
            .map_err(|errors| {
                info!(machine = machine_name, "CreateMachine rejected: {errors}");
                invalid(errors)
            })?;
        let name = create.ownership.machine_name.clone();
        debug!(machine = %name, "CreateMachine");
        let status = self
            .spi
            .create_machine(&create)
            .await
            .map_err(|e| spi_error("create", &name, e))?;
        info!(machine = %name, provider_id = %status.provider_id, "VM created");
        Ok(CreateMachineResponse {
            last_known_state: format!("Created {}", status.provider_id),
            provider_id: status.provider_id,
            node_name: status.node_name,
            addresses: status.addresses,
        })
    }

    /// CreateMachine leaves nothing to initialize; MCM takes Unimplemented as success.
    async fn initialize_machine(
        &self,
        _request: &InitializeMachineRequest,
    ) -> Result<InitializeMachineResponse, MachineError> {
        Err(MachineError::unimplemented(
            "InitializeMachine is not needed: CreateMachine prepares the VM completely",
        ))
    }

    async fn delete_machine(
        &self,
        request: &DeleteMachineRequest,
    ) -> Result<DeleteMachineResponse, MachineError> {
        let machine = machine_ref(request)?;
        let name = machine.ownership.machine_name.clone();
        let outcome = match self.spi.delete_machine(&machine).await {
            Err(SpiError::NotFound(_)) => DeleteOutcome::AlreadyGone,
            other => other.map_err(|e| spi_error("delete", &name, e))?,
        };
        let provider_id = encode_provider_id(&name);
        let last_known_state = match outcome {
            DeleteOutcome::Deleted => {
                info!(machine = %name, "VM deleted");
                format!("Deleted {provider_id}")
            }
            DeleteOutcome::AlreadyGone => {
                debug!(machine = %name, "VM already gone");
                format!("{provider_id} already deleted")
            }
            DeleteOutcome::NotOwned => {
                warn!(machine = %name, "VM with this name was not created by this provider; left in place");
                format!("{provider_id} not owned by this provider; left in place")
            }
        };
        Ok(DeleteMachineResponse { last_known_state })
    }

    async fn get_machine_status(
        &self,
        request: &GetMachineStatusRequest,
    ) -> Result<GetMachineStatusResponse, MachineError> {
        let machine = machine_ref(request)?;
        let name = machine.ownership.machine_name.clone();
        let status = self
            .spi
            .get_machine_status(&machine)
            .await
            .map_err(|e| spi_error("get status of", &name, e))?;
        Ok(GetMachineStatusResponse {
            provider_id: status.provider_id,
            node_name: status.node_name,
            addresses: status.addresses,
        })
    }

    async fn list_machines(
        &self,
        request: &ListMachinesRequest,
    ) -> Result<ListMachinesResponse, MachineError> {
        let access = ClusterAccess::from_secret(&request.secret).map_err(invalid)?;
        let cluster = cluster_identity(&request.machine_class);
        let machine_list = self
            .spi
            .list_machines(&ListRequest {
                cluster: cluster.clone(),
                access,
            })
            .await
            .map_err(|e| {
                MachineError::new(
                    e.code(),
                    format!("could not list machines of cluster {cluster:?}: {e}"),
                )
            })?;
        debug!(%cluster, count = machine_list.len(), "listed machines");
        Ok(ListMachinesResponse { machine_list })
    }

    /// Volumes of the kubevirt CSI driver are DataVolumes hot-plugged into our VMs; MCM
    /// waits for their detachment while draining. Other drivers' volumes are not ours.
    async fn get_volume_ids(
        &self,
        request: &GetVolumeIdsRequest,
    ) -> Result<GetVolumeIdsResponse, MachineError> {
        let volume_ids = request
            .pv_specs
            .iter()
            .filter_map(|spec| spec.csi.as_ref())
            .filter(|csi| csi.driver == KUBEVIRT_CSI_DRIVER)
            .map(|csi| csi.volume_handle.clone())
            .collect();
        Ok(GetVolumeIdsResponse { volume_ids })
    }
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
