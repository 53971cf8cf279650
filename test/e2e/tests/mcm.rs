//! End-to-end: upstream machine-controller-manager (MachineDeployment and MachineSet
//! controllers) and this sidecar (the machine controller) in one namespace, as the Helm
//! chart runs them, with a fake kubelet registering a Ready Node for each Machine.
//!
//! One MachineDeployment goes through scale up, a rolling update to another MachineClass,
//! scale down, the loss of a Node, and scale to zero; after each step the Machines, VMs,
//! userdata Secrets and Nodes in the API server must be exactly what the deployment asks
//! for, and at the end nothing is left behind.
//!
//! Needs `E2E_KUBECONFIG` (see README, End-to-end tests) and then the MCM binary:
//! `E2E_MCM_BINARY`, or `$KUBE_BED_DIR/bin/machine-controller-manager` from
//! `../shared/kube-bed/up.sh`; fails without it. Skipped with a message without a cluster.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use e2e::bed::{Bed, MCM_FINALIZER, SCENARIO_LABEL, Sidecar, eventually, free_port};
use e2e::kubelet::FakeKubelet;
use e2e::scenario::with_bed;
use mcm_provider_kubevirt::kubevirt::ownership::{
    MACHINE_CLASS_LABEL, MACHINE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
};

/// The sidecar's finalizer on Nodes backing Machines.
const NODE_FINALIZER: &str = "node.machine.sapcloud.io/machine-controller";
/// The Node label naming its Machine, which the sidecar sets.
const MACHINE_NAME_LABEL: &str = "node.gardener.cloud/machine-name";
/// A label of the deployment's nodeTemplate, which the sidecar copies to each Node.
const POOL_LABEL: &str = "worker.gardener.cloud/pool";
const DEPLOYMENT: &str = "workers";
/// How long one step may take: a handful of reconciles of each controller.
const STEP: Duration = Duration::from_secs(90);

/// The MCM binary, if there is one to run.
fn mcm_binary() -> Option<PathBuf> {
    let path = std::env::var("E2E_MCM_BINARY")
        .map(PathBuf::from)
        .or_else(|_| {
            std::env::var("KUBE_BED_DIR")
                .map(|dir| PathBuf::from(dir).join("bin/machine-controller-manager"))
        })
        .ok()?;
    path.exists().then_some(path)
}

fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "machine.sapcloud.io",
        "v1alpha1",
        kind,
    ))
}

fn deployments(bed: &Bed) -> Api<DynamicObject> {
    Api::namespaced_with(
        bed.client.clone(),
        &bed.namespace,
        &resource("MachineDeployment"),
    )
}

fn machine_sets(bed: &Bed) -> Api<DynamicObject> {
    Api::namespaced_with(bed.client.clone(), &bed.namespace, &resource("MachineSet"))
}

/// The sample class as `name`, its tag and memory made its own so the two classes differ.
async fn create_class(bed: &Bed, name: &str, memory: &str) {
    let mut class = bed.sample_class(name, "cloud");
    class.provider_spec["tags"]["mcm.gardener.cloud/machineclass"] = json!(name);
    class.provider_spec["resources"]["requests"]["memory"] = json!(memory);
    bed.classes()
        .create(&PostParams::default(), &class)
        .await
        .expect("machine class created");
}

/// The sample MachineDeployment (`kubernetes/machine-deployment.yaml`) in the namespace:
/// `replicas` of `class`, ready at once (minReadySeconds 0), replaced one at a time
/// without ever having fewer than `replicas` available (maxSurge 1, maxUnavailable 0).
fn deployment(bed: &Bed, replicas: i64, class: &str) -> DynamicObject {
    let sample = std::fs::read_to_string(e2e::bed::repo("kubernetes/machine-deployment.yaml"))
        .expect("sample deployment");
    let mut object: Value = serde_saphyr::from_str(&sample).expect("sample deployment parses");
    object["metadata"] = json!({"name": DEPLOYMENT, "namespace": bed.namespace});
    object["spec"]["replicas"] = json!(replicas);
    object["spec"]["minReadySeconds"] = json!(0);
    object["spec"]["strategy"]["rollingUpdate"] = json!({"maxSurge": 1, "maxUnavailable": 0});
    object["spec"]["template"]["spec"]["class"]["name"] = json!(class);
    serde_json::from_value(object).expect("a MachineDeployment")
}

async fn patch_deployment(bed: &Bed, patch: Value) {
    deployments(bed)
        .patch(DEPLOYMENT, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("deployment patched");
}

fn sorted<I: IntoIterator<Item = String>>(names: I) -> BTreeSet<String> {
    names.into_iter().collect()
}

/// Ok with the Machine names once the deployment has exactly `replicas` Machines of
/// `class`, each Running with its finalizer, `node` label and providerID, one VM of that
/// class, one userdata Secret owned by the VM, and one Ready Node with the providerID,
/// the sidecar's finalizer and the template's labels; and nothing else of the kind.
async fn fleet(bed: &Bed, replicas: usize, class: &str) -> Result<BTreeSet<String>, String> {
    let list = ListParams::default();
    let machines = bed
        .machines()
        .list(&list)
        .await
        .map_err(|e| e.to_string())?;
    let names = sorted(machines.items.iter().map(ResourceExt::name_any));
    if names.len() != replicas {
        return Err(format!(
            "{} machines {names:?}, want {replicas}",
            names.len()
        ));
    }
    for machine in &machines.items {
        let name = machine.name_any();
        let status = machine.status.clone().unwrap_or_default();
        let phase = status.current_status.and_then(|c| c.phase);
        let operation = status.last_operation.unwrap_or_default();
        let ready = status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let ok = machine.metadata.deletion_timestamp.is_none()
            && machine.spec.class.name == class
            && machine.finalizers().iter().any(|f| f == MCM_FINALIZER)
            && machine.spec.provider_id.as_deref() == Some(&format!("kubevirt://{name}"))
            && machine.labels().get("node") == Some(&name)
            && phase.as_deref() == Some("Running")
            && operation.state.as_deref() == Some("Successful")
            && ready;
        if !ok {
            return Err(format!(
                "machine {name}: class {:?}, deleting {}, finalizers {:?}, providerID {:?}, node label {:?}, phase {phase:?}, node Ready copied {ready}, lastOperation {:?} {:?}",
                machine.spec.class.name,
                machine.metadata.deletion_timestamp.is_some(),
                machine.finalizers(),
                machine.spec.provider_id,
                machine.labels().get("node"),
                operation.state,
                operation.description,
            ));
        }
    }

    let vms = bed.vms().list(&list).await.map_err(|e| e.to_string())?;
    let vm_names = sorted(vms.items.iter().map(ResourceExt::name_any));
    if vm_names != names {
        return Err(format!("VMs {vm_names:?}, machines {names:?}"));
    }
    for vm in &vms.items {
        let labels = vm.labels();
        if labels.get(MACHINE_CLASS_LABEL).map(String::as_str) != Some(class)
            || labels
                .get("mcm.gardener.cloud/machineclass")
                .map(String::as_str)
                != Some(class)
            || labels.get(MACHINE_LABEL) != Some(&vm.name_any())
            || labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY_VALUE)
        {
            return Err(format!("VM {} labels {labels:?}", vm.name_any()));
        }
    }

    let secrets = bed.secrets().list(&list).await.map_err(|e| e.to_string())?;
    let userdata: Vec<_> = secrets
        .items
        .iter()
        .filter(|s| s.name_any().starts_with("userdata-"))
        .collect();
    let userdata_names = sorted(userdata.iter().map(|s| s.name_any()));
    let wanted = sorted(names.iter().map(|n| format!("userdata-{n}")));
    if userdata_names != wanted {
        return Err(format!(
            "userdata Secrets {userdata_names:?}, want {wanted:?}"
        ));
    }
    for secret in userdata {
        let vm = &secret.name_any()["userdata-".len()..];
        let vm_uid = vms
            .items
            .iter()
            .find(|v| v.name_any() == vm)
            .and_then(|v| v.uid());
        if !secret
            .owner_references()
            .iter()
            .any(|o| o.kind == "VirtualMachine" && Some(&o.uid) == vm_uid.as_ref())
        {
            return Err(format!("{} is not owned by VM {vm}", secret.name_any()));
        }
    }

    let ours = ListParams::default().labels(&format!("{SCENARIO_LABEL}={}", bed.namespace));
    let nodes = bed.nodes().list(&ours).await.map_err(|e| e.to_string())?;
    let node_names = sorted(nodes.items.iter().map(ResourceExt::name_any));
    if node_names != names {
        return Err(format!("Nodes {node_names:?}, machines {names:?}"));
    }
    for node in &nodes.items {
        let name = node.name_any();
        let provider_id = node.spec.as_ref().and_then(|s| s.provider_id.clone());
        let labels = node.labels();
        let ok = node.metadata.deletion_timestamp.is_none()
            && provider_id == Some(format!("kubevirt://{name}"))
            && node.finalizers().iter().any(|f| f == NODE_FINALIZER)
            && labels.get(MACHINE_NAME_LABEL) == Some(&name)
            && labels.get(POOL_LABEL).map(String::as_str) == Some("sample");
        if !ok {
            return Err(format!(
                "node {name}: deleting {}, providerID {provider_id:?}, finalizers {:?}, labels {labels:?}",
                node.metadata.deletion_timestamp.is_some(),
                node.finalizers()
            ));
        }
    }

    // MCM's view agrees: one MachineSet holds the replicas, all updated and available.
    let deployment = deployments(bed)
        .get(DEPLOYMENT)
        .await
        .map_err(|e| e.to_string())?;
    let status = &deployment.data["status"];
    let count = |field: &str| status[field].as_u64().unwrap_or(0) as usize;
    if deployment.metadata.generation.map(|g| g as u64) != status["observedGeneration"].as_u64()
        || count("replicas") != replicas
        || count("updatedReplicas") != replicas
        || count("availableReplicas") != replicas
    {
        return Err(format!("MachineDeployment status {status}"));
    }
    let sets = machine_sets(bed)
        .list(&list)
        .await
        .map_err(|e| e.to_string())?;
    let scaled: Vec<_> = sets
        .items
        .iter()
        .filter(|s| s.data["spec"]["replicas"].as_u64().unwrap_or(0) > 0)
        .collect();
    if replicas > 0
        && (scaled.len() != 1
            || scaled[0].data["spec"]["template"]["spec"]["class"]["name"] != class)
    {
        return Err(format!(
            "MachineSets with replicas: {:?}",
            scaled.iter().map(|s| s.name_any()).collect::<Vec<_>>()
        ));
    }
    Ok(names)
}

/// Waits for [`fleet`] and returns the Machine names.
async fn wait_for_fleet(bed: &Bed, what: &str, replicas: usize, class: &str) -> BTreeSet<String> {
    let names = Mutex::new(BTreeSet::new());
    let took = eventually(what, STEP, || async {
        let found = fleet(bed, replicas, class).await?;
        *names.lock().expect("names") = found;
        Ok(())
    })
    .await;
    let names = names.into_inner().expect("names");
    eprintln!("mcm: {what} in {took:.1?}: {names:?}");
    names
}

/// Ok once exactly the classes in `used` carry MCM's finalizer: a class keeps it while
/// Machines refer to it.
async fn class_finalizers(bed: &Bed, used: &[&str]) -> Result<(), String> {
    let classes = bed
        .classes()
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    let finalized = sorted(
        classes
            .items
            .iter()
            .filter(|c| c.finalizers().iter().any(|f| f == MCM_FINALIZER))
            .map(ResourceExt::name_any),
    );
    let want = sorted(used.iter().map(|c| c.to_string()));
    if finalized == want {
        Ok(())
    } else {
        Err(format!(
            "classes with the finalizer {finalized:?}, want {want:?}"
        ))
    }
}

/// Ok once the Machine `name`, its VM, its userdata Secret and its Node are all gone
/// (a Node stuck Terminating on a finalizer counts as left).
async fn machine_and_node_gone(bed: &Bed, name: &str) -> Result<(), String> {
    bed.machine_gone(name).await?;
    match bed.nodes().get_opt(name).await.map_err(|e| e.to_string())? {
        None => Ok(()),
        Some(node) => Err(format!(
            "Node {name} left (deleting {}, finalizers {:?})",
            node.metadata.deletion_timestamp.is_some(),
            node.finalizers()
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_deployment_lifecycle_with_real_mcm() {
    with_bed("mcm", async |bed| {
        // With a cluster to run on, a missing MCM is a failure, not a skip: CI must run it.
        let mcm_path = mcm_binary().unwrap_or_else(|| {
            panic!(
                "E2E_KUBECONFIG is set but no MCM binary was found: set E2E_MCM_BINARY, or KUBE_BED_DIR as ../shared/kube-bed/up.sh exports it"
            )
        });
        scenario(bed, mcm_path).await;
    })
    .await;
}

async fn scenario(bed: &Bed, mcm_path: PathBuf) {
    let started = Instant::now();
    let kubeconfig = bed.provider_kubeconfig();
    bed.create_provider_secret("cloud", &kubeconfig).await;
    create_class(bed, "class-a", "4096Mi").await;
    create_class(bed, "class-b", "2048Mi").await;

    let _sidecar = bed.sidecar(
        "mcm-sidecar",
        // Orphan collection only at start-up (long before any VM exists): every VM must
        // be removed by the deletion flow, not swept up later.
        &["--machine-safety-orphan-vms-period=30m".to_owned()],
    );
    let kubeconfig_path = bed.kubeconfig_path.display().to_string();
    let mcm_port = free_port();
    let _mcm = Sidecar::start_binary(
        &mcm_path,
        "machine-controller-manager",
        &[
            format!("--control-kubeconfig={kubeconfig_path}"),
            format!("--target-kubeconfig={kubeconfig_path}"),
            format!("--namespace={}", bed.namespace),
            format!("--port={mcm_port}"),
            "--address=127.0.0.1".to_owned(),
            "--leader-elect=false".to_owned(),
            "--v=3".to_owned(),
        ],
        mcm_port,
    );
    let kubelet = FakeKubelet::start(bed.client.clone(), &bed.namespace);

    // Scale up: 2, then 3 Machines of class-a.
    deployments(bed)
        .create(&PostParams::default(), &deployment(bed, 2, "class-a"))
        .await
        .expect("machine deployment created");
    let two = wait_for_fleet(bed, "2 machines of class-a", 2, "class-a").await;
    patch_deployment(bed, json!({"spec": {"replicas": 3}})).await;
    let three = wait_for_fleet(bed, "scale up to 3", 3, "class-a").await;
    class_finalizers(bed, &["class-a"]).await.unwrap();
    assert!(
        two.is_subset(&three),
        "scale up replaced machines: {two:?} -> {three:?}"
    );

    // Rolling update to class-b: every Machine replaced, the old VMs, Secrets and Nodes gone.
    patch_deployment(
        bed,
        json!({"spec": {"template": {"spec": {"class": {"name": "class-b"}}}}}),
    )
    .await;
    let rolled = wait_for_fleet(bed, "rolling update to class-b", 3, "class-b").await;
    assert!(
        rolled.is_disjoint(&three),
        "machines kept across the update: {three:?} -> {rolled:?}"
    );
    for old in &three {
        machine_and_node_gone(bed, old).await.unwrap();
    }
    eventually("class-a released", STEP, || {
        class_finalizers(bed, &["class-b"])
    })
    .await;

    // Scale down: one Machine deleted with its VM, Secret and Node.
    patch_deployment(bed, json!({"spec": {"replicas": 2}})).await;
    let down = wait_for_fleet(bed, "scale down to 2", 2, "class-b").await;
    assert!(
        down.is_subset(&rolled),
        "scale down created machines: {rolled:?} -> {down:?}"
    );

    // A Node is deleted (its VM lost): the sidecar deletes the Machine, whose deletion
    // flow releases the Node's finalizer, and MCM creates a replacement.
    let victim = down.iter().next().cloned().expect("a machine");
    kubelet.forget(&victim);
    bed.nodes()
        .delete(&victim, &DeleteParams::default())
        .await
        .expect("node deleted");
    let took = eventually(&format!("machine {victim} and its node gone"), STEP, || {
        machine_and_node_gone(bed, &victim)
    })
    .await;
    eprintln!("mcm: machine of the deleted node {victim} gone in {took:.1?}");
    let replaced = wait_for_fleet(bed, "replacement of the lost node", 2, "class-b").await;
    assert!(!replaced.contains(&victim));
    assert_eq!(
        replaced.intersection(&down).count(),
        1,
        "{down:?} -> {replaced:?}"
    );

    // Scale to zero: nothing of the deployment's machines is left.
    patch_deployment(bed, json!({"spec": {"replicas": 0}})).await;
    wait_for_fleet(bed, "scale to zero", 0, "class-b").await;
    bed.assert_nothing_left(STEP).await;
    eventually("class-b released", STEP, || class_finalizers(bed, &[])).await;
    // Deleting the deployment: MCM removes it and its MachineSets, finalizers and all.
    deployments(bed)
        .delete(DEPLOYMENT, &DeleteParams::default())
        .await
        .expect("deployment deleted");
    eventually("deployment and machine sets gone", STEP, || async {
        let left = deployments(bed)
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .len()
            + machine_sets(bed)
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .len();
        if left == 0 {
            Ok(())
        } else {
            Err(format!("{left} MachineDeployment/MachineSets left"))
        }
    })
    .await;

    eprintln!("mcm: scenario done in {:.1?}", started.elapsed());
}
