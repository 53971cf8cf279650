//! Prometheus metrics under MCM's names (`mcm_machine_*`, `mcm_cloud_api_*`), so existing
//! dashboards and alerts keep working. Per-machine gauges are computed from the machine
//! cache at scrape time, as MCM's collector does; durations and driver calls are recorded
//! as they happen.

use kube::ResourceExt;
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use mcm_provider_kubevirt::mcm::Machine;

use crate::machine::status::{node_name_of, phase_of};
use crate::names::phase;

type Labels = Vec<(String, String)>;
type GaugeF64 = Gauge<f64, AtomicU64>;

/// The provider label value of the cloud-API families.
pub const PROVIDER: &str = "kubevirt";

fn new_histogram() -> Histogram {
    // 50ms .. ~3.5min: driver calls range from a cached GET to a slow VM create.
    Histogram::new(exponential_buckets(0.05, 2.0, 13))
}

/// Metrics recorded while reconciling.
pub struct Metrics {
    registry: Registry,
    create_duration: Family<Labels, GaugeF64>,
    initialize_duration: Family<Labels, GaugeF64>,
    join_duration: Family<Labels, GaugeF64>,
    drain_duration: Family<Labels, GaugeF64>,
    delete_duration: Family<Labels, GaugeF64>,
    failed_join: Family<Labels, Counter>,
    driver_duration: Family<Labels, Histogram, fn() -> Histogram>,
    driver_failed: Family<Labels, Counter>,
    reconciles: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Which duration gauge to set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineDuration {
    Create,
    Initialize,
    Join,
    Drain,
    Delete,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = Metrics {
            create_duration: Family::default(),
            initialize_duration: Family::default(),
            join_duration: Family::default(),
            drain_duration: Family::default(),
            delete_duration: Family::default(),
            failed_join: Family::default(),
            driver_duration: Family::new_with_constructor(new_histogram),
            driver_failed: Family::default(),
            reconciles: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "mcm_machine_create_duration_seconds",
            "Duration in seconds to create a Machine of a MachineDeployment.",
            metrics.create_duration.clone(),
        );
        registry.register(
            "mcm_machine_initialize_duration_seconds",
            "Duration in seconds to initialize a Machine of a MachineDeployment.",
            metrics.initialize_duration.clone(),
        );
        registry.register(
            "mcm_machine_join_duration_seconds",
            "Duration in seconds for a Machine of a MachineDeployment to join the cluster",
            metrics.join_duration.clone(),
        );
        registry.register(
            "mcm_machine_drain_duration_seconds",
            "Duration in seconds to drain a Machine of a MachineDeployment.",
            metrics.drain_duration.clone(),
        );
        registry.register(
            "mcm_machine_delete_duration_seconds",
            "Duration in seconds to delete a Machine of a MachineDeployment.",
            metrics.delete_duration.clone(),
        );
        registry.register(
            "mcm_machine_num_failed_join",
            "Number of Machines of a MachineDeployment that failed to join the cluster.",
            metrics.failed_join.clone(),
        );
        registry.register(
            "mcm_cloud_api_driver_request_duration_seconds",
            "Total time (in seconds) taken for a driver API request to complete",
            metrics.driver_duration.clone(),
        );
        registry.register(
            "mcm_cloud_api_driver_requests_failed",
            "Number of failed Driver API requests, partitioned by provider, operation and error code",
            metrics.driver_failed.clone(),
        );
        registry.register(
            "mcm_machine_controller_reconciles",
            "Reconciles, partitioned by controller, outcome (ok or error) and failed stage (the error variant).",
            metrics.reconciles.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Sets a duration gauge for the machine's MachineDeployment (MCM's label set).
    pub fn machine_duration(
        &self,
        kind: MachineDuration,
        machine: &Machine,
        zone: &str,
        elapsed: Duration,
    ) {
        let namespace = machine.metadata.namespace.clone().unwrap_or_default();
        let deployment = deployment_of(machine);
        let mut labels = vec![
            ("namespace".to_owned(), namespace),
            ("machine_deployment".to_owned(), deployment),
        ];
        if kind != MachineDuration::Drain {
            labels.push(("instance_type".to_owned(), String::new()));
            labels.push(("zone".to_owned(), zone.to_owned()));
        }
        let family = match kind {
            MachineDuration::Create => &self.create_duration,
            MachineDuration::Initialize => &self.initialize_duration,
            MachineDuration::Join => &self.join_duration,
            MachineDuration::Drain => &self.drain_duration,
            MachineDuration::Delete => &self.delete_duration,
        };
        family.get_or_create(&labels).set(elapsed.as_secs_f64());
    }

    pub fn failed_join(&self, machine: &Machine, zone: &str) {
        let labels = vec![
            (
                "namespace".to_owned(),
                machine.metadata.namespace.clone().unwrap_or_default(),
            ),
            ("machine_deployment".to_owned(), deployment_of(machine)),
            ("instance_type".to_owned(), String::new()),
            ("zone".to_owned(), zone.to_owned()),
        ];
        self.failed_join.get_or_create(&labels).inc();
    }

    /// Records one driver call.
    pub fn driver_call(&self, operation: &str, elapsed: Duration, error_code: Option<&str>) {
        let labels = vec![
            ("provider".to_owned(), PROVIDER.to_owned()),
            ("operation".to_owned(), operation.to_owned()),
        ];
        self.driver_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if let Some(code) = error_code {
            let mut labels = labels;
            labels.push(("error_code".to_owned(), code.to_owned()));
            self.driver_failed.get_or_create(&labels).inc();
        }
    }

    /// Counts a reconcile: `error` is the failed stage (the error variant), `None` on success.
    pub fn reconciled(&self, controller: &str, error: Option<&str>) {
        let outcome = if error.is_some() { "error" } else { "ok" };
        self.reconciles
            .get_or_create(&vec![
                ("controller".to_owned(), controller.to_owned()),
                ("outcome".to_owned(), outcome.to_owned()),
                ("error".to_owned(), error.unwrap_or_default().to_owned()),
            ])
            .inc();
    }

    /// The OpenMetrics text of everything: recorded metrics plus per-machine gauges
    /// computed from `machines` and the frozen flag.
    pub fn render(&self, machines: &[std::sync::Arc<Machine>], frozen: bool) -> String {
        let snapshot = machine_snapshot(machines, frozen);
        let mut text = String::new();
        let written = encode_registry(&mut text, &snapshot)
            .and_then(|_| encode_registry(&mut text, &self.registry))
            .and_then(|_| encode_eof(&mut text));
        if written.is_err() {
            // Encoding into a String only fails on a formatter bug; say so in the scrape.
            text.clear();
            let _ = writeln!(text, "# metrics encoding failed\n# EOF");
        }
        text
    }
}

/// MCM puts a machine's MachineDeployment name in the `name` label.
fn deployment_of(machine: &Machine) -> String {
    machine
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("name"))
        .cloned()
        .unwrap_or_default()
}

/// MCM's numeric encoding of phases in `mcm_machine_current_status_phase`.
pub fn phase_value(phase: &str) -> f64 {
    match phase {
        phase::TERMINATING => -4.0,
        phase::FAILED => -3.0,
        phase::CRASH_LOOP_BACK_OFF => -2.0,
        phase::UNKNOWN => -1.0,
        phase::RUNNING => 1.0,
        _ => 0.0,
    }
}

fn machine_snapshot(machines: &[std::sync::Arc<Machine>], frozen: bool) -> Registry {
    let mut registry = Registry::default();
    let items: Gauge = Gauge::default();
    items.set(machines.len() as i64);
    registry.register(
        "mcm_machine_items_total",
        "Count of machines currently managed by the mcm.",
        items,
    );
    let frozen_gauge: Gauge = Gauge::default();
    frozen_gauge.set(i64::from(frozen));
    registry.register(
        "mcm_machine_controller_frozen",
        "Frozen status of the machine controller manager.",
        frozen_gauge,
    );
    let phases = Family::<Labels, GaugeF64>::default();
    let info = Family::<Labels, GaugeF64>::default();
    let conditions = Family::<Labels, GaugeF64>::default();
    for machine in machines {
        let identity = vec![
            ("name".to_owned(), machine.name_any()),
            (
                "namespace".to_owned(),
                machine.metadata.namespace.clone().unwrap_or_default(),
            ),
        ];
        phases
            .get_or_create(&identity)
            .set(phase_value(phase_of(machine)));
        info.get_or_create(&info_labels(machine, identity.clone()))
            .set(1.0);
        for condition in machine
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
        {
            let value = match condition.status.as_str() {
                "True" => 1.0,
                "False" => 0.0,
                _ => 2.0,
            };
            let mut labels = identity.clone();
            labels.push(("condition".to_owned(), condition.type_.clone()));
            conditions.get_or_create(&labels).set(value);
        }
    }
    registry.register(
        "mcm_machine_current_status_phase",
        "Current status phase of the Machines currently managed by the mcm.",
        phases,
    );
    registry.register(
        "mcm_machine_info",
        "Information of the Machines currently managed by the mcm.",
        info,
    );
    registry.register(
        "mcm_machine_status_condition",
        "Information of the mcm managed Machines' status conditions.",
        conditions,
    );
    registry
}

/// `mcm_machine_info`'s labels: the machine's identity, creation time, providerID, class
/// and node.
fn info_labels(machine: &Machine, mut labels: Labels) -> Labels {
    let created = machine
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second().to_string())
        .unwrap_or_default();
    let class = &machine.spec.class;
    labels.extend([
        ("createdAt".to_owned(), created),
        (
            "spec_provider_id".to_owned(),
            machine.spec.provider_id.clone().unwrap_or_default(),
        ),
        (
            "spec_class_api_group".to_owned(),
            class.api_group.clone().unwrap_or_default(),
        ),
        (
            "spec_class_kind".to_owned(),
            class.kind.clone().unwrap_or_default(),
        ),
        ("spec_class_name".to_owned(), class.name.clone()),
        ("node_name".to_owned(), node_name_of(machine)),
    ]);
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcm_provider_kubevirt::mcm::{CurrentStatus, MachineStatus};
    use std::sync::Arc;

    #[test]
    fn scrape_has_mcm_names_and_values() {
        let metrics = Metrics::new();
        let mut machine = Machine::new("m-1", Default::default());
        machine.metadata.namespace = Some("shoot--a".into());
        machine.status = Some(MachineStatus {
            current_status: Some(CurrentStatus {
                phase: Some("Running".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        metrics.driver_call(
            "CreateMachine",
            Duration::from_millis(120),
            Some("Internal"),
        );
        metrics.machine_duration(
            MachineDuration::Create,
            &machine,
            "z1",
            Duration::from_secs(7),
        );
        let text = metrics.render(&[Arc::new(machine)], true);
        for expected in [
            "mcm_machine_items_total 1",
            "mcm_machine_controller_frozen 1",
            "mcm_machine_current_status_phase{name=\"m-1\",namespace=\"shoot--a\"} 1.0",
            "mcm_cloud_api_driver_requests_failed_total{provider=\"kubevirt\",operation=\"CreateMachine\",error_code=\"Internal\"} 1",
            "mcm_machine_create_duration_seconds{namespace=\"shoot--a\",machine_deployment=\"\",instance_type=\"\",zone=\"z1\"} 7.0",
            "mcm_cloud_api_driver_request_duration_seconds_count{provider=\"kubevirt\",operation=\"CreateMachine\"} 1",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(text.matches("# EOF").count(), 1);
    }

    #[test]
    fn reconciles_are_counted_by_outcome_and_failed_stage() {
        let metrics = Metrics::new();
        metrics.reconciled("machine", None);
        metrics.reconciled("machine", Some("creation"));
        metrics.reconciled("machine", Some("creation"));
        let text = metrics.render(&[], false);
        for expected in [
            "mcm_machine_controller_reconciles_total{controller=\"machine\",outcome=\"ok\",error=\"\"} 1",
            "mcm_machine_controller_reconciles_total{controller=\"machine\",outcome=\"error\",error=\"creation\"} 2",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }

    #[test]
    fn phases_encode_as_mcm_does() {
        assert_eq!(phase_value("Terminating"), -4.0);
        assert_eq!(phase_value("Failed"), -3.0);
        assert_eq!(phase_value("CrashLoopBackOff"), -2.0);
        assert_eq!(phase_value("Unknown"), -1.0);
        assert_eq!(phase_value("Pending"), 0.0);
        assert_eq!(phase_value("Running"), 1.0);
    }
}
