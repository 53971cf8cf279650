//! The KubeVirt SPI against an in-memory API server behind kube's real client.
//!
//! The double stands for a kube-apiserver with the KubeVirt CRDs: it stores what is
//! created, answers 409 on a second create and 404 for missing objects, filters lists by
//! label selector and honours delete preconditions. It does not garbage-collect, so the
//! tests check owner references rather than cascading deletion.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::ByteString;
use kube::Client;
use kube::config::Kubeconfig;
use kube_fake::{FakeApiServer, Fault};
use mcm_provider_kubevirt::MachineCode;
use mcm_provider_kubevirt::kubevirt::kube_spi::{ClientFactory, KubeVirtSpi};
use mcm_provider_kubevirt::kubevirt::ownership::Ownership;
use mcm_provider_kubevirt::provider_spec::decode_provider_spec;
use mcm_provider_kubevirt::secret::{ClusterAccess, ProviderSecret};
use mcm_provider_kubevirt::spi::{
    CreateRequest, DeleteOutcome, ListRequest, MachineRef, PluginSpi, SpiError,
};
use serde_json::{Value, json};

const NS: &str = "vms";
const CLUSTER: &str = "shoot--dev--kubevirt";
const VMS: &str = "/apis/kubevirt.io/v1/namespaces/vms/virtualmachines";
const VMIS: &str = "/apis/kubevirt.io/v1/namespaces/vms/virtualmachineinstances";
const SECRETS: &str = "/api/v1/namespaces/vms/secrets";

struct FakeClients(FakeApiServer);

#[async_trait]
impl ClientFactory for FakeClients {
    async fn client(&self, access: &ClusterAccess) -> Result<Client, SpiError> {
        Ok(self.0.client(&access.namespace))
    }
}

fn access() -> ClusterAccess {
    ClusterAccess {
        kubeconfig: Kubeconfig::default(),
        namespace: NS.to_owned(),
    }
}

fn ownership(name: &str) -> Ownership {
    Ownership {
        machine_name: name.to_owned(),
        machine_class: "worker-class".to_owned(),
        cluster: CLUSTER.to_owned(),
    }
}

fn create_request(name: &str) -> CreateRequest {
    let spec = decode_provider_spec(&json!({
        "region": "r", "zone": "z",
        "resources": {"requests": {"cpu": 1, "memory": "1Gi"}},
        "rootVolume": {"pvc": {"resources": {"requests": {"storage": "8Gi"}}}, "source": {"blank": {}}},
        "sshKeys": ["ssh-ed25519 AAAA k"]
    }))
    .unwrap();
    CreateRequest {
        ownership: ownership(name),
        spec,
        secret: ProviderSecret {
            access: access(),
            user_data: b"#cloud-config\nhostname: h\n".to_vec(),
        },
    }
}

fn machine_ref(name: &str) -> MachineRef {
    MachineRef {
        ownership: ownership(name),
        access: access(),
    }
}

fn setup() -> (FakeApiServer, KubeVirtSpi<FakeClients>) {
    let server = FakeApiServer::new();
    (server.clone(), KubeVirtSpi::new(FakeClients(server)))
}

/// A VirtualMachine created by someone else, with the given labels.
fn vm_object(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {"template": {}}
    })
}

fn labels_of(object: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(object["metadata"]["labels"].clone()).unwrap_or_default()
}

#[tokio::test]
async fn create_writes_secret_then_vm_then_owner_reference() {
    let (server, spi) = setup();
    let status = spi.create_machine(&create_request("m-1")).await.unwrap();
    assert_eq!(status.provider_id, "kubevirt://m-1");
    assert_eq!(status.node_name, "m-1");

    assert_eq!(
        server.request_lines(),
        [
            format!("GET {VMS}/m-1"),
            format!("POST {SECRETS}"),
            format!("POST {VMS}"),
            format!("GET {SECRETS}/userdata-m-1"),
            format!("PATCH {SECRETS}/userdata-m-1"),
            format!("GET {VMIS}/m-1"),
        ]
    );
    let vm = server.get(VMS, "m-1").unwrap();
    assert_eq!(vm["spec"]["runStrategy"], "Always");
    assert!(vm["spec"].get("running").is_none());
    let labels = labels_of(&vm);
    assert_eq!(
        labels["kubevirt.provider.machine.sapcloud.io/cluster"],
        CLUSTER
    );
    assert_eq!(
        labels["kubevirt.provider.machine.sapcloud.io/machine"],
        "m-1"
    );

    let secret = server.get(SECRETS, "userdata-m-1").unwrap();
    let owner = &secret["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "VirtualMachine");
    assert_eq!(owner["name"], "m-1");
    assert_eq!(owner["uid"], vm["metadata"]["uid"]);
    let data: ByteString = serde_json::from_value(secret["data"]["userdata"].clone()).unwrap();
    let user_data = String::from_utf8(data.0).unwrap();
    assert!(
        user_data.contains("ssh_authorized_keys") && user_data.contains("hostname: h"),
        "{user_data}"
    );
}

#[tokio::test]
async fn create_again_converges_without_duplicates() {
    let (server, spi) = setup();
    spi.create_machine(&create_request("m-1")).await.unwrap();
    let vm_before = server.get(VMS, "m-1").unwrap();
    spi.create_machine(&create_request("m-1")).await.unwrap();
    assert_eq!(server.names(VMS), ["m-1"]);
    assert_eq!(server.names(SECRETS), ["userdata-m-1"]);
    assert_eq!(
        server.get(VMS, "m-1").unwrap()["metadata"]["uid"],
        vm_before["metadata"]["uid"]
    );
}

#[tokio::test]
async fn create_after_a_failure_between_writes_completes_the_work() {
    let (server, spi) = setup();
    // The VM create fails after the Secret was written.
    server.set_fault(|request, _| {
        (request.method == "POST" && request.path == VMS)
            .then(|| Fault::Status(503, "unavailable".into()))
    });
    let error = spi
        .create_machine(&create_request("m-1"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), MachineCode::Unavailable);
    assert_eq!(server.names(SECRETS), ["userdata-m-1"]);
    assert!(server.names(VMS).is_empty());

    server.clear_fault();
    spi.create_machine(&create_request("m-1")).await.unwrap();
    assert_eq!(server.names(VMS), ["m-1"]);
    let secret = server.get(SECRETS, "userdata-m-1").unwrap();
    assert_eq!(secret["metadata"]["ownerReferences"][0]["name"], "m-1");
}

/// MCM stops calling CreateMachine once GetMachineStatus finds the VM, so a create that
/// wrote the VM but lost the answer is finished by the status call.
#[tokio::test]
async fn status_finishes_a_create_interrupted_before_the_owner_reference() {
    let (server, spi) = setup();
    // The VM is written, then the connection drops: the owner reference never follows.
    server.set_fault(|request, _| {
        (request.method == "POST" && request.path == VMS).then_some(Fault::DropAfterApply)
    });
    spi.create_machine(&create_request("m-1"))
        .await
        .unwrap_err();
    assert_eq!(server.names(VMS), ["m-1"]);
    let secret = server.get(SECRETS, "userdata-m-1").unwrap();
    assert!(secret["metadata"]["ownerReferences"].is_null());

    server.clear_fault();
    spi.get_machine_status(&machine_ref("m-1")).await.unwrap();
    let secret = server.get(SECRETS, "userdata-m-1").unwrap();
    let vm = server.get(VMS, "m-1").unwrap();
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"],
        vm["metadata"]["uid"]
    );

    // Already owned, or gone: nothing more is written.
    server.clear_requests();
    spi.get_machine_status(&machine_ref("m-1")).await.unwrap();
    server.remove(SECRETS, "userdata-m-1");
    spi.get_machine_status(&machine_ref("m-1")).await.unwrap();
    assert!(server.requests().iter().all(|r| r.method == "GET"));
}

#[tokio::test]
async fn create_never_takes_over_foreign_objects() {
    let (server, spi) = setup();
    server.insert(VMS, vm_object("m-1", json!({"app": "someone-else"})));
    let error = spi
        .create_machine(&create_request("m-1"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), MachineCode::AlreadyExists);
    assert!(server.names(SECRETS).is_empty());

    let (server, spi) = setup();
    server.insert(
        SECRETS,
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "userdata-m-1", "namespace": NS}, "data": {"x": "eA=="}}),
    );
    let error = spi
        .create_machine(&create_request("m-1"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), MachineCode::AlreadyExists);
    assert!(server.names(VMS).is_empty());
    assert_eq!(
        server.get(SECRETS, "userdata-m-1").unwrap()["data"]["x"],
        "eA=="
    );
}

#[tokio::test]
async fn status_is_not_found_for_a_missing_vm_and_reports_vmi_addresses() {
    let (server, spi) = setup();
    let error = spi
        .get_machine_status(&machine_ref("m-1"))
        .await
        .unwrap_err();
    assert_eq!(error, SpiError::NotFound("m-1".into()));

    spi.create_machine(&create_request("m-1")).await.unwrap();
    server.insert(VMIS, json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "m-1", "namespace": NS}, "spec": {"domain": {"devices": {}}},
        "status": {"interfaces": [{"name": "default", "ipAddress": "10.0.0.5", "ipAddresses": ["10.0.0.5", "fd00::5"]}]}}));
    let status = spi.get_machine_status(&machine_ref("m-1")).await.unwrap();
    let addresses: Vec<_> = status
        .addresses
        .iter()
        .map(|a| (a.type_.as_str(), a.address.as_str()))
        .collect();
    assert_eq!(
        addresses,
        [("InternalIP", "10.0.0.5"), ("InternalIP", "fd00::5")]
    );
}

#[tokio::test]
async fn status_adopts_vms_of_the_go_provider() {
    let (server, spi) = setup();
    server.insert(VMS, vm_object("m-1", json!({"kubevirt.io/vm": "m-1"})));
    let status = spi.get_machine_status(&machine_ref("m-1")).await.unwrap();
    assert_eq!(status.provider_id, "kubevirt://m-1");
}

#[tokio::test]
async fn delete_removes_vm_and_secret_and_is_idempotent() {
    let (server, spi) = setup();
    spi.create_machine(&create_request("m-1")).await.unwrap();
    server.clear_requests();
    assert_eq!(
        spi.delete_machine(&machine_ref("m-1")).await.unwrap(),
        DeleteOutcome::Deleted
    );
    let delete = server
        .requests()
        .into_iter()
        .find(|r| r.method == "DELETE" && r.path == format!("{VMS}/m-1"))
        .unwrap();
    assert!(delete.body.unwrap()["preconditions"]["uid"].is_string());
    assert!(server.names(VMS).is_empty());
    assert!(server.names(SECRETS).is_empty());
    assert_eq!(
        spi.delete_machine(&machine_ref("m-1")).await.unwrap(),
        DeleteOutcome::AlreadyGone
    );
}

#[tokio::test]
async fn delete_collects_a_secret_left_by_an_interrupted_create() {
    let (server, spi) = setup();
    server.set_fault(|request, _| {
        (request.method == "POST" && request.path == VMS).then_some(Fault::Drop)
    });
    spi.create_machine(&create_request("m-1"))
        .await
        .unwrap_err();
    server.clear_fault();
    assert_eq!(server.names(SECRETS), ["userdata-m-1"]);
    assert_eq!(
        spi.delete_machine(&machine_ref("m-1")).await.unwrap(),
        DeleteOutcome::Deleted
    );
    assert!(server.names(SECRETS).is_empty());
}

#[tokio::test]
async fn delete_leaves_foreign_vms_alone() {
    let (server, spi) = setup();
    server.insert(VMS, vm_object("m-1", json!({})));
    assert_eq!(
        spi.delete_machine(&machine_ref("m-1")).await.unwrap(),
        DeleteOutcome::NotOwned
    );
    assert_eq!(server.names(VMS), ["m-1"]);
}

#[tokio::test]
async fn list_returns_only_this_clusters_vms_across_pages() {
    let (server, spi) = setup();
    for index in 0..3 {
        spi.create_machine(&create_request(&format!("m-{index}")))
            .await
            .unwrap();
    }
    // Another cluster's VM, an unlabelled VM and a Go-provider VM share the namespace.
    let mut other = create_request("other-1");
    other.ownership.cluster = "shoot--other--cluster".into();
    spi.create_machine(&other).await.unwrap();
    server.insert(VMS, vm_object("pets", json!({})));
    server.insert(
        VMS,
        vm_object("legacy", json!({"kubevirt.io/vm": "legacy"})),
    );
    server.clear_requests();

    let listed = spi
        .list_machines(&ListRequest {
            cluster: CLUSTER.into(),
            access: access(),
        })
        .await
        .unwrap();
    let expected: BTreeMap<String, String> = (0..3)
        .map(|i| (format!("kubevirt://m-{i}"), format!("m-{i}")))
        .collect();
    assert_eq!(listed, expected);
    let list = &server.requests()[0];
    assert_eq!(
        list.query["labelSelector"],
        format!(
            "app.kubernetes.io/managed-by=machine-controller-manager-provider-kubevirt,kubevirt.provider.machine.sapcloud.io/cluster={CLUSTER}"
        )
    );
}

#[tokio::test]
async fn api_failures_map_to_mcm_codes() {
    let cases = [
        (
            Fault::Status(429, "slow down".into()),
            MachineCode::Unavailable,
        ),
        (
            Fault::Status(503, "unavailable".into()),
            MachineCode::Unavailable,
        ),
        (
            Fault::Status(504, "timeout".into()),
            MachineCode::DeadlineExceeded,
        ),
        (Fault::Status(500, "boom".into()), MachineCode::Internal),
        (
            Fault::Status(401, "who".into()),
            MachineCode::Unauthenticated,
        ),
        (
            Fault::Status(403, "forbidden".into()),
            MachineCode::PermissionDenied,
        ),
        (
            Fault::Status(403, "exceeded quota: compute".into()),
            MachineCode::ResourceExhausted,
        ),
        (
            Fault::Status(422, "invalid".into()),
            MachineCode::InvalidArgument,
        ),
        (Fault::Drop, MachineCode::Unavailable),
    ];
    for (fault, code) in cases {
        let (server, spi) = setup();
        let mut fault = Some(fault);
        server.set_fault(move |_, _| fault.take());
        let error = spi
            .get_machine_status(&machine_ref("m-1"))
            .await
            .unwrap_err();
        assert_eq!(error.code(), code, "{error}");
    }
}

#[tokio::test]
async fn delete_removes_vms_of_the_go_provider() {
    let (server, spi) = setup();
    server.insert(VMS, vm_object("m-1", json!({"kubevirt.io/vm": "m-1"})));
    assert_eq!(
        spi.delete_machine(&machine_ref("m-1")).await.unwrap(),
        DeleteOutcome::Deleted
    );
    assert!(server.names(VMS).is_empty());
}

#[tokio::test]
async fn ssh_keys_with_a_shell_script_user_data_fail_before_any_write() {
    let (server, spi) = setup();
    let mut request = create_request("m-1");
    request.secret.user_data = b"#!/bin/bash\necho hi\n".to_vec();
    let error = spi.create_machine(&request).await.unwrap_err();
    assert_eq!(error.code(), MachineCode::InvalidArgument);
    assert!(
        error.to_string().contains("providerSpec.sshKeys"),
        "{error}"
    );
    assert!(server.requests().is_empty());
}

/// Machine `m-1` on a provider cluster that refuses connections (a port nobody listens on).
fn unreachable_machine(token: &str) -> MachineRef {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    machine_at(&format!("http://127.0.0.1:{port}"), token)
}

/// Machine `m-1` on the provider cluster at `url`, through a kubeconfig as users write it.
fn machine_at(url: &str, token: &str) -> MachineRef {
    let kubeconfig = format!(
        "apiVersion: v1
kind: Config
current-context: c
clusters: [{{name: c, cluster: {{server: '{url}'}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u, namespace: {NS}}}}}]
users: [{{name: u, user: {{token: {token}}}}}]
"
    );
    let data = BTreeMap::from([("kubeconfig".to_owned(), ByteString(kubeconfig.into_bytes()))]);
    MachineRef {
        ownership: ownership("m-1"),
        access: ClusterAccess::from_data(&data).unwrap(),
    }
}

/// A provider cluster that refuses connections: the error says so, not only "client
/// error (Connect)", since it is what an operator reads in the Machine's lastOperation.
#[tokio::test]
async fn an_unreachable_server_is_named_with_the_cause() {
    use mcm_provider_kubevirt::kubevirt::kube_spi::KubeconfigClientFactory;

    let machine = unreachable_machine("s3cr3t-token");
    let error = KubeVirtSpi::new(KubeconfigClientFactory::default())
        .get_machine_status(&machine)
        .await
        .unwrap_err();
    assert_eq!(error.code(), MachineCode::Unavailable, "{error}");
    let text = error.to_string();
    assert!(text.contains("API server unreachable"), "{text}");
    assert!(text.to_lowercase().contains("connection refused"), "{text}");
    assert!(!text.contains("s3cr3t-token"), "{text}");
}

/// The observed factory's clients report each request (here a refused one, as failed),
/// which is what the sidecar's `mcm_cloud_api_requests*` metrics count.
#[tokio::test]
async fn an_observed_client_reports_every_request() {
    use mcm_provider_kubevirt::kubevirt::api_calls::ApiCallObserver;
    use mcm_provider_kubevirt::kubevirt::kube_spi::KubeconfigClientFactory;
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, bool)>>);
    impl ApiCallObserver for Recorder {
        fn observe(&self, service: &str, _elapsed: std::time::Duration, failed: bool) {
            self.0.lock().unwrap().push((service.to_owned(), failed));
        }
    }

    let machine = unreachable_machine("t");
    let recorder = Arc::new(Recorder::default());
    let factory = KubeconfigClientFactory::observed(recorder.clone());
    let _ = KubeVirtSpi::new(factory).get_machine_status(&machine).await;
    let recorded = recorder.0.lock().unwrap().clone();
    assert!(!recorded.is_empty());
    assert!(
        recorded
            .iter()
            .all(|(service, failed)| service == "virtualmachines" && *failed),
        "{recorded:?}"
    );
}

/// A busy provider API server (503) is answered Unavailable after one request, for MCM's
/// requeue to retry: kube's default in-client retry (15 attempts over minutes) is off.
#[tokio::test]
async fn a_busy_provider_cluster_is_answered_after_one_request() {
    use mcm_provider_kubevirt::kubevirt::kube_spi::KubeconfigClientFactory;

    let server = FakeApiServer::new();
    server.set_fault(|request, _| {
        request.path.contains("/virtualmachines").then(|| {
            kube_fake::Fault::Status(
                503,
                "the server is currently unable to handle the request".into(),
            )
        })
    });
    let url = server.listen().await.unwrap();
    let spi = KubeVirtSpi::new(KubeconfigClientFactory::default());
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        spi.get_machine_status(&machine_at(&url, "t")),
    )
    .await
    .expect("the 503 is not answered at once: the client retries it");
    assert_eq!(answer.unwrap_err().code(), MachineCode::Unavailable);
    let requests = server
        .request_lines()
        .into_iter()
        .filter(|line| line.contains("/virtualmachines"))
        .count();
    assert_eq!(requests, 1, "{:?}", server.request_lines());
}
