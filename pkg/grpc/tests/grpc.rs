//! The cmi.v1 gRPC service as a client meets it: a tonic client against the server on a
//! real socket (TCP on 127.0.0.1, or a unix socket), with the KubeVirt driver over a mock
//! SPI standing for the provider cluster. Every RPC, its error paths, the health service,
//! the message size limit, graceful shutdown and what is logged.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::NodeAddress;
use mcm_grpc_driver::proto::identity_client::IdentityClient;
use mcm_grpc_driver::proto::machine_client::MachineClient;
use mcm_grpc_driver::proto::plugin_capability::Type as CapabilityType;
use mcm_grpc_driver::proto::plugin_capability::rpc::Type as Capability;
use mcm_grpc_driver::proto::{self};
use mcm_grpc_driver::status::from_status;
use mcm_grpc_driver::{Listen, Listener, PLUGIN_NAME, ServeOptions, serve};
use mcm_provider_kubevirt::driver::*;
use mcm_provider_kubevirt::spi::{DeleteOutcome, MockPluginSpi, SpiError, VmStatus};
use mcm_provider_kubevirt::{MachineCode, MachineError, MachinePlugin};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

const TOKEN: &str = "s3cr3t-grpc-token";
const USER_DATA: &str = "#cloud-config\nbootcmd: [echo s3cr3t-bootstrap]\n";
const CLUSTER: &str = "shoot--dev--grpc";

fn kubeconfig() -> String {
    format!(
        "apiVersion: v1
kind: Config
current-context: infra
clusters: [{{name: infra, cluster: {{server: 'https://127.0.0.1:6443', insecure-skip-tls-verify: true}}}}]
contexts: [{{name: infra, context: {{cluster: infra, user: u, namespace: vms}}}}]
users: [{{name: u, user: {{token: {TOKEN}}}}}]
"
    )
}

fn secrets() -> HashMap<String, Vec<u8>> {
    HashMap::from([
        ("kubeconfig".to_owned(), kubeconfig().into_bytes()),
        ("userData".to_owned(), USER_DATA.as_bytes().to_vec()),
    ])
}

fn provider_spec() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "region": "eu-1", "zone": "eu-1a",
        "resources": {"requests": {"cpu": "2", "memory": "4Gi"}},
        "rootVolume": {"pvc": {"resources": {"requests": {"storage": "20Gi"}}}, "source": {"blank": {}}}
    }))
    .unwrap()
}

fn vm_status(name: &str) -> VmStatus {
    VmStatus {
        provider_id: format!("kubevirt://{name}"),
        node_name: name.to_owned(),
        addresses: vec![NodeAddress {
            address: "10.0.0.7".into(),
            type_: "InternalIP".into(),
        }],
    }
}

fn create_request(name: &str) -> proto::CreateMachineRequest {
    proto::CreateMachineRequest {
        machine_name: name.to_owned(),
        provider_spec: provider_spec(),
        secrets: secrets(),
        last_known_state: Vec::new(),
    }
}

/// A running server and how to stop it.
struct Running {
    address: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the server stops")
            .expect("the server task ends without a panic");
    }
}

async fn start_on(
    listen: Listen,
    driver: Arc<dyn Driver>,
    max_message_size: Option<usize>,
) -> Running {
    let listener = Listener::bind(&listen).await.expect("bind");
    let address = listener.address();
    let (stop, stopped) = oneshot::channel::<()>();
    let mut options = ServeOptions::new(CLUSTER);
    options.shutdown_grace = Duration::from_secs(1);
    if let Some(limit) = max_message_size {
        options.max_message_size = limit;
    }
    let task = tokio::spawn(async move {
        serve(listener, driver, options, async {
            let _ = stopped.await;
        })
        .await
        .expect("serve");
    });
    Running {
        address,
        stop: Some(stop),
        task,
    }
}

async fn start(driver: Arc<dyn Driver>) -> Running {
    start_on(Listen::Tcp("127.0.0.1:0".parse().unwrap()), driver, None).await
}

async fn channel(address: &str) -> Channel {
    match address.strip_prefix("unix:") {
        Some(path) => {
            let path = path.to_owned();
            // The URI is not used: the connector dials the socket.
            Endpoint::try_from("http://[::1]:1")
                .unwrap()
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(path).await?,
                        ))
                    }
                }))
                .await
                .expect("unix connect")
        }
        None => Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
            .expect("tcp connect"),
    }
}

async fn machine_client(server: &Running) -> MachineClient<Channel> {
    MachineClient::new(channel(&server.address).await)
}

fn plugin(spi: MockPluginSpi) -> Arc<dyn Driver> {
    Arc::new(MachinePlugin::new(spi))
}

fn reason(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn identity_reports_name_capabilities_and_readiness() {
    let server = start(plugin(MockPluginSpi::new())).await;
    let mut identity = IdentityClient::new(channel(&server.address).await);

    let info = identity
        .get_plugin_info(proto::GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, PLUGIN_NAME);
    assert!(!info.version.is_empty());
    assert_eq!(info.manifest["protocol"], "cmi.v1");

    let capabilities: Vec<Capability> = identity
        .get_plugin_capabilities(proto::GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities
        .into_iter()
        .filter_map(|c| match c.r#type {
            Some(CapabilityType::Rpc(rpc)) => Capability::try_from(rpc.r#type).ok(),
            None => None,
        })
        .collect();
    for served in [
        Capability::CreateMachine,
        Capability::DeleteMachine,
        Capability::GetMachineStatus,
        Capability::ListMachines,
        Capability::GetVolumeIds,
    ] {
        assert!(capabilities.contains(&served), "{served:?}");
    }
    assert!(!capabilities.contains(&Capability::ShutdownMachine));

    let probe = identity.probe(proto::ProbeRequest {}).await.unwrap();
    assert_eq!(probe.into_inner().ready, Some(true));
    server.stop().await;
}

#[tokio::test]
async fn create_machine_hands_name_spec_secret_and_cluster_to_the_driver() {
    let mut spi = MockPluginSpi::new();
    spi.expect_create_machine()
        .withf(|request| {
            request.ownership.machine_name == "m-1"
                && request.ownership.cluster == CLUSTER
                && request.spec.region == "eu-1"
                && request.secret.access.namespace == "vms"
                && request.secret.user_data == USER_DATA.as_bytes()
        })
        .times(1)
        .returning(|_| Ok(vm_status("m-1")));
    let server = start(plugin(spi)).await;
    let created = machine_client(&server)
        .await
        .create_machine(create_request("m-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.provider_id, "kubevirt://m-1");
    assert_eq!(created.node_name, "m-1");
    assert_eq!(
        String::from_utf8(created.last_known_state).unwrap(),
        "Created kubevirt://m-1"
    );
    assert_eq!(created.addresses[0].address, "10.0.0.7");
    assert_eq!(created.addresses[0].r#type, "InternalIP");
    server.stop().await;
}

#[tokio::test]
async fn invalid_input_is_invalid_argument_naming_the_field_before_the_spi() {
    // No expectations: any SPI call would fail the test.
    let server = start(plugin(MockPluginSpi::new())).await;
    let mut client = machine_client(&server).await;

    let mut request = create_request("m-1");
    let mut spec: serde_json::Value = serde_json::from_slice(&request.provider_spec).unwrap();
    spec.as_object_mut().unwrap().remove("region");
    request.provider_spec = serde_json::to_vec(&spec).unwrap();
    request.secrets.remove("userData");
    let status = client.create_machine(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("providerSpec.region: Required value"),
        "{status:?}"
    );
    assert!(
        status
            .message()
            .contains("secret.data.userData: Required value"),
        "{status:?}"
    );
    assert_eq!(reason(&status), "InvalidArgument");

    let mut request = create_request("m-1");
    request.provider_spec = b"{\"region\": ".to_vec();
    let status = client.create_machine(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("providerSpec: Invalid value: is not JSON (line 1"),
        "{status:?}"
    );

    let status = client
        .create_machine(create_request("Not_A_Label"))
        .await
        .unwrap_err();
    assert!(
        status.message().contains("machine.metadata.name"),
        "{status:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn spi_failures_keep_their_machine_code() {
    let mut spi = MockPluginSpi::new();
    spi.expect_create_machine().returning(|_| {
        Err(SpiError::Api {
            action: "create VirtualMachine \"m-1\"".into(),
            code: MachineCode::ResourceExhausted,
            message: "exceeded quota".into(),
        })
    });
    spi.expect_get_machine_status()
        .returning(|_| Err(SpiError::NotFound("m-1".into())));
    spi.expect_delete_machine().returning(|_| {
        Err(SpiError::Api {
            action: "delete VirtualMachine \"m-1\"".into(),
            code: MachineCode::Unavailable,
            message: "API server unreachable".into(),
        })
    });
    let server = start(plugin(spi)).await;
    let mut client = machine_client(&server).await;

    let status = client
        .create_machine(create_request("m-1"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(reason(&status), "ResourceExhausted");
    assert_eq!(from_status(&status).code, MachineCode::ResourceExhausted);
    assert!(status.message().contains("exceeded quota"), "{status:?}");

    let status = client
        .get_machine_status(proto::GetMachineStatusRequest {
            machine_name: "m-1".into(),
            provider_spec: provider_spec(),
            secrets: secrets(),
            provider_id: "kubevirt://m-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(from_status(&status).code, MachineCode::NotFound);

    let status = client
        .delete_machine(proto::DeleteMachineRequest {
            machine_name: "m-1".into(),
            provider_spec: provider_spec(),
            secrets: secrets(),
            provider_id: "kubevirt://m-1".into(),
            last_known_state: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    server.stop().await;
}

#[tokio::test]
async fn delete_status_and_list_need_only_the_kubeconfig() {
    let mut spi = MockPluginSpi::new();
    spi.expect_delete_machine()
        .withf(|machine| {
            machine.ownership.machine_name == "m-1" && machine.access.namespace == "vms"
        })
        .times(1)
        .returning(|_| Ok(DeleteOutcome::Deleted));
    spi.expect_get_machine_status()
        .times(1)
        .returning(|_| Ok(vm_status("m-1")));
    spi.expect_list_machines()
        .withf(|request| request.cluster == CLUSTER)
        .times(1)
        .returning(|_| {
            Ok(BTreeMap::from([
                ("kubevirt://m-1".to_owned(), "m-1".to_owned()),
                ("kubevirt://m-2".to_owned(), "m-2".to_owned()),
            ]))
        });
    let server = start(plugin(spi)).await;
    let mut client = machine_client(&server).await;
    // A providerSpec that is not even JSON blocks none of them.
    let broken_spec = b"{not json".to_vec();

    let deleted = client
        .delete_machine(proto::DeleteMachineRequest {
            machine_name: "m-1".into(),
            provider_spec: broken_spec.clone(),
            secrets: secrets(),
            provider_id: "kubevirt://m-1".into(),
            last_known_state: b"Created kubevirt://m-1".to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.last_known_state, b"Deleted kubevirt://m-1");

    let status = client
        .get_machine_status(proto::GetMachineStatusRequest {
            machine_name: "m-1".into(),
            provider_spec: broken_spec.clone(),
            secrets: secrets(),
            provider_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.provider_id, "kubevirt://m-1");
    assert_eq!(status.node_name, "m-1");
    assert_eq!(status.addresses.len(), 1);

    let listed = client
        .list_machines(proto::ListMachinesRequest {
            provider_spec: broken_spec,
            secrets: secrets(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.machine_list.len(), 2);
    assert_eq!(listed.machine_list["kubevirt://m-2"], "m-2");

    let mut no_kubeconfig = secrets();
    no_kubeconfig.remove("kubeconfig");
    let status = client
        .list_machines(proto::ListMachinesRequest {
            provider_spec: Vec::new(),
            secrets: no_kubeconfig,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("secret.data.kubeconfig"),
        "{status:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn volume_ids_are_those_of_the_kubevirt_csi_driver() {
    let server = start(plugin(MockPluginSpi::new())).await;
    let mut client = machine_client(&server).await;
    let specs = serde_json::json!([
        {"csi": {"driver": "csi.kubevirt.io", "volumeHandle": "pvc-1"}},
        {"csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-2"}},
        null,
        {"hostPath": {"path": "/data"}},
        {"csi": {"driver": "csi.kubevirt.io", "volumeHandle": "pvc-3"}}
    ]);
    let ids = client
        .get_volume_i_ds(proto::GetVolumeIDsRequest {
            pv_spec_list: serde_json::to_vec(&specs).unwrap(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids.volume_i_ds, ["pvc-1", "pvc-3"]);

    let status = client
        .get_volume_i_ds(proto::GetVolumeIDsRequest {
            pv_spec_list: b"{\"csi\": 1}".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("PVSpecList: Invalid value"),
        "{status:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn shutdown_and_initialize_answer_unimplemented() {
    let server = start(plugin(MockPluginSpi::new())).await;
    let mut client = machine_client(&server).await;
    let status = client
        .shut_down_machine(proto::ShutDownMachineRequest {
            machine_name: "m-1".into(),
            provider_spec: provider_spec(),
            secrets: secrets(),
            provider_id: String::new(),
            last_known_state: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);

    // MCM takes Unimplemented from InitializeMachine as success.
    let status = client
        .initialize_machine(proto::InitializeMachineRequest {
            machine_name: "m-1".into(),
            provider_spec: provider_spec(),
            secrets: secrets(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert_eq!(reason(&status), "Unimplemented");
    server.stop().await;
}

/// A driver of its own for what the KubeVirt driver never does: VMs that are found but
/// not initialized, as some providers' are, and a CreateMachine that takes its time.
struct Stub {
    create_delay: Duration,
    /// Told when a CreateMachine has begun.
    create_begun: Arc<tokio::sync::Notify>,
}

impl Stub {
    fn new(create_delay: Duration) -> Self {
        Stub {
            create_delay,
            create_begun: Arc::default(),
        }
    }
}

fn name_of(request: &MachineRequest) -> String {
    request.machine.metadata.name.clone().unwrap_or_default()
}

#[async_trait]
impl Driver for Stub {
    async fn create_machine(
        &self,
        request: &CreateMachineRequest,
    ) -> Result<CreateMachineResponse, MachineError> {
        self.create_begun.notify_one();
        tokio::time::sleep(self.create_delay).await;
        Ok(CreateMachineResponse {
            provider_id: format!("kubevirt://{}", name_of(request)),
            ..Default::default()
        })
    }
    async fn initialize_machine(
        &self,
        request: &InitializeMachineRequest,
    ) -> Result<InitializeMachineResponse, MachineError> {
        Ok(InitializeMachineResponse {
            provider_id: format!("kubevirt://{}", name_of(request)),
            node_name: name_of(request),
            ..Default::default()
        })
    }
    async fn delete_machine(
        &self,
        _: &DeleteMachineRequest,
    ) -> Result<DeleteMachineResponse, MachineError> {
        Err(MachineError::unimplemented("not used"))
    }
    async fn get_machine_status(
        &self,
        request: &GetMachineStatusRequest,
    ) -> Result<GetMachineStatusResponse, MachineError> {
        Err(MachineError::uninitialized(
            "VM exists, not initialized",
            GetMachineStatusResponse {
                provider_id: format!("kubevirt://{}", name_of(request)),
                node_name: name_of(request),
                addresses: Vec::new(),
            },
        ))
    }
    async fn list_machines(
        &self,
        _: &ListMachinesRequest,
    ) -> Result<ListMachinesResponse, MachineError> {
        Err(MachineError::unimplemented("not used"))
    }
    async fn get_volume_ids(
        &self,
        _: &GetVolumeIdsRequest,
    ) -> Result<GetVolumeIdsResponse, MachineError> {
        Err(MachineError::unimplemented("not used"))
    }
}

#[tokio::test]
async fn uninitialized_carries_the_status_response_in_its_details() {
    let server = start(Arc::new(Stub::new(Duration::ZERO))).await;
    let mut client = machine_client(&server).await;
    let status = client
        .get_machine_status(proto::GetMachineStatusRequest {
            machine_name: "m-9".into(),
            provider_spec: provider_spec(),
            secrets: secrets(),
            provider_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "Uninitialized");
    let error = from_status(&status);
    assert_eq!(error.code, MachineCode::Uninitialized);
    let response = error
        .uninitialized
        .expect("the status response travels along");
    assert_eq!(response.provider_id, "kubevirt://m-9");
    assert_eq!(response.node_name, "m-9");

    let initialized = client
        .initialize_machine(proto::InitializeMachineRequest {
            machine_name: "m-9".into(),
            provider_spec: provider_spec(),
            secrets: secrets(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(initialized.provider_id, "kubevirt://m-9");
    server.stop().await;
}

#[tokio::test]
async fn a_unix_socket_serves_replaces_a_stale_socket_and_is_removed_at_the_end() {
    let dir = std::env::temp_dir().join(format!("grpc-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("driver.sock");
    // A socket file a killed earlier run left behind.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());

    let mut spi = MockPluginSpi::new();
    spi.expect_create_machine()
        .returning(|request| Ok(vm_status(&request.ownership.machine_name)));
    let server = start_on(Listen::Unix(path.clone()), plugin(spi), None).await;
    assert_eq!(server.address, format!("unix:{}", path.display()));
    let created = machine_client(&server)
        .await
        .create_machine(create_request("m-u"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.provider_id, "kubevirt://m-u");
    // A second server on the same path would cut the first one off: refused.
    let error = Listener::bind(&Listen::Unix(path.clone()))
        .await
        .err()
        .expect("refused while the first one serves");
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse, "{error}");
    server.stop().await;
    assert!(!path.exists(), "the socket file is removed");

    // Anything else at the path is left alone.
    let file = dir.join("not-a-socket");
    std::fs::write(&file, "data").unwrap();
    let error = Listener::bind(&Listen::Unix(file.clone()))
        .await
        .err()
        .expect("refused");
    assert!(error.to_string().contains("is not a socket"), "{error}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "data");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn health_is_serving_then_not_serving_on_shutdown() {
    let server = start(plugin(MockPluginSpi::new())).await;
    let mut health = HealthClient::new(channel(&server.address).await);
    for service in ["", "cmi.v1.Machine", "cmi.v1.Identity"] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.status(), ServingStatus::Serving, "{service:?}");
    }
    let mut watches = Vec::new();
    for service in ["", "cmi.v1.Machine"] {
        let mut watch = health
            .watch(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        let first = watch.message().await.unwrap().unwrap();
        assert_eq!(first.status(), ServingStatus::Serving, "{service:?}");
        watches.push((service, watch));
    }

    let Running {
        address: _,
        stop,
        task,
    } = server;
    stop.unwrap().send(()).unwrap();
    for (service, watch) in &mut watches {
        let update = tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .expect("a health update before the server goes")
            .expect("the watch is still open")
            .expect("an update");
        assert_eq!(update.status(), ServingStatus::NotServing, "{service:?}");
    }
    // The watches never end by themselves: the server returns after the grace period.
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the server stops after the grace period")
        .unwrap();
}

#[tokio::test]
async fn requests_over_the_size_limit_are_refused_before_the_driver() {
    let server = start_on(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        plugin(MockPluginSpi::new()),
        Some(64 * 1024),
    )
    .await;
    let mut request = create_request("m-big");
    request
        .secrets
        .insert("userData".into(), vec![b'#'; 100 * 1024]);
    let status = machine_client(&server)
        .await
        .create_machine(request)
        .await
        .unwrap_err();
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    assert!(!status.message().contains("s3cr3t"), "{status:?}");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_lets_the_call_in_flight_finish_then_refuses_connections() {
    let stub = Stub::new(Duration::from_millis(300));
    let begun = stub.create_begun.clone();
    let server = start(Arc::new(stub)).await;
    let address = server.address.clone();
    let mut client = machine_client(&server).await;
    let in_flight = tokio::spawn(async move { client.create_machine(create_request("m-s")).await });
    begun.notified().await;
    server.stop().await;
    let created = in_flight
        .await
        .unwrap()
        .expect("the call in flight completes");
    assert_eq!(created.into_inner().provider_id, "kubevirt://m-s");
    let refused = Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await;
    assert!(refused.is_err(), "no new connections after shutdown");
}

/// Captured log lines: every span and event of the server, at TRACE.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn secrets_are_never_logged_or_answered() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut spi = MockPluginSpi::new();
    spi.expect_create_machine()
        .returning(|_| Err(SpiError::NotFound("m-1".into())));
    let server = start(plugin(spi)).await;
    let mut client = machine_client(&server).await;
    let mut answers = Vec::new();
    answers.push(format!(
        "{:?}",
        client.create_machine(create_request("m-1")).await
    ));
    let mut broken = create_request("m-1");
    broken.secrets.insert(
        "kubeconfig".into(),
        format!("token: {TOKEN}\nclusters: [").into_bytes(),
    );
    answers.push(format!("{:?}", client.create_machine(broken).await));
    server.stop().await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("gRPC CreateMachine"),
        "the capture works: {logs}"
    );
    let shown = format!("{:?}", create_request("m-1"));
    assert!(
        shown.contains("kubeconfig") && shown.contains("m-1"),
        "{shown}"
    );
    for text in [&logs, &shown, &answers[0], &answers[1]] {
        assert!(!text.contains("s3cr3t"), "{text}");
    }
}
