//! Benchmark (not a test): drives N machines through creation and deletion against the
//! in-memory API server and the scripted driver, and prints CPU time per reconcile and
//! peak RSS. `cargo bench -p mcm-machine-controller --bench reconcile -- [N]` (default 500).
//!
//! What it measures is the controller's own cost per reconcile (serialization, status
//! logic, client round trips through kube's client stack), not API server or provider
//! latency, which dominate in a real cluster.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use serde_json::json;
use support::*;

/// User plus system CPU seconds of this process (Linux `/proc/self/stat`, in clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_default()
    };
    // Fields 14 and 15 of stat are utime and stime; here offset by the two before ')'.
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_default()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let machines: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(500);
    let world = world();
    let names: Vec<String> = (0..machines).map(|i| format!("bench-{i:05}")).collect();
    for name in &names {
        world.server.insert(MACHINES, machine_json(name, json!({})));
    }

    let (wall, cpu) = (Instant::now(), cpu_seconds());
    let mut create_reconciles = 0;
    for name in &names {
        create_reconciles += world
            .reconcile_until(name, 8, |w| {
                w.status(name, "/currentStatus/phase") == "Pending"
            })
            .await
            .len();
        world.server.clear_requests();
    }
    let (create_wall, create_cpu) = (wall.elapsed().as_secs_f64(), cpu_seconds() - cpu);

    for name in &names {
        let mut machine = world.machine(name).unwrap_or_default();
        machine["metadata"]["deletionTimestamp"] = json!(ago(1));
        world.server.insert(MACHINES, machine);
    }
    let (wall, cpu) = (Instant::now(), cpu_seconds());
    let mut delete_reconciles = 0;
    for name in &names {
        delete_reconciles += world
            .reconcile_until(name, 12, |w| w.machine(name).is_none())
            .await
            .len();
        world.server.clear_requests();
    }
    let (delete_wall, delete_cpu) = (wall.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    assert!(world.driver.vms().is_empty(), "every VM deleted");

    println!("machines:            {machines}");
    println!(
        "create:  {create_reconciles} reconciles, {:.3} ms CPU/reconcile, {:.3} s wall",
        create_cpu * 1000.0 / create_reconciles.max(1) as f64,
        create_wall
    );
    println!(
        "delete:  {delete_reconciles} reconciles, {:.3} ms CPU/reconcile, {:.3} s wall",
        delete_cpu * 1000.0 / delete_reconciles.max(1) as f64,
        delete_wall
    );
    println!("peak RSS:            {} KiB", peak_rss_kib());
}
