//! The Identity and Machine services over a [`Driver`].
//!
//! A cmi.v1 request carries a machine name, the providerSpec as JSON bytes and the secret
//! data; the driver wants MCM's objects. The MachineClass namespace, which names the
//! cluster whose VMs a driver may list and collect, is not in the protocol: it is the
//! server's `cluster` setting.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{NodeAddress, PersistentVolumeSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mcm_provider_kubevirt::driver::{GetVolumeIdsRequest, ListMachinesRequest, MachineRequest};
use mcm_provider_kubevirt::field::{FieldError, FieldPath};
use mcm_provider_kubevirt::mcm::{Machine, MachineClass, MachineSpec, MachineStatus};
use mcm_provider_kubevirt::{Driver, MachineError};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tonic::{Request, Response, Status};
use tracing::{debug, info};

use crate::proto;
use crate::proto::plugin_capability::rpc::Type as Capability;
use crate::status::to_status;

/// The plugin name GetPluginInfo reports (domain-name notation, at most 63 characters).
pub const PLUGIN_NAME: &str = "kubevirt.provider.machine.sapcloud.io";

/// The Identity service: name, version, capabilities, readiness.
#[derive(Debug, Clone, Default)]
pub struct IdentityService;

#[tonic::async_trait]
impl proto::identity_server::Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _request: Request<proto::GetPluginInfoRequest>,
    ) -> Result<Response<proto::GetPluginInfoResponse>, Status> {
        Ok(Response::new(proto::GetPluginInfoResponse {
            name: PLUGIN_NAME.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            manifest: HashMap::from([
                ("provider".to_owned(), "KubeVirt".to_owned()),
                ("protocol".to_owned(), "cmi.v1".to_owned()),
            ]),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _request: Request<proto::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<proto::GetPluginCapabilitiesResponse>, Status> {
        // ShutDownMachine is left out: the driver has no such call.
        let served = [
            Capability::CreateMachine,
            Capability::DeleteMachine,
            Capability::GetMachineStatus,
            Capability::ListMachines,
            Capability::GetVolumeIds,
        ];
        let capabilities = served
            .into_iter()
            .map(|rpc| proto::PluginCapability {
                r#type: Some(proto::plugin_capability::Type::Rpc(
                    proto::plugin_capability::Rpc { r#type: rpc as i32 },
                )),
            })
            .collect();
        Ok(Response::new(proto::GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn probe(
        &self,
        _request: Request<proto::ProbeRequest>,
    ) -> Result<Response<proto::ProbeResponse>, Status> {
        // The driver keeps no state to warm up: serving means ready.
        Ok(Response::new(proto::ProbeResponse { ready: Some(true) }))
    }
}

/// The Machine service: each call decoded into MCM's objects and handed to the driver.
pub struct MachineService<D: ?Sized> {
    driver: Arc<D>,
    cluster: String,
}

impl<D: Driver + ?Sized> MachineService<D> {
    /// `cluster` stands for the MachineClass namespace: the cluster VMs are labelled with.
    pub fn new(driver: Arc<D>, cluster: impl Into<String>) -> Self {
        MachineService {
            driver,
            cluster: cluster.into(),
        }
    }

    fn machine_class(&self, provider_spec: Value) -> MachineClass {
        MachineClass {
            metadata: ObjectMeta {
                namespace: Some(self.cluster.clone()),
                ..Default::default()
            },
            provider_spec,
            ..Default::default()
        }
    }

    fn request(
        &self,
        name: &str,
        provider_spec: Value,
        secrets: HashMap<String, Vec<u8>>,
        provider_id: &str,
        last_known_state: &[u8],
    ) -> MachineRequest {
        let mut machine = Machine::new(
            name,
            MachineSpec {
                provider_id: Some(provider_id.to_owned()).filter(|id| !id.is_empty()),
                ..Default::default()
            },
        );
        machine.metadata.namespace = Some(self.cluster.clone());
        if !last_known_state.is_empty() {
            machine.status = Some(MachineStatus {
                last_known_state: Some(String::from_utf8_lossy(last_known_state).into_owned()),
                ..Default::default()
            });
        }
        MachineRequest {
            machine,
            machine_class: self.machine_class(provider_spec),
            secret: secret(secrets),
        }
    }
}

fn secret(secrets: HashMap<String, Vec<u8>>) -> Secret {
    let data: BTreeMap<String, ByteString> = secrets
        .into_iter()
        .map(|(key, value)| (key, ByteString(value)))
        .collect();
    Secret {
        data: Some(data),
        ..Default::default()
    }
}

/// A request field holding JSON; empty bytes are the field's empty value (no providerSpec,
/// no PV specs). A parse error says where only: serde's message would quote the input.
fn json_field<T: DeserializeOwned + Default>(
    bytes: &[u8],
    field: &str,
    what: &str,
) -> Result<T, MachineError> {
    if bytes.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|error| {
        let detail = format!(
            "is not {what} (line {} column {})",
            error.line(),
            error.column()
        );
        MachineError::invalid_argument(
            FieldError::invalid(&FieldPath::new(field), detail).to_string(),
        )
    })
}

fn provider_spec(bytes: &[u8]) -> Result<Value, MachineError> {
    json_field(bytes, "providerSpec", "JSON")
}

/// Delete, status and list need only the kubeconfig, so an unreadable providerSpec must
/// not block them: it is handed on as none.
fn provider_spec_if_readable(bytes: &[u8]) -> Value {
    provider_spec(bytes).unwrap_or(Value::Null)
}

fn addresses(addresses: Vec<NodeAddress>) -> Vec<proto::NodeAddress> {
    addresses
        .into_iter()
        .map(|a| proto::NodeAddress {
            r#type: a.type_,
            address: a.address,
        })
        .collect()
}

fn answer<T>(result: Result<T, MachineError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(|error| to_status(&error))
}

#[tonic::async_trait]
impl<D: Driver + ?Sized + 'static> proto::machine_server::Machine for MachineService<D> {
    async fn create_machine(
        &self,
        request: Request<proto::CreateMachineRequest>,
    ) -> Result<Response<proto::CreateMachineResponse>, Status> {
        let request = request.into_inner();
        info!(machine = %request.machine_name, "gRPC CreateMachine");
        let spec = provider_spec(&request.provider_spec).map_err(|e| to_status(&e))?;
        let call = self.request(
            &request.machine_name,
            spec,
            request.secrets,
            "",
            &request.last_known_state,
        );
        answer(self.driver.create_machine(&call).await.map(|created| {
            proto::CreateMachineResponse {
                provider_id: created.provider_id,
                node_name: created.node_name,
                last_known_state: created.last_known_state.into_bytes(),
                addresses: addresses(created.addresses),
            }
        }))
    }

    async fn initialize_machine(
        &self,
        request: Request<proto::InitializeMachineRequest>,
    ) -> Result<Response<proto::InitializeMachineResponse>, Status> {
        let request = request.into_inner();
        debug!(machine = %request.machine_name, "gRPC InitializeMachine");
        let spec = provider_spec(&request.provider_spec).map_err(|e| to_status(&e))?;
        let call = self.request(&request.machine_name, spec, request.secrets, "", &[]);
        answer(
            self.driver
                .initialize_machine(&call)
                .await
                .map(|initialized| proto::InitializeMachineResponse {
                    provider_id: initialized.provider_id,
                    node_name: initialized.node_name,
                    addresses: addresses(initialized.addresses),
                }),
        )
    }

    async fn delete_machine(
        &self,
        request: Request<proto::DeleteMachineRequest>,
    ) -> Result<Response<proto::DeleteMachineResponse>, Status> {
        let request = request.into_inner();
        info!(machine = %request.machine_name, "gRPC DeleteMachine");
        let call = self.request(
            &request.machine_name,
            provider_spec_if_readable(&request.provider_spec),
            request.secrets,
            &request.provider_id,
            &request.last_known_state,
        );
        answer(self.driver.delete_machine(&call).await.map(|deleted| {
            proto::DeleteMachineResponse {
                last_known_state: deleted.last_known_state.into_bytes(),
            }
        }))
    }

    async fn get_machine_status(
        &self,
        request: Request<proto::GetMachineStatusRequest>,
    ) -> Result<Response<proto::GetMachineStatusResponse>, Status> {
        let request = request.into_inner();
        debug!(machine = %request.machine_name, "gRPC GetMachineStatus");
        let call = self.request(
            &request.machine_name,
            provider_spec_if_readable(&request.provider_spec),
            request.secrets,
            &request.provider_id,
            &[],
        );
        answer(self.driver.get_machine_status(&call).await.map(|status| {
            proto::GetMachineStatusResponse {
                provider_id: status.provider_id,
                node_name: status.node_name,
                addresses: addresses(status.addresses),
            }
        }))
    }

    async fn list_machines(
        &self,
        request: Request<proto::ListMachinesRequest>,
    ) -> Result<Response<proto::ListMachinesResponse>, Status> {
        let request = request.into_inner();
        debug!(cluster = %self.cluster, "gRPC ListMachines");
        let call = ListMachinesRequest {
            machine_class: self.machine_class(provider_spec_if_readable(&request.provider_spec)),
            secret: secret(request.secrets),
        };
        answer(
            self.driver
                .list_machines(&call)
                .await
                .map(|listed| proto::ListMachinesResponse {
                    machine_list: listed.machine_list.into_iter().collect(),
                }),
        )
    }

    async fn shut_down_machine(
        &self,
        request: Request<proto::ShutDownMachineRequest>,
    ) -> Result<Response<proto::ShutDownMachineResponse>, Status> {
        debug!(machine = %request.get_ref().machine_name, "gRPC ShutDownMachine");
        Err(to_status(&MachineError::unimplemented(
            "ShutDownMachine is not part of the driver: delete the machine instead",
        )))
    }

    async fn get_volume_i_ds(
        &self,
        request: Request<proto::GetVolumeIDsRequest>,
    ) -> Result<Response<proto::GetVolumeIDsResponse>, Status> {
        // Go's json.Marshal of []*PersistentVolumeSpec: nil entries are null.
        let specs: Vec<Option<PersistentVolumeSpec>> = json_field(
            &request.into_inner().pv_spec_list,
            "PVSpecList",
            "a JSON list of PersistentVolumeSpecs",
        )
        .map_err(|e| to_status(&e))?;
        let call = GetVolumeIdsRequest {
            pv_specs: specs.into_iter().flatten().collect(),
        };
        answer(
            self.driver
                .get_volume_ids(&call)
                .await
                .map(|ids| proto::GetVolumeIDsResponse {
                    volume_i_ds: ids.volume_ids,
                }),
        )
    }
}
