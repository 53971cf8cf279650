//! End-to-end, least privilege: the sidecar with exactly the rights the chart and the
//! provider-cluster RBAC sample grant, nothing more.
//!
//! The chart's ServiceAccount and RBAC (rendered with `helm template`, `E2E_HELM`) and
//! `kubernetes/provider-cluster-rbac.yaml` are applied to the bed; the sidecar runs with
//! the chart's flags and a token of the chart's ServiceAccount as control and target
//! kubeconfig, and the provider Secret holds a token of the sample's ServiceAccount. A
//! Machine (whose userData asks for a bootstrap token) is created, its Node joins, the
//! Machine is deleted (drain, VM, Node), then its class; the sidecar must never have been
//! refused anything. Both identities are first checked to be really restricted, so the
//! scenario cannot pass on admin rights.
//!
//! Needs `E2E_HELM` (a helm binary; `bash test/packaging/install-tools.sh` installs one)
//! whenever `E2E_KUBECONFIG` is set, and fails without it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::bed::{Bed, PATIENCE, SECRET_FINALIZER, Sidecar, eventually, free_port, repo};
use e2e::kubelet::FakeKubelet;
use e2e::scenario::with_bed;
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, ObjectMeta, Patch,
    PatchParams, PostParams,
};
use kube::config::Kubeconfig;
use kube::discovery::Scope;
use kube::{Api, Client, ResourceExt};
use kubevirt_api::kubevirt::v1::virtualmachines::VirtualMachine;
use mcm_provider_kubevirt::mcm::Machine;
use serde_json::{Value, json};

const CHART: &str = "charts/machine-controller-manager-provider-kubevirt";
const FIELD_MANAGER: &str = "e2e-rbac";
/// The sidecar's finalizer on the Nodes of its machines.
const NODE_FINALIZER: &str = "node.machine.sapcloud.io/machine-controller";
/// The chart's `kubeVersion` (>= 1.27) would refuse older beds; the RBAC API is the same.
const KUBE_VERSION: &str = "1.27.0";

#[tokio::test]
async fn least_privilege() {
    if std::env::var_os("E2E_KUBECONFIG").is_some() && std::env::var_os("E2E_HELM").is_none() {
        panic!(
            "E2E_KUBECONFIG is set but E2E_HELM is not: the rbac scenario renders the chart's RBAC with helm; set E2E_HELM to a helm binary (`bash test/packaging/install-tools.sh` prints a directory with bin/helm)"
        );
    }
    with_bed("rbac", async |bed| {
        let helm = PathBuf::from(std::env::var_os("E2E_HELM").expect("checked above"));
        scenario(bed, helm).await;
    })
    .await;
}

async fn scenario(bed: &Bed, helm: PathBuf) {
    let namespace = bed.namespace.clone();
    // The namespace is unique, so as release name it makes the cluster-scoped names unique.
    let rendered = render_chart(&helm, &namespace);
    let (deployments, rbac): (Vec<Value>, Vec<Value>) = rendered
        .into_iter()
        .partition(|object| object["kind"] == "Deployment");
    let control_sa = single_service_account(&rbac);
    let sidecar_flags = chart_sidecar_flags(&deployments);
    apply_all(bed, rbac).await;

    let sample = std::fs::read_to_string(repo("kubernetes/provider-cluster-rbac.yaml"))
        .expect("provider-cluster RBAC sample");
    let provider_rbac: Vec<Value> = serde_saphyr::from_multiple::<Value>(&sample)
        .expect("the sample parses")
        .into_iter()
        .map(|object| in_namespace(object, &namespace))
        .collect();
    let provider_sa = single_service_account(&provider_rbac);
    apply_all(bed, provider_rbac).await;
    eprintln!("rbac: chart RBAC for {control_sa}, provider RBAC for {provider_sa} applied");

    let control_kubeconfig = token_kubeconfig(bed, &control_sa).await;
    let provider_kubeconfig = token_kubeconfig(bed, &provider_sa).await;
    assert_restricted(bed, &control_kubeconfig, &provider_kubeconfig).await;

    let kubeconfig_path = std::env::temp_dir().join(format!("{namespace}-control.kubeconfig"));
    std::fs::write(&kubeconfig_path, &control_kubeconfig).expect("control kubeconfig written");
    let _remove_kubeconfig = RemoveOnDrop(kubeconfig_path.clone());

    let machine = machine_name(&namespace);
    create_secret(bed, "provider", &provider_kubeconfig).await;
    bed.create_class("class", "provider").await;
    let port = free_port();
    let kubeconfig = kubeconfig_path.display().to_string();
    let mut args = sidecar_flags;
    args.extend([
        format!("--control-kubeconfig={kubeconfig}"),
        format!("--target-kubeconfig={kubeconfig}"),
        format!("--port={port}"),
        "--address=127.0.0.1".to_owned(),
        "--v=4".to_owned(),
    ]);
    let mut sidecar = Sidecar::start("rbac", &args, port);
    bed.create_machine(&machine, "class").await;

    // A refusal fails at once: the sidecar would only retry it until the wait times out.
    let took = eventually("the machine created", PATIENCE, || async {
        assert_never_refused(&sidecar);
        bed.machine_created(&machine).await
    })
    .await;
    eprintln!("rbac: machine created in {took:?}");
    let bootstrap_tokens = || bootstrap_tokens_of(bed, &machine);
    let tokens = bootstrap_tokens().await;
    assert_eq!(
        tokens.len(),
        1,
        "one bootstrap token in kube-system for {machine}"
    );
    // Should the scenario fail before the machine's deletion removes it.
    for token in &tokens {
        bed.delete_at_teardown(
            ApiResource::erase::<Secret>(&()),
            Some("kube-system"),
            token,
        );
    }

    // The machine's Node joins, so that joining (Node finalizer and labels, bootstrap
    // token deleted) and deletion (Terminating condition, cordon, drain, Node deleted) run
    // with the chart's target rights too, not only the shortcuts taken without a Node.
    let _kubelet = FakeKubelet::start(bed.client.clone(), &bed.namespace);
    eventually("the machine Running", PATIENCE, || async {
        assert_never_refused(&sidecar);
        let status = bed
            .machines()
            .get(&machine)
            .await
            .map_err(|e| e.to_string())?
            .status
            .unwrap_or_default();
        match status.current_status.and_then(|c| c.phase).as_deref() {
            Some("Running") => Ok(()),
            phase => Err(format!(
                "phase {phase:?}, lastOperation {:?}",
                status.last_operation
            )),
        }
    })
    .await;
    eventually("the bootstrap token deleted on join", PATIENCE, || async {
        assert_never_refused(&sidecar);
        match bootstrap_tokens().await.as_slice() {
            [] => Ok(()),
            left => Err(format!("left: {left:?}")),
        }
    })
    .await;
    eventually("the Node finalizer", PATIENCE, || async {
        let node = bed.nodes().get(&machine).await.map_err(|e| e.to_string())?;
        if node.finalizers().iter().any(|f| f == NODE_FINALIZER) {
            Ok(())
        } else {
            Err(format!("Node finalizers {:?}", node.finalizers()))
        }
    })
    .await;

    bed.machines()
        .delete(&machine, &DeleteParams::default())
        .await
        .expect("machine deleted");
    let took = eventually("the machine gone", PATIENCE, || async {
        assert_never_refused(&sidecar);
        bed.machine_gone(&machine).await
    })
    .await;
    eprintln!("rbac: machine gone in {took:?}");

    bed.classes()
        .delete("class", &DeleteParams::default())
        .await
        .expect("class deleted");
    eventually("the class gone", PATIENCE, || async {
        match bed.classes().get_opt("class").await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err("class still there".to_owned()),
            Err(error) => Err(error.to_string()),
        }
    })
    .await;
    // The class's deletion itself makes the sidecar look at its Secret again.
    eventually("the Secret released", PATIENCE, || async {
        assert_never_refused(&sidecar);
        let secret = bed
            .secrets()
            .get("provider")
            .await
            .map_err(|e| e.to_string())?;
        if secret.finalizers().iter().any(|f| f == SECRET_FINALIZER) {
            Err(format!("Secret finalizers {:?}", secret.finalizers()))
        } else {
            Ok(())
        }
    })
    .await;
    bed.assert_nothing_left(PATIENCE).await;

    assert_eq!(
        sidecar.exited(),
        None,
        "the sidecar ended (leader election or a controller failed)"
    );
    assert_never_refused(&sidecar);
    assert!(
        sidecar.log().contains(&machine),
        "the sidecar logged nothing about {machine}, so its log proves nothing"
    );
}

/// The scenario's Machine. The bootstrap token's id comes from the name's tail, and
/// kube-system is shared with other scenarios: the namespace's random suffix keeps it apart.
fn machine_name(namespace: &str) -> String {
    format!("rbac-{}", &namespace[namespace.len() - 6..])
}

/// Panics with the sidecar's log lines that tell of a refused request, if any.
fn assert_never_refused(sidecar: &Sidecar) {
    let log = sidecar.log();
    let refused: Vec<String> = log
        .lines()
        .filter(|line| {
            line.contains("Forbidden") || line.contains("forbidden") || line.contains(" 403")
        })
        .map(without_colours)
        .collect();
    assert!(
        refused.is_empty(),
        "the sidecar was refused {} time(s) with the chart's and the sample's RBAC:\n{}",
        refused.len(),
        refused.join("\n")
    );
}

/// `line` without ANSI colour sequences (the sidecar colours its text log), for reading.
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An SGR sequence: ESC [ parameters m.
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The chart's ServiceAccount, RBAC and Deployment for release `namespace` in
/// `namespace`, Machines in the same namespace, the target being this cluster.
fn render_chart(helm: &Path, namespace: &str) -> Vec<Value> {
    let output = Command::new(helm)
        .arg("template")
        .arg(namespace)
        .arg(repo(CHART))
        .args(["--kube-version", KUBE_VERSION, "--namespace", namespace])
        .args(["--set", &format!("machineNamespace={namespace}")])
        .args(["--show-only", "templates/serviceaccount.yaml"])
        .args(["--show-only", "templates/rbac-control.yaml"])
        .args(["--show-only", "templates/rbac-target.yaml"])
        .args(["--show-only", "templates/deployment.yaml"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run E2E_HELM {}: {e}", helm.display()));
    assert!(
        output.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("helm prints UTF-8");
    let objects: Vec<Value> = serde_saphyr::from_multiple(&text).expect("helm prints YAML");
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
    ] {
        assert!(
            kinds.contains(&kind),
            "the chart rendered no {kind}: {kinds:?}"
        );
    }
    objects
}

/// The provider container's flags of the rendered Deployment, without those this scenario
/// sets itself (clusters, port, address, verbosity).
fn chart_sidecar_flags(deployments: &[Value]) -> Vec<String> {
    let [deployment] = deployments else {
        panic!("expected one Deployment, got {}", deployments.len());
    };
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("Deployment containers");
    let provider = containers
        .iter()
        .find(|c| c["name"] == "machine-controller-manager-provider-kubevirt")
        .expect("the provider container");
    let ours = [
        "--control-kubeconfig=",
        "--target-kubeconfig=",
        "--port=",
        "--address=",
        "--v=",
    ];
    provider["args"]
        .as_array()
        .expect("provider args")
        .iter()
        .map(|arg| arg.as_str().expect("args are strings").to_owned())
        .filter(|arg| !ours.iter().any(|flag| arg.starts_with(flag)))
        .collect()
}

/// `object` moved into `namespace`: its own namespace and its subjects'.
fn in_namespace(mut object: Value, namespace: &str) -> Value {
    if object["metadata"].get("namespace").is_some() {
        object["metadata"]["namespace"] = json!(namespace);
    }
    if let Some(subjects) = object.get_mut("subjects").and_then(Value::as_array_mut) {
        for subject in subjects {
            subject["namespace"] = json!(namespace);
        }
    }
    object
}

fn single_service_account(objects: &[Value]) -> String {
    let names: Vec<&str> = objects
        .iter()
        .filter(|o| o["kind"] == "ServiceAccount")
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    let [name] = names[..] else {
        panic!("expected one ServiceAccount, got {names:?}");
    };
    name.to_owned()
}

/// Server-side applies `objects` as the admin; those outside the namespace (ClusterRoles,
/// kube-system's Role) are deleted at teardown.
async fn apply_all(bed: &Bed, objects: Vec<Value>) {
    for value in objects {
        let object: DynamicObject = serde_json::from_value(value).expect("a Kubernetes object");
        let types = object.types.clone().expect("apiVersion and kind");
        let gvk = GroupVersionKind::try_from(&types).expect("a valid apiVersion");
        let (resource, capabilities) = kube::discovery::pinned_kind(&bed.client, &gvk)
            .await
            .unwrap_or_else(|e| panic!("{} is not served: {e}", types.kind));
        let name = object.name_any();
        let namespace = match capabilities.scope {
            Scope::Namespaced => Some(object.namespace().unwrap_or_else(|| bed.namespace.clone())),
            Scope::Cluster => None,
        };
        let api: Api<DynamicObject> = match &namespace {
            Some(namespace) => Api::namespaced_with(bed.client.clone(), namespace, &resource),
            None => Api::all_with(bed.client.clone(), &resource),
        };
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot apply {} {name}: {e}", types.kind));
        if namespace.as_ref() != Some(&bed.namespace) {
            bed.delete_at_teardown(resource, namespace.as_deref(), &name);
        }
    }
}

/// A kubeconfig for this cluster (server and CA of E2E_KUBECONFIG, the bed's namespace)
/// that authenticates with a fresh token of the ServiceAccount `account`.
async fn token_kubeconfig(bed: &Bed, account: &str) -> String {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = bed
        .api::<ServiceAccount>()
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("token for ServiceAccount {account}: {e}"))
        .status
        .expect("TokenRequest status")
        .token;
    let mut config: Value =
        serde_saphyr::from_str(&bed.provider_kubeconfig()).expect("kubeconfig parses");
    config["users"] = json!([{"name": account, "user": {"token": token}}]);
    config["contexts"][0]["context"]["user"] = json!(account);
    serde_saphyr::to_string(&config).expect("kubeconfig serialises")
}

async fn client_for(kubeconfig: &str) -> Client {
    e2e::bed::client_for(Kubeconfig::from_yaml(kubeconfig).expect("token kubeconfig")).await
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// Both tokens work for what they are for and are refused what the RBAC does not grant:
/// otherwise a clean log would prove nothing.
async fn assert_restricted(bed: &Bed, control: &str, provider: &str) {
    let list = ListParams::default().limit(1);
    let control = client_for(control).await;
    Api::<Machine>::namespaced(control.clone(), &bed.namespace)
        .list(&list)
        .await
        .expect("the chart's ServiceAccount lists Machines in the machine namespace");
    let provider = client_for(provider).await;
    Api::<VirtualMachine>::namespaced(provider.clone(), &bed.namespace)
        .list(&list)
        .await
        .expect("the provider ServiceAccount lists VMs in its namespace");

    let refusals = [
        (
            "chart: list Secrets in kube-system (only get/create/delete of bootstrap tokens)",
            Api::<Secret>::namespaced(control.clone(), "kube-system")
                .list(&list)
                .await
                .map(drop),
        ),
        (
            "chart: list Secrets in default",
            Api::<Secret>::namespaced(control.clone(), "default")
                .list(&list)
                .await
                .map(drop),
        ),
        (
            "chart: delete a Secret in the machine namespace",
            Api::<Secret>::namespaced(control.clone(), &bed.namespace)
                .delete("absent", &DeleteParams::default())
                .await
                .map(drop),
        ),
        (
            "chart: list Namespaces",
            Api::<Namespace>::all(control).list(&list).await.map(drop),
        ),
        (
            "provider: list VMs in default",
            Api::<VirtualMachine>::namespaced(provider.clone(), "default")
                .list(&list)
                .await
                .map(drop),
        ),
        (
            "provider: list Machines in its namespace",
            Api::<Machine>::namespaced(provider, &bed.namespace)
                .list(&list)
                .await
                .map(drop),
        ),
    ];
    for (what, result) in refusals {
        match result {
            Err(error) if is_status(&error, 403) => {}
            other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
        }
    }
}

/// The provider Secret; its userData asks for a bootstrap token, so the kube-system
/// rights of the chart are exercised too.
async fn create_secret(bed: &Bed, name: &str, kubeconfig: &str) {
    let data = BTreeMap::from([
        (
            "kubeconfig".to_owned(),
            ByteString(kubeconfig.as_bytes().to_vec()),
        ),
        (
            "userData".to_owned(),
            ByteString(
                b"#cloud-config\nruncmd: [echo <<MACHINE_NAME>> <<BOOTSTRAP_TOKEN>>]\n".to_vec(),
            ),
        ),
    ]);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    };
    bed.secrets()
        .create(&PostParams::default(), &secret)
        .await
        .expect("provider secret created");
}

/// Names of the bootstrap-token Secrets in kube-system made for `machine` (by their
/// description, so the scenario does not depend on how the token id is derived).
async fn bootstrap_tokens_of(bed: &Bed, machine: &str) -> Vec<String> {
    let tokens = ListParams::default().fields("type=bootstrap.kubernetes.io/token");
    let quoted = format!("{machine:?}");
    Api::<Secret>::namespaced(bed.client.clone(), "kube-system")
        .list(&tokens)
        .await
        .expect("kube-system Secrets listed")
        .items
        .into_iter()
        .filter(|secret| {
            secret
                .data
                .as_ref()
                .and_then(|data| data.get("description"))
                .is_some_and(|d| String::from_utf8_lossy(&d.0).contains(&quoted))
        })
        .map(|secret| secret.name_any())
        .collect()
}

/// A Node `name` (the machine's node name) as a kubelet registers it, Ready, labelled for
/// the bed's teardown.
/// Removes a file holding a token when the scenario ends, however it ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
