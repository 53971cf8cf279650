//! Benchmark harness (not a test): N Machines through creation and deletion by the
//! `machine-controller` sidecar against the real API server `E2E_KUBECONFIG` names.
//!
//! Prints the wall time of each phase, the control-plane requests per Machine by verb and
//! resource (from the API server's `apiserver_request_total`, less the harness's own
//! requests and the cluster's idle background), and the sidecar's RSS and CPU seconds.
//!
//! ```sh
//! cargo build -p machine-controller
//! E2E_KUBECONFIG=$KUBECONFIG cargo run --release -p e2e --bin bench -- --machines 200
//! E2E_KUBECONFIG=$KUBECONFIG cargo run --release -p e2e --bin bench -- --release -- --kube-api-qps=1000 --kube-api-burst=2000
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Node, Secret};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use kubevirt_api::kubevirt::v1::virtualmachines::VirtualMachine;

use e2e::bed::{Bed, MCM_FINALIZER, Sidecar, free_port, repo};
use mcm_provider_kubevirt::kubevirt::ownership::{
    CLUSTER_LABEL, MACHINE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
};
use mcm_provider_kubevirt::mcm::Machine;

/// How `apiserver_request_total` names the resources the harness itself touches.
const MACHINES: &str = "machines.machine.sapcloud.io";
const VMS: &str = "virtualmachines.kubevirt.io";
const SECRETS: &str = "secrets";
const METRICS: &str = "/metrics";
const CLASS: &str = "bench";
const SECRET: &str = "bench-provider";
/// The harness's Nodes (`--nodes`): named with this prefix and labelled with this label.
const BENCH_NODE_PREFIX: &str = "bench-node-";
const BENCH_NODE_LABEL: &str = "bench.mcm.gardener.cloud/node";

#[derive(Debug, Parser)]
#[command(
    about = "Drives N Machines through creation and deletion by the sidecar on the cluster E2E_KUBECONFIG names and prints wall time, API requests per Machine, peak RSS and CPU seconds",
    after_help = "Flags after `--` go to the sidecar as they are, e.g. `-- --kube-api-qps=1000 --kube-api-burst=2000`."
)]
struct Args {
    /// How many Machines
    #[arg(long, default_value_t = 200)]
    machines: usize,
    /// Whether the Machines exist before the sidecar starts (a backlog, as when the sidecar
    /// is restarted or rolled out) or are created while it runs
    #[arg(long, value_enum, default_value_t = Order::Before)]
    create: Order,
    /// The sidecar binary [default: target/debug/machine-controller, or target/release
    /// with --release]
    #[arg(long, env = "E2E_BINARY")]
    binary: Option<PathBuf>,
    /// Use target/release/machine-controller (`cargo build --release -p machine-controller`)
    #[arg(long, conflicts_with = "binary")]
    release: bool,
    /// The sidecar's --concurrent-syncs
    #[arg(long, default_value_t = 10)]
    concurrent_syncs: u32,
    /// The sidecar's --v (Gardener passes 3; 4 and up log every reconcile)
    #[arg(long, default_value_t = 3)]
    v: u8,
    /// Seconds of idle cluster measured first, to subtract the control plane's own requests
    /// (kube-controller-manager, lease renewals) from each phase
    #[arg(long, default_value_t = 20)]
    baseline: u64,
    /// Seconds to keep the N created Machines before deleting them, measured as a phase of
    /// its own (the sidecar's steady-state requests); 0 skips it
    #[arg(long, default_value_t = 0)]
    hold: u64,
    /// Milliseconds between the harness's checks (one LIST each)
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
    /// Seconds a phase may take before the run is given up
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Concurrent requests the harness uses to create and delete the Machines
    #[arg(long, default_value_t = 16)]
    client_concurrency: usize,
    /// Where the VMs and userdata Secrets go: a namespace of their own, as on a provider
    /// cluster apart from the control cluster, or the Machines' namespace, where the
    /// sidecar's Secret controller also sees (and reconciles) every userdata Secret
    #[arg(long, value_enum, default_value_t = VmNamespace::Separate)]
    vms_in: VmNamespace,
    /// Node objects created in the target cluster before the sidecar starts (and removed at
    /// the end): the sidecar's Node cache holds them, as it would a shoot's Nodes
    #[arg(long, default_value_t = 0)]
    nodes: usize,
    /// Copy the sidecar's log here at the end (it is removed otherwise)
    #[arg(long)]
    keep_log: Option<PathBuf>,
    /// Extra sidecar flags (after `--`)
    #[arg(last = true)]
    sidecar_flags: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum VmNamespace {
    Separate,
    Same,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Order {
    Before,
    After,
}

/// Request counts by (verb, resource, HTTP code), the labels of `apiserver_request_total`
/// that matter here; resource is `resource[.group][/subresource]`, or the path of a
/// non-resource request.
type Key = (String, String, u16);

#[derive(Debug, Default, Clone)]
struct Tally(BTreeMap<Key, f64>);

impl Tally {
    fn add(&mut self, key: Key, n: f64) {
        *self.0.entry(key).or_default() += n;
    }

    fn minus(&self, other: &Tally) -> Tally {
        let mut out = self.clone();
        for (key, n) in &other.0 {
            out.add(key.clone(), -n);
        }
        out
    }

    fn scaled(&self, factor: f64) -> Tally {
        Tally(
            self.0
                .iter()
                .map(|(k, n)| (k.clone(), n * factor))
                .collect(),
        )
    }

    /// By (verb, resource), codes summed.
    fn by_request(&self) -> BTreeMap<(String, String), f64> {
        let mut out = BTreeMap::new();
        for ((verb, resource, _), n) in &self.0 {
            *out.entry((verb.clone(), resource.clone())).or_default() += n;
        }
        out
    }

    fn by_code(&self, watches: bool) -> BTreeMap<u16, f64> {
        let mut out = BTreeMap::new();
        for ((verb, _, code), n) in &self.0 {
            if (verb == "WATCH") == watches {
                *out.entry(*code).or_default() += n;
            }
        }
        out
    }
}

/// The harness's own requests, counted as it makes them: `apiserver_request_total` has no
/// user-agent label, so they cannot be told apart on the server.
#[derive(Default)]
struct Own(Mutex<Tally>);

impl Own {
    fn note<T>(&self, verb: &str, resource: &str, result: &Result<T, kube::Error>, ok: u16) {
        let code = match result {
            Ok(_) => ok,
            Err(kube::Error::Api(status)) => status.code,
            // Never reached the server (or no answer): the server may or may not count it.
            Err(_) => return,
        };
        if let Ok(mut tally) = self.0.lock() {
            tally.add((verb.into(), resource.into(), code), 1.0);
        }
    }

    fn snapshot(&self) -> Tally {
        self.0.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

/// `apiserver_request_total` from the API server's /metrics, with the harness's own
/// requests and the sidecar's CPU time at the same moment.
struct Snapshot {
    at: Instant,
    server: Tally,
    own: Tally,
    cpu: Option<f64>,
    counted: Counted,
}

/// The sidecar's own count of its requests (its /metrics, counted client-side), by
/// (cluster, verb, resource): `control` and `target` from
/// `mcm_machine_controller_api_requests_total`, `provider` from `mcm_cloud_api_requests_total`
/// (by resource only, the verb `*`). The API server cannot tell these apart when the
/// clusters are one, as here.
#[derive(Debug, Default, Clone)]
struct Counted(BTreeMap<(String, String, String), f64>);

impl Counted {
    fn parse(text: &str) -> Counted {
        let mut out = Counted::default();
        for line in text.lines() {
            let (cluster_of, rest) = if let Some(rest) =
                line.strip_prefix("mcm_machine_controller_api_requests_total{")
            {
                (None, rest)
            } else if let Some(rest) = line.strip_prefix("mcm_cloud_api_requests_total{") {
                (Some("provider"), rest)
            } else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let labels = parse_labels(labels);
            let key = match cluster_of {
                Some(cluster) => (
                    cluster.to_owned(),
                    "*".to_owned(),
                    labels.get("service").cloned().unwrap_or_default(),
                ),
                None => (
                    labels.get("cluster").cloned().unwrap_or_default(),
                    labels.get("verb").cloned().unwrap_or_default(),
                    labels.get("resource").cloned().unwrap_or_default(),
                ),
            };
            *out.0.entry(key).or_default() += value;
        }
        out
    }

    fn minus(&self, other: &Counted) -> Counted {
        let mut out = self.clone();
        for (key, n) in &other.0 {
            *out.0.entry(key.clone()).or_default() -= n;
        }
        out
    }

    fn of_cluster(&self, cluster: &str) -> f64 {
        self.0
            .iter()
            .filter(|((c, verb, _), _)| c == cluster && verb != "watch")
            .map(|(_, n)| n)
            .sum()
    }
}

struct Harness {
    /// The Machines' namespace (the control cluster's).
    bed: Bed,
    /// The VMs' namespace (the provider cluster's), when apart from `bed`.
    vm_bed: Option<Bed>,
    own: Own,
    args: Args,
    names: Vec<String>,
    clock_ticks: f64,
    /// Requests per second of the idle cluster, by key.
    background: Tally,
}

/// What a phase measured.
struct Phase {
    title: String,
    wall: Duration,
    window: Duration,
    sidecar: Tally,
    own: Tally,
    background: Tally,
    cpu: Option<f64>,
    counted: Counted,
    outcome: Result<(), String>,
}

impl Harness {
    async fn scrape(&self, sidecar: Option<&Sidecar>) -> Result<Snapshot, String> {
        let request = http::Request::get(METRICS)
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        // Not noted as the harness's own: the API server does not count /metrics in
        // apiserver_request_total (and the sidecar never calls it).
        let result = self.bed.client.request_text(request).await;
        let text = result.map_err(|e| format!("GET /metrics: {e}"))?;
        let counted = match sidecar {
            Some(sidecar) => Counted::parse(&sidecar.http_get("/metrics").await?),
            None => Counted::default(),
        };
        Ok(Snapshot {
            at: Instant::now(),
            server: parse_request_total(&text),
            own: self.own.snapshot(),
            cpu: sidecar.and_then(|s| cpu_seconds(s.pid(), self.clock_ticks)),
            counted,
        })
    }

    fn phase(
        &self,
        title: String,
        wall: Duration,
        from: &Snapshot,
        to: &Snapshot,
        outcome: Result<(), String>,
    ) -> Phase {
        let window = to.at - from.at;
        let own = to.own.minus(&from.own);
        let background = self.background.scaled(window.as_secs_f64());
        let sidecar = to.server.minus(&from.server).minus(&own).minus(&background);
        let cpu = match (from.cpu, to.cpu) {
            (Some(a), Some(b)) => Some(b - a),
            (None, Some(b)) => Some(b),
            _ => None,
        };
        Phase {
            title,
            wall,
            window,
            sidecar,
            own,
            background,
            cpu,
            counted: to.counted.minus(&from.counted),
            outcome,
        }
    }

    /// Measures the idle cluster for `--baseline` seconds, so each phase can subtract what
    /// the control plane does on its own in the same time.
    async fn measure_background(&mut self) -> Result<(), String> {
        if self.args.baseline == 0 {
            return Ok(());
        }
        self.wait_for_no_terminating_namespace().await;
        eprintln!("measuring the idle cluster for {}s ...", self.args.baseline);
        let from = self.scrape(None).await?;
        tokio::time::sleep(Duration::from_secs(self.args.baseline)).await;
        let to = self.scrape(None).await?;
        let own = to.own.minus(&from.own);
        let seconds = (to.at - from.at).as_secs_f64();
        self.background = to
            .server
            .minus(&from.server)
            .minus(&own)
            .scaled(1.0 / seconds);
        Ok(())
    }

    /// The namespace controller's clean-up of a namespace (an earlier run's) is a burst of
    /// requests that would be taken for the idle rate; waits for it to end, up to a minute.
    async fn wait_for_no_terminating_namespace(&self) {
        let namespaces = Api::<Namespace>::all(self.bed.client.clone());
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            let terminating = match namespaces.list(&ListParams::default()).await {
                Ok(list) => list
                    .items
                    .iter()
                    .filter(|ns| ns.metadata.deletion_timestamp.is_some())
                    .map(ResourceExt::name_any)
                    .collect::<Vec<_>>(),
                Err(_) => return,
            };
            if terminating.is_empty() {
                return;
            }
            eprintln!(
                "waiting for namespaces being deleted: {}",
                terminating.join(", ")
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    fn vm_bed(&self) -> &Bed {
        self.vm_bed.as_ref().unwrap_or(&self.bed)
    }

    fn sidecar_args(&self, port: u16) -> Vec<String> {
        let kubeconfig = self.bed.kubeconfig_path.display().to_string();
        let mut args = vec![
            format!("--control-kubeconfig={kubeconfig}"),
            format!("--target-kubeconfig={kubeconfig}"),
            format!("--namespace={}", self.bed.namespace),
            format!("--port={port}"),
            "--address=127.0.0.1".to_owned(),
            "--leader-elect=false".to_owned(),
            format!("--v={}", self.args.v),
            format!("--concurrent-syncs={}", self.args.concurrent_syncs),
        ];
        args.extend(self.args.sidecar_flags.iter().cloned());
        args
    }

    fn binary(&self) -> PathBuf {
        match (&self.args.binary, self.args.release) {
            (Some(path), _) => path.clone(),
            (None, true) => repo("target/release/machine-controller"),
            (None, false) => repo("target/debug/machine-controller"),
        }
    }

    async fn create_machines(&self) -> Result<(), String> {
        let results: Vec<Result<(), String>> = stream::iter(&self.names)
            .map(|name| async move {
                let mut machine = Machine::new(name, Default::default());
                machine.spec.class.kind = Some("MachineClass".into());
                machine.spec.class.name = CLASS.into();
                let result = self
                    .bed
                    .machines()
                    .create(&PostParams::default(), &machine)
                    .await;
                self.own.note("POST", MACHINES, &result, 201);
                result.map(drop).map_err(|e| format!("create {name}: {e}"))
            })
            .buffer_unordered(self.args.client_concurrency.max(1))
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// `--nodes` Node objects, labelled as the harness's, with what a kubelet reports
    /// beyond the image list (which the sidecar does not keep).
    async fn create_nodes(&self) -> Result<(), String> {
        let nodes = self.bed.nodes();
        let results: Vec<Result<(), String>> = stream::iter(0..self.args.nodes)
            .map(|i| {
                let nodes = nodes.clone();
                async move {
                    let node: Node = serde_json::from_value(serde_json::json!({
                        "metadata": {
                            "name": format!("{BENCH_NODE_PREFIX}{i:05}"),
                            "labels": {
                                BENCH_NODE_LABEL: "true",
                                "kubernetes.io/hostname": format!("{BENCH_NODE_PREFIX}{i:05}"),
                                "kubernetes.io/os": "linux",
                                "kubernetes.io/arch": "amd64",
                                "node.kubernetes.io/instance-type": "bench",
                                "topology.kubernetes.io/zone": "zone-a",
                            },
                        },
                        "spec": {"providerID": format!("kubevirt://{BENCH_NODE_PREFIX}{i:05}")},
                    }))
                    .map_err(|e| e.to_string())?;
                    let result = nodes.create(&PostParams::default(), &node).await;
                    self.own.note("POST", "nodes", &result, 201);
                    result
                        .map(drop)
                        .map_err(|e| format!("create node {i}: {e}"))
                }
            })
            .buffer_unordered(self.args.client_concurrency.max(1))
            .collect()
            .await;
        results.into_iter().collect()
    }

    async fn delete_nodes(&self) {
        if self.args.nodes == 0 {
            return;
        }
        let params = ListParams::default().labels(&format!("{BENCH_NODE_LABEL}=true"));
        if let Err(e) = self
            .bed
            .nodes()
            .delete_collection(&DeleteParams::default(), &params)
            .await
        {
            eprintln!("removing the harness's Nodes failed: {e}");
        }
    }

    async fn delete_machines(&self) -> Result<(), String> {
        let results: Vec<Result<(), String>> = stream::iter(&self.names)
            .map(|name| async move {
                let result = self
                    .bed
                    .machines()
                    .delete(name, &DeleteParams::default())
                    .await;
                self.own.note("DELETE", MACHINES, &result, 200);
                result.map(drop).map_err(|e| format!("delete {name}: {e}"))
            })
            .buffer_unordered(self.args.client_concurrency.max(1))
            .collect()
            .await;
        results.into_iter().collect()
    }

    async fn list_machines(&self) -> Result<Vec<Machine>, String> {
        let result = self.bed.machines().list(&ListParams::default()).await;
        self.own.note("LIST", MACHINES, &result, 200);
        result.map(|l| l.items).map_err(|e| e.to_string())
    }

    async fn list_vms(&self) -> Result<Vec<VirtualMachine>, String> {
        let result = self.vm_bed().vms().list(&ListParams::default()).await;
        self.own.note("LIST", VMS, &result, 200);
        result.map(|l| l.items).map_err(|e| e.to_string())
    }

    async fn list_userdata(&self) -> Result<Vec<Secret>, String> {
        let result = self.vm_bed().secrets().list(&ListParams::default()).await;
        self.own.note("LIST", SECRETS, &result, 200);
        result
            .map(|l| {
                l.items
                    .into_iter()
                    .filter(|s| s.name_any().starts_with("userdata-"))
                    .collect()
            })
            .map_err(|e| e.to_string())
    }

    /// How many Machines are created as [`Bed::machine_created`] defines it, from one LIST
    /// of Machines (and, once all look done, one LIST of VMs and one of Secrets), with the
    /// first reason one is not.
    async fn created(&self) -> Result<(usize, Option<String>), String> {
        let machines = self.list_machines().await?;
        let mut done = BTreeSet::new();
        let mut why = None;
        for machine in &machines {
            let name = machine.name_any();
            let status = machine.status.clone().unwrap_or_default();
            let phase = status.current_status.and_then(|c| c.phase);
            let ok = machine.spec.provider_id.as_deref() == Some(&format!("kubevirt://{name}"))
                && machine.labels().get("node") == Some(&name)
                && machine.finalizers().iter().any(|f| f == MCM_FINALIZER)
                && matches!(phase.as_deref(), Some("Pending" | "Running"));
            if ok {
                done.insert(name);
            } else if why.is_none() {
                let last = status.last_operation.unwrap_or_default();
                why = Some(format!(
                    "{name}: phase {phase:?}, lastOperation {:?} {:?}",
                    last.state, last.description
                ));
            }
        }
        if done.len() < self.names.len() {
            return Ok((done.len(), why));
        }
        // Every Machine looks done: check what the provider wrote for each.
        let vms = self.list_vms().await?;
        let userdata = self.list_userdata().await?;
        let mut vm_uids = BTreeMap::new();
        for vm in &vms {
            let labels = vm.labels();
            if labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE)
                && labels.get(MACHINE_LABEL) == Some(&vm.name_any())
                && labels.get(CLUSTER_LABEL) == Some(&self.bed.namespace)
            {
                vm_uids.insert(vm.name_any(), vm.uid().unwrap_or_default());
            }
        }
        let owned: BTreeSet<String> = userdata
            .iter()
            .filter_map(|secret| {
                let machine = secret.name_any().strip_prefix("userdata-")?.to_owned();
                let uid = vm_uids.get(&machine)?;
                secret
                    .owner_references()
                    .iter()
                    .any(|o| o.kind == "VirtualMachine" && &o.uid == uid)
                    .then_some(machine)
            })
            .collect();
        let complete = self
            .names
            .iter()
            .filter(|n| vm_uids.contains_key(*n) && owned.contains(*n))
            .count();
        let why = self
            .names
            .iter()
            .find(|n| !vm_uids.contains_key(*n) || !owned.contains(*n))
            .map(|n| {
                format!(
                    "{n}: VM labelled {}, userdata owned by it {}",
                    vm_uids.contains_key(n),
                    owned.contains(n)
                )
            });
        Ok((complete, why))
    }

    /// How many Machines, VMs and userdata Secrets are left.
    async fn left(&self) -> Result<(usize, Option<String>), String> {
        let machines = self.list_machines().await?;
        if let Some(machine) = machines.first() {
            let last = machine
                .status
                .clone()
                .unwrap_or_default()
                .last_operation
                .unwrap_or_default();
            let why = format!(
                "{} machines left, e.g. {}: lastOperation {:?} {:?}",
                machines.len(),
                machine.name_any(),
                last.state,
                last.description
            );
            return Ok((machines.len(), Some(why)));
        }
        let vms = self.list_vms().await?.len();
        let secrets = self.list_userdata().await?.len();
        let why =
            (vms + secrets > 0).then(|| format!("{vms} VMs and {secrets} userdata Secrets left"));
        Ok((vms + secrets, why))
    }

    /// Polls `progress` (done so far, why not all) until it reports `target`, the sidecar
    /// ends, or `--timeout` passes; prints progress every few seconds.
    async fn wait_for<F, Fut>(
        &self,
        what: &str,
        started: Instant,
        sidecar: &mut Sidecar,
        target: usize,
        mut progress: F,
    ) -> Result<(), String>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(usize, Option<String>), String>>,
    {
        let timeout = Duration::from_secs(self.args.timeout);
        let mut last_print = Instant::now();
        loop {
            let (done, why) = progress().await?;
            if done == target && why.is_none() {
                return Ok(());
            }
            if let Some(code) = sidecar.exited() {
                return Err(format!("the sidecar exited ({code:?}) while {what}"));
            }
            let why = why.unwrap_or_default();
            if started.elapsed() > timeout {
                return Err(format!(
                    "timed out after {timeout:?} {what}: {done}/{target}; {why}"
                ));
            }
            if last_print.elapsed() >= Duration::from_secs(5) {
                let elapsed = started.elapsed().as_secs_f64();
                if target > 0 {
                    eprintln!("  {elapsed:6.1} s  {what}: {done}/{target}  ({why})");
                } else {
                    eprintln!("  {elapsed:6.1} s  {what}: {why}");
                }
                last_print = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(self.args.poll_ms)).await;
        }
    }

    async fn wait_healthy(&self, sidecar: &mut Sidecar) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if let Ok(response) = sidecar.http_get("/healthz").await
                && response.split_whitespace().nth(1) == Some("200")
            {
                return Ok(());
            }
            if let Some(code) = sidecar.exited() {
                return Err(format!(
                    "the sidecar exited ({code:?}) at start-up:\n{}",
                    tail(&sidecar.log(), 30)
                ));
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "the sidecar's /healthz did not answer 200 within 60s:\n{}",
                    tail(&sidecar.log(), 30)
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The whole run; the phases measured so far are in `report` even when it fails.
    async fn run(&mut self, report: &mut Report) -> Result<(), String> {
        let n = self.names.len();
        self.measure_background().await?;

        let binary = self.binary();
        if !binary.exists() {
            return Err(format!(
                "{} is missing: build it (`cargo build [--release] -p machine-controller`) or pass --binary",
                binary.display()
            ));
        }
        let port = free_port();
        let sidecar_args = self.sidecar_args(port);
        report.config = format!(
            "{n} Machines created {} the sidecar starts, VMs {}; sidecar {} {}",
            match self.args.create {
                Order::Before => "before",
                Order::After => "after",
            },
            match &self.vm_bed {
                Some(vm_bed) => format!("in namespace {}", vm_bed.namespace),
                None => "in the Machines' namespace".to_owned(),
            },
            binary.display(),
            sidecar_args[4..].join(" ")
        );

        if self.args.nodes > 0 {
            eprintln!("creating {} Nodes ...", self.args.nodes);
            self.create_nodes().await?;
        }

        // Creation.
        let before_create = self.scrape(None).await?;
        let mut sidecar;
        let started;
        if self.args.create == Order::Before {
            eprintln!("creating {n} Machines, then starting the sidecar ...");
            self.create_machines().await?;
            started = Instant::now();
            sidecar = Sidecar::start_binary(&binary, "bench", &sidecar_args, port);
            self.wait_healthy(&mut sidecar).await?;
            report.rss_ready = proc_status(sidecar.pid()).map(|(_, rss)| rss);
            report.rss_ready_label = "RSS when /healthz first answered";
        } else {
            sidecar = Sidecar::start_binary(&binary, "bench", &sidecar_args, port);
            self.wait_healthy(&mut sidecar).await?;
            // Let the informers list what there is and settle before measuring idle RSS.
            tokio::time::sleep(Duration::from_secs(3)).await;
            report.rss_ready = proc_status(sidecar.pid()).map(|(_, rss)| rss);
            report.rss_ready_label = "RSS idle, before the Machines are created";
            eprintln!("creating {n} Machines with the sidecar running ...");
            started = Instant::now();
            self.create_machines().await?;
        }
        report.pid = sidecar.pid();
        let outcome = self
            .wait_for("created", started, &mut sidecar, n, || self.created())
            .await;
        let wall = started.elapsed();
        let after_create = self.scrape(Some(&sidecar)).await?;
        report.rss_after_create = proc_status(sidecar.pid());
        let failed = outcome.is_err();
        report.phases.push(self.phase(
            format!(
                "creation: {} to all {n} Machines Pending with VM and userdata Secret",
                match self.args.create {
                    Order::Before => "sidecar start",
                    Order::After => "first Machine created",
                },
            ),
            wall,
            &before_create,
            &after_create,
            outcome,
        ));
        if failed {
            return self.finish(report, sidecar);
        }

        // Steady state.
        let mut before_delete = after_create;
        if self.args.hold > 0 {
            eprintln!("holding {n} Machines for {}s ...", self.args.hold);
            let started = Instant::now();
            tokio::time::sleep(Duration::from_secs(self.args.hold)).await;
            let after_hold = self.scrape(Some(&sidecar)).await?;
            report.phases.push(self.phase(
                format!("steady state: {n} Machines Pending"),
                started.elapsed(),
                &before_delete,
                &after_hold,
                Ok(()),
            ));
            before_delete = after_hold;
        }

        // Deletion.
        eprintln!("deleting {n} Machines ...");
        let started = Instant::now();
        self.delete_machines().await?;
        let outcome = self
            .wait_for("deleting", started, &mut sidecar, 0, || self.left())
            .await;
        let wall = started.elapsed();
        let after_delete = self.scrape(Some(&sidecar)).await?;
        report.phases.push(self.phase(
            format!("deletion: first DELETE to no Machine, VM or userdata Secret left of {n}"),
            wall,
            &before_delete,
            &after_delete,
            outcome,
        ));
        self.finish(report, sidecar)
    }

    fn finish(&self, report: &mut Report, mut sidecar: Sidecar) -> Result<(), String> {
        report.final_status = proc_status(sidecar.pid());
        report.cpu_total = cpu_seconds(sidecar.pid(), self.clock_ticks);
        let log = sidecar.log();
        report.log_summary = summarize_log(&log);
        if let Some(path) = &self.args.keep_log {
            match std::fs::write(path, &log) {
                Ok(()) => report.log_summary += &format!(", kept in {}", path.display()),
                Err(e) => report.log_summary += &format!(", not kept: {e}"),
            }
        }
        if report.phases.iter().any(|p| p.outcome.is_err()) {
            report.log_tail = tail(&log, 40);
        }
        sidecar.kill();
        Ok(())
    }
}

#[derive(Default)]
struct Report {
    config: String,
    machines: usize,
    pid: u32,
    rss_ready: Option<u64>,
    rss_ready_label: &'static str,
    rss_after_create: Option<(u64, u64)>,
    final_status: Option<(u64, u64)>,
    cpu_total: Option<f64>,
    phases: Vec<Phase>,
    log_summary: String,
    log_tail: String,
}

impl Report {
    fn print(&self) -> String {
        let n = self.machines.max(1) as f64;
        let mut out = String::new();
        let _ = writeln!(out, "\n{}", self.config);
        for phase in &self.phases {
            let status = match &phase.outcome {
                Ok(()) => String::new(),
                Err(why) => format!("  FAILED: {why}"),
            };
            let cpu = phase
                .cpu
                .map(|c| format!(", sidecar CPU {c:.2} s"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "\n{}\n  wall {:.1} s{cpu} (window {:.1} s){status}",
                phase.title,
                phase.wall.as_secs_f64(),
                phase.window.as_secs_f64()
            );
            let _ = writeln!(
                out,
                "  {:<8} {:<44} {:>8} {:>9} {:>8} {:>10}",
                "verb", "resource", "sidecar", "/Machine", "harness", "background"
            );
            let sidecar = phase.sidecar.by_request();
            let own = phase.own.by_request();
            let background = phase.background.by_request();
            let keys: BTreeSet<&(String, String)> = sidecar
                .keys()
                .chain(own.keys())
                .chain(background.keys())
                .collect();
            let (mut total, mut total_own, mut total_bg) = (0.0, 0.0, 0.0);
            let mut watches = 0.0;
            for key in keys {
                let s = sidecar.get(key).copied().unwrap_or(0.0);
                let o = own.get(key).copied().unwrap_or(0.0);
                let b = background.get(key).copied().unwrap_or(0.0);
                let (verb, resource) = key;
                if verb == "WATCH" {
                    watches += s + o + b;
                    continue;
                }
                // What is left of the control plane's own periodic requests after
                // subtracting their average rate is noise, of either sign.
                if s < 0.5 && o == 0.0 {
                    total_bg += b;
                    continue;
                }
                let s = s.max(0.0);
                total += s;
                total_own += o;
                total_bg += b;
                let _ = writeln!(
                    out,
                    "  {verb:<8} {resource:<44} {s:>8.0} {:>9.2} {o:>8.0} {b:>10.1}",
                    s / n
                );
            }
            let _ = writeln!(
                out,
                "  {:<8} {:<44} {total:>8.0} {:>9.2} {total_own:>8.0} {total_bg:>10.1}",
                "total",
                "(excluding WATCH)",
                total / n
            );
            let codes: Vec<String> = phase
                .sidecar
                .by_code(false)
                .into_iter()
                .filter(|(_, c)| *c >= 0.5)
                .map(|(code, c)| format!("{code} {c:.0}"))
                .collect();
            let _ = writeln!(out, "  sidecar by code: {}", codes.join(", "));
            let counted = &phase.counted;
            let _ = writeln!(
                out,
                "  the sidecar's own count, excluding watches: control {:.0} ({:.2}/Machine), target {:.0} ({:.2}/Machine), provider {:.0} ({:.2}/Machine)",
                counted.of_cluster("control"),
                counted.of_cluster("control") / n,
                counted.of_cluster("target"),
                counted.of_cluster("target") / n,
                counted.of_cluster("provider"),
                counted.of_cluster("provider") / n,
            );
            for ((cluster, verb, resource), count) in &counted.0 {
                if cluster != "provider" && *count >= 0.5 {
                    let _ = writeln!(
                        out,
                        "    {cluster:<8} {verb:<8} {resource:<28} {count:>8.0} {:>9.2}",
                        count / n
                    );
                }
            }
            // A WATCH is counted when it ends, mostly when kube-controller-manager's watches
            // time out and are renewed, so it says little about the sidecar.
            let _ = writeln!(
                out,
                "  WATCH requests that ended in the window, anyone's (not in the total): {watches:.0}"
            );
        }
        let mib = |kib: u64| kib as f64 / 1024.0;
        let _ = writeln!(out, "\nsidecar (pid {}):", self.pid);
        if let Some(rss) = self.rss_ready {
            let _ = writeln!(out, "  {}: {:.1} MiB", self.rss_ready_label, mib(rss));
        }
        if let Some((hwm, rss)) = self.rss_after_create {
            let _ = writeln!(
                out,
                "  after creation: RSS {:7.1} MiB, peak RSS (VmHWM) {:7.1} MiB",
                mib(rss),
                mib(hwm)
            );
        }
        if let Some((hwm, rss)) = self.final_status {
            let _ = writeln!(
                out,
                "  at the end:     RSS {:7.1} MiB, peak RSS (VmHWM) {:7.1} MiB",
                mib(rss),
                mib(hwm)
            );
        }
        if let Some(cpu) = self.cpu_total {
            let _ = writeln!(
                out,
                "  CPU (utime+stime) {cpu:.2} s in all, {:.1} ms per Machine",
                cpu * 1000.0 / n
            );
        }
        let _ = writeln!(out, "  log: {}", self.log_summary);
        if !self.log_tail.is_empty() {
            let _ = writeln!(
                out,
                "--- last lines of the sidecar log ---\n{}",
                self.log_tail
            );
        }
        let _ = writeln!(
            out,
            "\nsidecar = apiserver_request_total delta - the harness's own requests - background (idle-cluster rate x window); \
             it includes what kube-controller-manager does in answer to the objects (garbage collection, namespace controller)."
        );
        out
    }
}

/// `apiserver_request_total` samples by (verb, resource, code).
fn parse_request_total(text: &str) -> Tally {
    let mut tally = Tally::default();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let labels = parse_labels(labels);
        let get = |name: &str| labels.get(name).map(String::as_str).unwrap_or_default();
        let (group, resource, subresource) = (get("group"), get("resource"), get("subresource"));
        let name = if resource.is_empty() {
            // Non-resource requests (/healthz, /version, /metrics) carry the path here.
            subresource.to_owned()
        } else {
            let mut name = resource.to_owned();
            if !group.is_empty() {
                name = format!("{name}.{group}");
            }
            if !subresource.is_empty() {
                name = format!("{name}/{subresource}");
            }
            name
        };
        if name == METRICS {
            // Only the harness reads it; some API server versions may count it.
            continue;
        }
        let code = get("code").parse().unwrap_or(0);
        tally.add((get("verb").to_owned(), name, code), value);
    }
    tally
}

/// `a="x",b="y\"z"` as a map; Prometheus escapes `\`, `"` and newlines in label values.
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        let name: String = chars
            .by_ref()
            .skip_while(|c| *c == ',' || c.is_whitespace())
            .take_while(|c| *c != '=')
            .collect();
        if name.is_empty() || chars.next() != Some('"') {
            break;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                other => value.push(other),
            }
        }
        labels.insert(name, value);
    }
    labels
}

/// (VmHWM, VmRSS) in KiB.
fn proc_status(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// utime + stime of `pid` in seconds.
fn cpu_seconds(pid: u32, clock_ticks: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(cpu_ticks(&stat)? / clock_ticks)
}

/// utime + stime in clock ticks from a `/proc/<pid>/stat` line.
fn cpu_ticks(stat: &str) -> Option<f64> {
    // The command name may hold spaces and parentheses; the fields follow the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of proc(5); the state (field 3) is fields[0].
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Names as a MachineSet's Machines have them: a prefix and five characters of the API
/// server's generateName alphabet. MCM derives a Machine's bootstrap token ID from the
/// first three of those five, so they count up (unique up to 27^3 Machines) rather than
/// repeat, and the last two are random.
fn machine_names(n: usize) -> Vec<String> {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let base = ALPHABET.len();
    let char_at = |i: usize| char::from(ALPHABET[i % base]);
    (0..n)
        .map(|i| {
            let counted: String = [i / (base * base), i / base, i]
                .into_iter()
                .map(char_at)
                .collect();
            let random: String = (0..2)
                .map(|_| char_at(rand::random::<u32>() as usize))
                .collect();
            format!("bench-{counted}{random}")
        })
        .collect()
}

fn summarize_log(log: &str) -> String {
    // Text format: `<timestamp> <LEVEL> <target>: ...`.
    let count = |level: &str| {
        log.lines()
            .filter(|l| strip_colour(l).split_whitespace().nth(1) == Some(level))
            .count()
    };
    format!(
        "{} lines, {} WARN, {} ERROR",
        log.lines().count(),
        count("WARN"),
        count("ERROR")
    )
}

/// The line without ANSI colour sequences (`ESC [ ... m`), which the text format writes
/// even into a file.
fn strip_colour(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_escape = false;
    for c in line.chars() {
        match (in_escape, c) {
            (false, '\u{1b}') => in_escape = true,
            (false, c) => out.push(c),
            (true, 'm') => in_escape = false,
            (true, _) => {}
        }
    }
    out
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let Some(bed) = Bed::new("bench").await else {
        return ExitCode::from(2);
    };
    let vm_bed = match args.vms_in {
        VmNamespace::Separate => Bed::new("bench-vms").await,
        VmNamespace::Same => None,
    };
    // The provider kubeconfig's namespace is where the driver puts VMs and userdata Secrets.
    let kubeconfig = vm_bed.as_ref().unwrap_or(&bed).provider_kubeconfig();
    bed.create_provider_secret(SECRET, &kubeconfig).await;
    bed.create_class(CLASS, SECRET).await;
    let names = machine_names(args.machines);
    let mut harness = Harness {
        bed,
        vm_bed,
        own: Own::default(),
        names,
        clock_ticks: clock_ticks(),
        background: Tally::default(),
        args,
    };
    let mut report = Report {
        machines: harness.args.machines,
        ..Default::default()
    };
    let outcome = tokio::select! {
        outcome = harness.run(&mut report) => outcome,
        _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
    };
    println!("{}", report.print());
    let failed = outcome.is_err() || report.phases.iter().any(|p| p.outcome.is_err());
    if let Err(why) = outcome {
        eprintln!("bench: {why}");
    }
    harness.delete_nodes().await;
    eprintln!("removing namespace {} ...", harness.bed.namespace);
    harness.bed.teardown().await;
    if let Some(vm_bed) = harness.vm_bed {
        eprintln!("removing namespace {} ...", vm_bed.namespace);
        vm_bed.teardown().await;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_total_lines_are_read_by_verb_resource_and_code() {
        let text = r#"# HELP apiserver_request_total x
apiserver_request_total{code="201",component="apiserver",dry_run="",group="kubevirt.io",resource="virtualmachines",scope="namespace",subresource="",verb="POST",version="v1"} 3
apiserver_request_total{code="200",component="apiserver",dry_run="",group="machine.sapcloud.io",resource="machines",scope="namespace",subresource="status",verb="PUT",version="v1alpha1"} 2
apiserver_request_total{code="200",component="",dry_run="",group="",resource="",scope="",subresource="/metrics",verb="GET",version=""} 1
apiserver_request_total{code="409",component="apiserver",dry_run="",group="",resource="secrets",scope="namespace",subresource="",verb="POST",version="v1"} 1e+00
"#;
        let tally = parse_request_total(text);
        let get = |verb: &str, resource: &str, code: u16| {
            tally.0.get(&(verb.into(), resource.into(), code)).copied()
        };
        assert_eq!(get("POST", VMS, 201), Some(3.0));
        assert_eq!(
            get("PUT", "machines.machine.sapcloud.io/status", 200),
            Some(2.0)
        );
        assert_eq!(get("GET", METRICS, 200), None);
        assert_eq!(get("POST", SECRETS, 409), Some(1.0));
        assert_eq!(tally.0.len(), 3);
    }

    #[test]
    fn the_sidecars_own_counts_are_read_by_cluster_verb_and_resource() {
        let text = r#"# TYPE mcm_machine_controller_api_requests counter
mcm_machine_controller_api_requests_total{cluster="control",verb="update",resource="machines"} 3
mcm_machine_controller_api_requests_total{cluster="control",verb="watch",resource="machines"} 1
mcm_machine_controller_api_requests_total{cluster="target",verb="create",resource="secrets"} 2
mcm_cloud_api_requests_total{provider="kubevirt",service="virtualmachines"} 4
mcm_cloud_api_requests_failed_total{provider="kubevirt",service="virtualmachines"} 1
"#;
        let counted = Counted::parse(text);
        assert_eq!(counted.of_cluster("control"), 3.0, "watches are left out");
        assert_eq!(counted.of_cluster("target"), 2.0);
        assert_eq!(
            counted.of_cluster("provider"),
            4.0,
            "failures are not added"
        );
        let before = Counted::parse(
            r#"mcm_machine_controller_api_requests_total{cluster="control",verb="update",resource="machines"} 1"#,
        );
        assert_eq!(counted.minus(&before).of_cluster("control"), 2.0);
    }

    #[test]
    fn escaped_label_values_are_unescaped() {
        let labels = parse_labels(r#"a="x\"y",b="",c="z\\""#);
        assert_eq!(labels["a"], "x\"y");
        assert_eq!(labels["b"], "");
        assert_eq!(labels["c"], "z\\");
    }

    #[test]
    fn machine_names_differ_in_the_bootstrap_token_characters() {
        let names = machine_names(800);
        let token_ids: BTreeSet<&str> =
            names.iter().map(|n| &n[n.len() - 5..n.len() - 2]).collect();
        assert_eq!(token_ids.len(), 800);
        assert!(names.iter().all(|n| n.len() == "bench-".len() + 5));
    }

    #[test]
    fn log_levels_are_counted_with_or_without_colour() {
        let log = "\u{1b}[2m2026-12-02T07:50:53Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m x: conflict\n\
                   2026-12-02T07:50:53Z ERROR x: gone\n\
                   2026-12-02T07:50:53Z  INFO x: WARN in a message\n";
        assert_eq!(summarize_log(log), "3 lines, 1 WARN, 1 ERROR");
    }

    #[test]
    fn cpu_ticks_are_utime_plus_stime_after_the_last_parenthesis() {
        let stat = "42 (a) b) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9";
        assert_eq!(cpu_ticks(stat), Some(300.0));
        assert_eq!(cpu_ticks("42 (a) S 1"), None);
    }
}
