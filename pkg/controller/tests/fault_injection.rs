//! Fault injection and restart safety over the whole stack: machine reconcile -> KubeVirt
//! driver -> KubeVirt SPI -> kube's real client -> the in-memory API server.
//!
//! The server stands for three kube-apiservers (control, target and KubeVirt provider
//! cluster) that fail the way real ones do: 500 InternalError, 409 Conflict, 429
//! TooManyRequests, a request that times out, a connection dropped before the server saw
//! the request, and one dropped after the server applied it (the client never learns that
//! its write happened). Faults are injected on each request in turn, then at random
//! (seeded, with a bounded budget). Restart safety crashes the sidecar right after each
//! write and restarts it with a fresh context over the same store.
//!
//! After every scenario: each machine converged (created: Pending with providerID, node
//! label, exactly one VM and its owned userdata Secret; deleted: gone), and nothing is left
//! behind: no VM, no userdata Secret, no bootstrap token. Counts are printed
//! (`cargo test -p mcm-machine-controller --test fault_injection -- --nocapture`).

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use kube_fake::{FakeApiServer, Fault};
use mcm_machine_controller::Context;
use mcm_provider_kubevirt::kubevirt::ownership::{MACHINE_LABEL, MANAGED_BY_LABEL};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use support::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    InternalError,
    Conflict,
    TooManyRequests,
    Timeout,
    Drop,
    DropAfterApply,
}

const KINDS: [Kind; 6] = [
    Kind::InternalError,
    Kind::Conflict,
    Kind::TooManyRequests,
    Kind::Timeout,
    Kind::Drop,
    Kind::DropAfterApply,
];

impl Kind {
    fn fault(self) -> Fault {
        match self {
            Kind::InternalError => Fault::Status(500, "injected internal error".into()),
            Kind::Conflict => Fault::Status(409, "injected conflict".into()),
            Kind::TooManyRequests => Fault::Status(429, "injected throttling".into()),
            Kind::Timeout => Fault::Timeout,
            Kind::Drop => Fault::Drop,
            Kind::DropAfterApply => Fault::DropAfterApply,
        }
    }

    /// Only writes can be applied and then lost; on a read it is a plain drop.
    fn applies(self, method: &str) -> bool {
        self != Kind::DropAfterApply || method != "GET"
    }
}

const RECONCILE_LIMIT: usize = 60;

/// A crash switch: once tripped, every request fails until the sidecar restarts.
#[derive(Clone, Default)]
struct Crash(Arc<AtomicBool>);

fn machine_names(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("m-{i}")).collect()
}

fn created(server: &FakeApiServer, name: &str) -> Result<(), String> {
    let machine = server.get(MACHINES, name).ok_or("machine gone")?;
    let phase = &machine["status"]["currentStatus"]["phase"];
    let provider_id = &machine["spec"]["providerID"];
    let node = &machine["metadata"]["labels"]["node"];
    if phase != "Pending" || provider_id != &json!(format!("kubevirt://{name}")) || node != name {
        return Err(format!(
            "machine {name}: phase {phase}, providerID {provider_id}, node {node}"
        ));
    }
    let vm = server.get(VMS, name).ok_or(format!("no VM {name}"))?;
    let secret = server
        .get(VM_SECRETS, &format!("userdata-{name}"))
        .ok_or(format!("no userdata Secret of {name}"))?;
    if secret["metadata"]["ownerReferences"][0]["uid"] != vm["metadata"]["uid"] {
        return Err(format!("userdata Secret of {name} not owned by its VM"));
    }
    Ok(())
}

/// No two VMs for one machine, and no VM or userdata Secret without a live machine.
fn nothing_stray(server: &FakeApiServer) -> Result<(), String> {
    let machines = server.names(MACHINES);
    let mut per_machine = BTreeMap::<String, usize>::new();
    for name in server.names(VMS) {
        let vm = server.get(VMS, &name).unwrap_or_default();
        let owner = vm["metadata"]["labels"][MACHINE_LABEL]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if vm["metadata"]["labels"][MANAGED_BY_LABEL].is_null() || !machines.contains(&owner) {
            return Err(format!("orphaned VM {name} (machine {owner:?})"));
        }
        *per_machine.entry(owner).or_default() += 1;
    }
    if let Some((machine, count)) = per_machine.iter().find(|(_, count)| **count > 1) {
        return Err(format!("{count} VMs for machine {machine}"));
    }
    for name in server.names(VM_SECRETS) {
        let machine = name.trim_start_matches("userdata-").to_owned();
        if !machines.contains(&machine) {
            return Err(format!("orphaned userdata Secret {name}"));
        }
    }
    if machines.is_empty() && !server.names(KUBE_SYSTEM_SECRETS).is_empty() {
        return Err(format!(
            "bootstrap tokens left: {:?}",
            server.names(KUBE_SYSTEM_SECRETS)
        ));
    }
    Ok(())
}

fn mark_deleted(server: &FakeApiServer, name: &str) {
    if let Some(mut machine) = server.get(MACHINES, name) {
        machine["metadata"]["deletionTimestamp"] = json!(ago(0));
        server.insert(MACHINES, machine);
    }
}

/// Reconciles each machine, round-robin, until `done` holds for all; a tripped crash
/// switch restarts the sidecar (fresh context, faults off). Returns the reconciles.
async fn converge(
    server: &FakeApiServer,
    ctx: &mut Context,
    names: &[String],
    crash: Option<&Crash>,
    done: impl Fn(&FakeApiServer, &str) -> bool,
) -> Result<usize, String> {
    let mut reconciles = 0;
    for _ in 0..RECONCILE_LIMIT {
        let pending: Vec<&String> = names.iter().filter(|n| !done(server, n)).collect();
        if pending.is_empty() {
            return Ok(reconciles);
        }
        for name in pending {
            reconcile_stored(ctx, server, name).await;
            reconciles += 1;
            if let Some(crash) = crash
                && crash.0.swap(false, Ordering::SeqCst)
            {
                server.clear_fault();
                *ctx = kubevirt_context(server);
            }
        }
    }
    let states: Vec<String> = names
        .iter()
        .map(|n| {
            format!(
                "{n}: {}",
                server.get(MACHINES, n).unwrap_or_default()["status"]
            )
        })
        .collect();
    Err(format!(
        "not converged after {RECONCILE_LIMIT} rounds: {states:#?}"
    ))
}

/// Creates the machines, converges, deletes them, converges; checks the invariants.
async fn lifecycle(
    server: &FakeApiServer,
    names: &[String],
    crash: Option<&Crash>,
) -> Result<usize, String> {
    let mut ctx = kubevirt_context(server);
    for name in names {
        server.insert(MACHINES, machine_json(name, json!({})));
    }
    let mut reconciles =
        converge(server, &mut ctx, names, crash, |s, n| created(s, n).is_ok()).await?;
    for name in names {
        created(server, name)?;
    }
    nothing_stray(server)?;
    for name in names {
        mark_deleted(server, name);
    }
    reconciles += converge(server, &mut ctx, names, crash, |s, n| {
        s.get(MACHINES, n).is_none()
    })
    .await?;
    nothing_stray(server)?;
    Ok(reconciles)
}

#[derive(Default)]
struct Tally {
    scenarios: usize,
    reconciles: usize,
    requests: usize,
    faults: BTreeMap<Kind, usize>,
}

impl Tally {
    fn faults_line(&self) -> String {
        let total: usize = self.faults.values().sum();
        let each: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{k:?} {n}"))
            .collect();
        format!("{total} faults ({})", each.join(", "))
    }
}

#[tokio::test(start_paused = true)]
async fn every_fault_on_every_request_in_turn_converges_without_leftovers() {
    let names = machine_names(1);
    let clean = kubevirt_server();
    lifecycle(&clean, &names, None).await.unwrap();
    let baseline = clean.requests();
    assert!(
        baseline.len() > 10,
        "the lifecycle makes requests: {}",
        baseline.len()
    );

    let mut tally = Tally::default();
    let mut failures = Vec::new();
    for kind in KINDS {
        for index in 0..baseline.len() {
            let server = kubevirt_server();
            let injected = Arc::new(Mutex::new(0usize));
            let seen = injected.clone();
            server.set_fault(move |request, i| {
                (i == index && kind.applies(request.method.as_str())).then(|| {
                    *seen.lock().unwrap() += 1;
                    kind.fault()
                })
            });
            match lifecycle(&server, &names, None).await {
                Ok(reconciles) => tally.reconciles += reconciles,
                Err(why) => failures.push(format!("{kind:?} at request {index}: {why}")),
            }
            *tally.faults.entry(kind).or_default() += *injected.lock().unwrap();
            tally.scenarios += 1;
            tally.requests += server.requests().len();
        }
    }
    println!(
        "fault injection, each request in turn: {} scenarios over a {}-request lifecycle, {}, {} reconciles, {} requests, {} not converged",
        tally.scenarios,
        baseline.len(),
        tally.faults_line(),
        tally.reconciles,
        tally.requests,
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test(start_paused = true)]
async fn random_faults_converge_without_leftovers() {
    const SEEDS: u64 = 30;
    const MACHINES_PER_SEED: usize = 3;
    const FAULT_BUDGET: usize = 40;
    let names = machine_names(MACHINES_PER_SEED);
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    for seed in 0..SEEDS {
        let server = kubevirt_server();
        let counts = Arc::new(Mutex::new(BTreeMap::<Kind, usize>::new()));
        let seen = counts.clone();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut budget = FAULT_BUDGET;
        server.set_fault(move |request, _| {
            if budget == 0 || !rng.random_bool(0.2) {
                return None;
            }
            let kind = KINDS[rng.random_range(0..KINDS.len())];
            if !kind.applies(request.method.as_str()) {
                return None;
            }
            budget -= 1;
            *seen.lock().unwrap().entry(kind).or_default() += 1;
            Some(kind.fault())
        });
        match lifecycle(&server, &names, None).await {
            Ok(reconciles) => tally.reconciles += reconciles,
            Err(why) => failures.push(format!("seed {seed}: {why}")),
        }
        for (kind, n) in counts.lock().unwrap().iter() {
            *tally.faults.entry(*kind).or_default() += n;
        }
        tally.scenarios += 1;
        tally.requests += server.requests().len();
    }
    println!(
        "fault injection, random: {} seeds x {MACHINES_PER_SEED} machines, {}, {} reconciles, {} requests, {} not converged",
        tally.scenarios,
        tally.faults_line(),
        tally.reconciles,
        tally.requests,
        failures.len()
    );
    assert!(
        tally.faults.values().sum::<usize>() >= SEEDS as usize * 10,
        "faults were injected"
    );
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test(start_paused = true)]
async fn a_crash_after_any_write_then_a_restart_converges_without_duplicates() {
    let names = machine_names(2);
    let clean = kubevirt_server();
    lifecycle(&clean, &names, None).await.unwrap();
    let writes = clean
        .requests()
        .iter()
        .filter(|r| r.method != "GET")
        .count();
    assert!(writes > 5, "the lifecycle writes: {writes}");

    let mut failures = Vec::new();
    let mut reconciles = 0;
    let mut vm_creates = 0;
    for crash_after in 0..writes {
        let server = kubevirt_server();
        let crash = Crash::default();
        let tripped = crash.clone();
        let mut writes_seen = 0;
        server.set_fault(move |request, _| {
            if tripped.0.load(Ordering::SeqCst) {
                return Some(Fault::Drop);
            }
            if request.method == "GET" {
                return None;
            }
            writes_seen += 1;
            (writes_seen == crash_after + 1).then(|| {
                tripped.0.store(true, Ordering::SeqCst);
                Fault::DropAfterApply
            })
        });
        match lifecycle(&server, &names, Some(&crash)).await {
            Ok(n) => reconciles += n,
            Err(why) => failures.push(format!("crash after write {crash_after}: {why}")),
        }
        vm_creates += server
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path == VMS)
            .count();
    }
    println!(
        "restart safety: {writes} scenarios of {} machines, each crashing after a different one of the lifecycle's {writes} writes and restarting, {reconciles} reconciles, {vm_creates} VM create requests (failed ones included) for {} VMs, {} not converged",
        names.len(),
        writes * names.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The invariants themselves fail when something is left: a VM without its machine.
#[tokio::test]
async fn the_leftover_check_sees_an_orphaned_vm() {
    let server = kubevirt_server();
    server.insert(
        VMS,
        json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
               "metadata": {"name": "ghost", "namespace": VM_NS,
                            "labels": {MACHINE_LABEL: "ghost", MANAGED_BY_LABEL: "x"}}}),
    );
    let error = nothing_stray(&server).unwrap_err();
    assert!(error.contains("orphaned VM ghost"), "{error}");
}
