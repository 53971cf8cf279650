//! Prometheus metrics under MCM's names, types, labels and help texts (`mcm_machine_*`,
//! `mcm_cloud_api_*`, `mcm_misc_*`, the `process_*` and `promhttp_*` metrics of Go's
//! client), so existing dashboards and alerts keep working. Per-machine gauges are computed
//! from the machine cache at scrape time, as MCM's collector does; durations and driver
//! calls are recorded as they happen.
//!
//! Ours alone: `mcm_machine_controller_reconciles_total`. MCM's that this sidecar has no
//! counterpart for: `go_*` (Go runtime), `mcm_workqueue_*` and `rest_client_*` (client-go).
//! `mcm_cloud_api_requests_total`, `..._requests_failed_total` and
//! `..._api_request_duration_seconds` are registered by MCM but only a provider increments
//! them, and the Go KubeVirt provider never does: its sidecar exports no such series, nor
//! does this one.

use kube::ResourceExt;
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use mcm_provider_kubevirt::mcm::{Machine, MachineClass};

use crate::machine::status::{node_name_of, phase_of};
use crate::names::phase;
use crate::runtime::process_metrics::ProcessCollector;

type Labels = Vec<(String, String)>;
type GaugeF64 = Gauge<f64, AtomicU64>;

/// The provider label value of the cloud-API families.
pub const PROVIDER: &str = "kubevirt";

/// The `binary` label MCM's scrape-failure counter carries.
const SCRAPE_FAILURE_BINARY: &str = "machine-controller-manager-provider";

/// The Node label MCM takes a machine's `zone` metric label from.
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Go's `prometheus.DefBuckets`, which MCM's histograms use (their `le` labels are part of
/// the series).
const GO_DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn new_histogram() -> Histogram {
    Histogram::new(GO_DEFAULT_BUCKETS)
}

/// A counter exported under exactly the name it is registered with. MCM's
/// `mcm_machine_num_failed_join` is a Go counter without `_total`, which Go serves in the
/// Prometheus text format where that is allowed. OpenMetrics, what prometheus-client writes,
/// requires `_total` on counter samples and prometheus-client appends it; typed `unknown`,
/// the sample keeps MCM's series name (and `rate()`/`increase()` work on it as before).
#[derive(Debug, Default, Clone)]
pub struct UnsuffixedCounter(Counter);

impl UnsuffixedCounter {
    pub fn inc(&self) {
        self.0.inc();
    }
}

impl TypedMetric for UnsuffixedCounter {
    const TYPE: MetricType = MetricType::Unknown;
}

impl EncodeMetric for UnsuffixedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // A gauge sample is written with the bare name; the family's TYPE line says unknown.
        encoder.encode_gauge(&self.0.get())
    }
    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A metric whose HELP text is written as given. `Registry::register` appends a period to
/// every help text, which would make MCM's texts differ (some end without one, the rest
/// would end in two).
#[derive(Debug)]
struct ExactHelp<M> {
    name: &'static str,
    help: &'static str,
    metric: M,
}

impl<M: EncodeMetric + std::fmt::Debug + Send + Sync + 'static> Collector for ExactHelp<M> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let metric_type = self.metric.metric_type();
        let encoder = encoder.encode_descriptor(self.name, self.help, None, metric_type)?;
        self.metric.encode(encoder)
    }
}

fn register_exact<M: EncodeMetric + std::fmt::Debug + Send + Sync + 'static>(
    registry: &mut Registry,
    name: &'static str,
    help: &'static str,
    metric: M,
) {
    registry.register_collector(Box::new(ExactHelp { name, help, metric }));
}

/// Metrics recorded while reconciling.
pub struct Metrics {
    registry: Registry,
    create_duration: Family<Labels, GaugeF64>,
    initialize_duration: Family<Labels, GaugeF64>,
    join_duration: Family<Labels, GaugeF64>,
    drain_duration: Family<Labels, GaugeF64>,
    delete_duration: Family<Labels, GaugeF64>,
    failed_join: Family<Labels, UnsuffixedCounter>,
    driver_duration: Family<Labels, Histogram, fn() -> Histogram>,
    driver_failed: Family<Labels, Counter>,
    cloud_api_requests: Family<Labels, Counter>,
    cloud_api_failed: Family<Labels, Counter>,
    cloud_api_duration: Family<Labels, Histogram, fn() -> Histogram>,
    scrape_failures: Family<Labels, Counter>,
    scrapes: Family<Labels, Counter>,
    scrapes_in_flight: Gauge,
    reconciles: Family<Labels, Counter>,
    api_requests: Family<Labels, Counter>,
}

impl mcm_provider_kubevirt::kubevirt::api_calls::ApiCallObserver for Metrics {
    fn observe(&self, service: &str, elapsed: Duration, failed: bool) {
        self.cloud_api_call(service, elapsed, failed);
    }
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

/// Counter names are registered without `_total`: the OpenMetrics encoder appends it, so
/// the series names are MCM's (`mcm_cloud_api_driver_requests_failed_total`, ...).
fn register_machine_families(registry: &mut Registry, metrics: &Metrics) {
    register_exact(
        registry,
        "mcm_machine_create_duration_seconds",
        "Duration in seconds to create a Machine of a MachineDeployment.",
        metrics.create_duration.clone(),
    );
    register_exact(
        registry,
        "mcm_machine_initialize_duration_seconds",
        "Duration in seconds to initialize a Machine of a MachineDeployment.",
        metrics.initialize_duration.clone(),
    );
    register_exact(
        registry,
        "mcm_machine_join_duration_seconds",
        "Duration in seconds for a Machine of a MachineDeployment to join the cluster",
        metrics.join_duration.clone(),
    );
    register_exact(
        registry,
        "mcm_machine_drain_duration_seconds",
        "Duration in seconds to drain a Machine of a MachineDeployment.",
        metrics.drain_duration.clone(),
    );
    register_exact(
        registry,
        "mcm_machine_delete_duration_seconds",
        "Duration in seconds to delete a Machine of a MachineDeployment.",
        metrics.delete_duration.clone(),
    );
    register_exact(
        registry,
        "mcm_machine_num_failed_join",
        "Number of Machines of a MachineDeployment that failed to join the cluster.",
        metrics.failed_join.clone(),
    );
}

fn register_other_families(registry: &mut Registry, metrics: &Metrics) {
    register_exact(
        registry,
        "mcm_cloud_api_driver_request_duration_seconds",
        "Total time (in seconds) taken for a driver API request to complete",
        metrics.driver_duration.clone(),
    );
    register_exact(
        registry,
        "mcm_cloud_api_driver_requests_failed",
        "Number of failed Driver API requests, partitioned by provider, operation and error code",
        metrics.driver_failed.clone(),
    );
    register_exact(
        registry,
        "mcm_cloud_api_requests",
        "Number of Cloud Service API requests, partitioned by provider, and service.",
        metrics.cloud_api_requests.clone(),
    );
    register_exact(
        registry,
        "mcm_cloud_api_requests_failed",
        "Number of Failed Cloud Service API requests, partitioned by provider, and service.",
        metrics.cloud_api_failed.clone(),
    );
    register_exact(
        registry,
        "mcm_cloud_api_api_request_duration_seconds",
        "Time(in seconds) it takes for a provider API request to complete",
        metrics.cloud_api_duration.clone(),
    );
    register_exact(
        registry,
        "mcm_misc_scrape_failure",
        "Total count of scrape failures.",
        metrics.scrape_failures.clone(),
    );
    register_exact(
        registry,
        "promhttp_metric_handler_requests_in_flight",
        "Current number of scrapes being served.",
        metrics.scrapes_in_flight.clone(),
    );
    register_exact(
        registry,
        "promhttp_metric_handler_requests",
        "Total number of scrapes by HTTP status code.",
        metrics.scrapes.clone(),
    );
    register_exact(
        registry,
        "mcm_machine_controller_reconciles",
        "Reconciles, partitioned by controller, outcome (ok or error) and failed stage (the error variant).",
        metrics.reconciles.clone(),
    );
    register_exact(
        registry,
        "mcm_machine_controller_api_requests",
        "Requests of the sidecar to the control and target clusters, partitioned by cluster, verb and resource.",
        metrics.api_requests.clone(),
    );
    registry.register_collector(Box::new(ProcessCollector));
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
            cloud_api_requests: Family::default(),
            cloud_api_failed: Family::default(),
            cloud_api_duration: Family::new_with_constructor(new_histogram),
            scrape_failures: Family::default(),
            scrapes: Family::default(),
            scrapes_in_flight: Gauge::default(),
            reconciles: Family::default(),
            api_requests: Family::default(),
            registry: Registry::default(),
        };
        register_machine_families(&mut registry, &metrics);
        register_other_families(&mut registry, &metrics);
        // Go's promhttp handler starts these at zero.
        for code in ["200", "500", "503"] {
            drop(
                metrics
                    .scrapes
                    .get_or_create(&vec![("code".to_owned(), code.to_owned())]),
            );
        }
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Sets a duration gauge as MCM does: only for a machine of a MachineDeployment (its
    /// `name` label), only for a non-zero duration, rounded to whole seconds; drain without
    /// placement labels, the others with the class's (`class` None: empty placement).
    pub fn machine_duration(
        &self,
        kind: MachineDuration,
        machine: &Machine,
        class: Option<&MachineClass>,
        elapsed: Duration,
    ) {
        let Some(mut labels) = deployment_labels(machine) else {
            return;
        };
        if elapsed.is_zero() {
            return;
        }
        if kind != MachineDuration::Drain {
            labels.extend(placement_labels(machine, class));
        }
        let family = match kind {
            MachineDuration::Create => &self.create_duration,
            MachineDuration::Initialize => &self.initialize_duration,
            MachineDuration::Join => &self.join_duration,
            MachineDuration::Drain => &self.drain_duration,
            MachineDuration::Delete => &self.delete_duration,
        };
        family.get_or_create(&labels).set(round_to_seconds(elapsed));
    }

    /// Counts a machine of a MachineDeployment that did not join within its creation timeout.
    pub fn failed_join(&self, machine: &Machine, class: &MachineClass) {
        if let Some(mut labels) = deployment_labels(machine) {
            labels.extend(placement_labels(machine, Some(class)));
            self.failed_join.get_or_create(&labels).inc();
        }
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

    /// Records one request to a provider cluster (MCM's cloud API metrics; the duration,
    /// as in MCM, of successful requests only).
    pub fn cloud_api_call(&self, service: &str, elapsed: Duration, failed: bool) {
        let labels = vec![
            ("provider".to_owned(), PROVIDER.to_owned()),
            ("service".to_owned(), service.to_owned()),
        ];
        self.cloud_api_requests.get_or_create(&labels).inc();
        if failed {
            self.cloud_api_failed.get_or_create(&labels).inc();
        } else {
            self.cloud_api_duration
                .get_or_create(&labels)
                .observe(elapsed.as_secs_f64());
        }
    }

    /// Counts one request of the control or target client.
    pub fn api_request(&self, cluster: &str, verb: &str, resource: &str) {
        self.api_requests
            .get_or_create(&vec![
                ("cluster".to_owned(), cluster.to_owned()),
                ("verb".to_owned(), verb.to_owned()),
                ("resource".to_owned(), resource.to_owned()),
            ])
            .inc();
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
    /// computed from `machines` and the frozen flag. Without a machine cache the machine
    /// gauges are left out and a scrape failure counted, as MCM does when its lister fails.
    pub fn render(&self, machines: Option<&[std::sync::Arc<Machine>]>, frozen: bool) -> String {
        self.scrapes_in_flight.inc();
        if machines.is_none() {
            self.scrape_failures
                .get_or_create(&vec![
                    ("binary".to_owned(), SCRAPE_FAILURE_BINARY.to_owned()),
                    ("kind".to_owned(), "Machine-count".to_owned()),
                ])
                .inc();
        }
        let snapshot = machine_snapshot(machines, frozen);
        let mut text = String::new();
        let written = encode_registry(&mut text, &snapshot)
            .and_then(|_| encode_registry(&mut text, &self.registry))
            .and_then(|_| encode_eof(&mut text));
        let code = if written.is_err() {
            // Encoding into a String only fails on a formatter bug; say so in the scrape.
            text.clear();
            let _ = writeln!(text, "# metrics encoding failed\n# EOF");
            "500"
        } else {
            "200"
        };
        // Counted after the encoding, as Go's handler counts a scrape once it is served.
        self.scrapes
            .get_or_create(&vec![("code".to_owned(), code.to_owned())])
            .inc();
        self.scrapes_in_flight.dec();
        text
    }
}

/// MCM's deployment labels, `None` for a machine without a MachineDeployment (MCM then
/// records no duration).
fn deployment_labels(machine: &Machine) -> Option<Labels> {
    let deployment = deployment_of(machine);
    (!deployment.is_empty()).then(|| {
        vec![
            (
                "namespace".to_owned(),
                machine.metadata.namespace.clone().unwrap_or_default(),
            ),
            ("machine_deployment".to_owned(), deployment),
        ]
    })
}

/// MCM's placement labels: the class's `nodeTemplate.instanceType` and the zone label of
/// the machine's node template. MCM leaves both out for a class without a nodeTemplate
/// (and its four-label gauges then panic); here they stay, empty, so the label set is fixed.
fn placement_labels(machine: &Machine, class: Option<&MachineClass>) -> Labels {
    let instance_type = class
        .and_then(|c| c.node_template.as_ref())
        .and_then(|t| t.get("instanceType"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    let zone = machine
        .spec
        .node_template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.as_ref())
        .and_then(|l| l.get(ZONE_LABEL))
        .map(String::as_str)
        .unwrap_or_default();
    vec![
        ("instance_type".to_owned(), instance_type.to_owned()),
        ("zone".to_owned(), zone.to_owned()),
    ]
}

/// Go's `Duration.Round(time.Second).Seconds()`: halves round away from zero.
fn round_to_seconds(elapsed: Duration) -> f64 {
    ((elapsed.as_nanos() + 500_000_000) / 1_000_000_000) as f64
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

fn machine_snapshot(machines: Option<&[std::sync::Arc<Machine>]>, frozen: bool) -> Registry {
    let mut registry = Registry::default();
    let frozen_gauge: Gauge = Gauge::default();
    frozen_gauge.set(i64::from(frozen));
    register_exact(
        &mut registry,
        "mcm_machine_controller_frozen",
        "Frozen status of the machine controller manager.",
        frozen_gauge,
    );
    let Some(machines) = machines else {
        return registry;
    };
    let items: Gauge = Gauge::default();
    items.set(machines.len() as i64);
    register_exact(
        &mut registry,
        "mcm_machine_items_total",
        "Count of machines currently managed by the mcm.",
        items,
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
            // MCM's encoding; a status other than the three stays 0 there too.
            let value = match condition.status.as_str() {
                "True" => 1.0,
                "Unknown" => 2.0,
                _ => 0.0,
            };
            let mut labels = identity.clone();
            labels.push(("condition".to_owned(), condition.type_.clone()));
            conditions.get_or_create(&labels).set(value);
        }
    }
    register_exact(
        &mut registry,
        "mcm_machine_current_status_phase",
        "Current status phase of the Machines currently managed by the mcm.",
        phases,
    );
    register_exact(
        &mut registry,
        "mcm_machine_info",
        "Information of the Machines currently managed by the mcm.",
        info,
    );
    register_exact(
        &mut registry,
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

    fn pool_machine(name: &str) -> Machine {
        let mut machine: Machine = serde_json::from_value(serde_json::json!({
            "apiVersion": "machine.sapcloud.io/v1alpha1", "kind": "Machine",
            "metadata": {"name": name, "namespace": "shoot--a", "labels": {"name": "pool-a"}},
            "spec": {"class": {"name": "c"},
                     "nodeTemplate": {"metadata": {"labels": {"topology.kubernetes.io/zone": "z1"}}}}
        }))
        .unwrap();
        machine.status = Some(MachineStatus {
            current_status: Some(CurrentStatus {
                phase: Some("Running".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        machine
    }

    fn class() -> MachineClass {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c", "namespace": "shoot--a"},
            "providerSpec": {"region": "r", "zone": "not-the-metric-zone"},
            "nodeTemplate": {"instanceType": "u1.large", "region": "r", "zone": "z1"}
        }))
        .unwrap()
    }

    /// Every family MCM's provider sidecar exports, with its type and help text as MCM
    /// registers them. OpenMetrics names a counter family without `_total` in HELP/TYPE;
    /// the samples carry it, so the series names are MCM's.
    const MCM_FAMILIES: [(&str, &str, &str); 16] = [
        (
            "mcm_machine_items_total",
            "gauge",
            "Count of machines currently managed by the mcm.",
        ),
        (
            "mcm_machine_controller_frozen",
            "gauge",
            "Frozen status of the machine controller manager.",
        ),
        (
            "mcm_machine_current_status_phase",
            "gauge",
            "Current status phase of the Machines currently managed by the mcm.",
        ),
        (
            "mcm_machine_info",
            "gauge",
            "Information of the Machines currently managed by the mcm.",
        ),
        (
            "mcm_machine_status_condition",
            "gauge",
            "Information of the mcm managed Machines' status conditions.",
        ),
        (
            "mcm_machine_create_duration_seconds",
            "gauge",
            "Duration in seconds to create a Machine of a MachineDeployment.",
        ),
        (
            "mcm_machine_initialize_duration_seconds",
            "gauge",
            "Duration in seconds to initialize a Machine of a MachineDeployment.",
        ),
        (
            "mcm_machine_join_duration_seconds",
            "gauge",
            "Duration in seconds for a Machine of a MachineDeployment to join the cluster",
        ),
        (
            "mcm_machine_drain_duration_seconds",
            "gauge",
            "Duration in seconds to drain a Machine of a MachineDeployment.",
        ),
        (
            "mcm_machine_delete_duration_seconds",
            "gauge",
            "Duration in seconds to delete a Machine of a MachineDeployment.",
        ),
        (
            "mcm_cloud_api_driver_request_duration_seconds",
            "histogram",
            "Total time (in seconds) taken for a driver API request to complete",
        ),
        (
            "mcm_cloud_api_driver_requests_failed",
            "counter",
            "Number of failed Driver API requests, partitioned by provider, operation and error code",
        ),
        (
            "mcm_cloud_api_requests",
            "counter",
            "Number of Cloud Service API requests, partitioned by provider, and service.",
        ),
        (
            "mcm_cloud_api_requests_failed",
            "counter",
            "Number of Failed Cloud Service API requests, partitioned by provider, and service.",
        ),
        (
            "mcm_cloud_api_api_request_duration_seconds",
            "histogram",
            "Time(in seconds) it takes for a provider API request to complete",
        ),
        (
            "mcm_misc_scrape_failure",
            "counter",
            "Total count of scrape failures.",
        ),
    ];

    fn all_recorded() -> String {
        let metrics = Metrics::new();
        let mut machine = pool_machine("m-1");
        machine.status.as_mut().unwrap().conditions =
            Some(vec![k8s_openapi::api::core::v1::NodeCondition {
                type_: "Ready".into(),
                status: "Unknown".into(),
                ..Default::default()
            }]);
        let class = class();
        metrics.driver_call(
            "CreateMachine",
            Duration::from_millis(120),
            Some("Internal"),
        );
        metrics.cloud_api_call("virtualmachines", Duration::from_millis(30), false);
        metrics.cloud_api_call("virtualmachines", Duration::from_millis(30), true);
        for kind in [
            MachineDuration::Create,
            MachineDuration::Initialize,
            MachineDuration::Join,
            MachineDuration::Delete,
        ] {
            metrics.machine_duration(kind, &machine, Some(&class), Duration::from_millis(7_400));
        }
        metrics.machine_duration(
            MachineDuration::Drain,
            &machine,
            None,
            Duration::from_millis(2_500),
        );
        metrics.failed_join(&machine, &class);
        metrics.render(None, false);
        metrics.render(Some(&[Arc::new(machine)]), true)
    }

    #[test]
    fn families_have_mcm_names_types_and_help() {
        let text = all_recorded();
        for (name, type_, help) in MCM_FAMILIES {
            let header = format!("# HELP {name} {help}\n# TYPE {name} {type_}\n");
            assert!(text.contains(&header), "missing {header:?} in\n{text}");
        }
        let failed_join = "# HELP mcm_machine_num_failed_join Number of Machines of a MachineDeployment that failed to join the cluster.\n# TYPE mcm_machine_num_failed_join unknown\n";
        assert!(text.contains(failed_join), "{text}");
        assert!(
            !text.contains("mcm_machine_num_failed_join_total"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(text.matches("# EOF").count(), 1);
    }

    #[test]
    fn samples_have_mcm_series_names_labels_and_values() {
        let text = all_recorded();
        let placement = "namespace=\"shoot--a\",machine_deployment=\"pool-a\",instance_type=\"u1.large\",zone=\"z1\"";
        for expected in [
            "mcm_machine_items_total 1".to_owned(),
            "mcm_machine_controller_frozen 1".to_owned(),
            "mcm_machine_current_status_phase{name=\"m-1\",namespace=\"shoot--a\"} 1.0".to_owned(),
            "mcm_machine_info{name=\"m-1\",namespace=\"shoot--a\",createdAt=\"\",spec_provider_id=\"\",spec_class_api_group=\"\",spec_class_kind=\"\",spec_class_name=\"c\",node_name=\"\"} 1.0".to_owned(),
            "mcm_machine_status_condition{name=\"m-1\",namespace=\"shoot--a\",condition=\"Ready\"} 2.0".to_owned(),
            // 7.4s and 2.5s rounded as Go's Duration.Round(time.Second) rounds.
            format!("mcm_machine_create_duration_seconds{{{placement}}} 7.0"),
            format!("mcm_machine_initialize_duration_seconds{{{placement}}} 7.0"),
            format!("mcm_machine_join_duration_seconds{{{placement}}} 7.0"),
            format!("mcm_machine_delete_duration_seconds{{{placement}}} 7.0"),
            "mcm_machine_drain_duration_seconds{namespace=\"shoot--a\",machine_deployment=\"pool-a\"} 3.0".to_owned(),
            format!("mcm_machine_num_failed_join{{{placement}}} 1"),
            "mcm_cloud_api_driver_requests_failed_total{provider=\"kubevirt\",operation=\"CreateMachine\",error_code=\"Internal\"} 1".to_owned(),
            "mcm_cloud_api_driver_request_duration_seconds_bucket{le=\"0.25\",provider=\"kubevirt\",operation=\"CreateMachine\"} 1".to_owned(),
            "mcm_cloud_api_driver_request_duration_seconds_bucket{le=\"0.1\",provider=\"kubevirt\",operation=\"CreateMachine\"} 0".to_owned(),
            "mcm_cloud_api_requests_total{provider=\"kubevirt\",service=\"virtualmachines\"} 2".to_owned(),
            "mcm_cloud_api_requests_failed_total{provider=\"kubevirt\",service=\"virtualmachines\"} 1".to_owned(),
            // Only the successful request is timed, as in MCM.
            "mcm_cloud_api_api_request_duration_seconds_count{provider=\"kubevirt\",service=\"virtualmachines\"} 1".to_owned(),
            "mcm_misc_scrape_failure_total{binary=\"machine-controller-manager-provider\",kind=\"Machine-count\"} 1".to_owned(),
            "promhttp_metric_handler_requests_total{code=\"200\"} 1".to_owned(),
            "promhttp_metric_handler_requests_total{code=\"503\"} 0".to_owned(),
            "promhttp_metric_handler_requests_in_flight 1".to_owned(),
        ] {
            assert!(text.contains(&expected), "missing {expected:?} in\n{text}");
        }
    }

    #[test]
    fn durations_are_recorded_only_as_mcm_records_them() {
        let metrics = Metrics::new();
        let class = class();
        let mut loose = pool_machine("m-2");
        loose.metadata.labels = None;
        metrics.machine_duration(
            MachineDuration::Create,
            &loose,
            Some(&class),
            Duration::from_secs(3),
        );
        metrics.failed_join(&loose, &class);
        let pooled = pool_machine("m-3");
        metrics.machine_duration(MachineDuration::Join, &pooled, Some(&class), Duration::ZERO);
        // A class without a nodeTemplate: MCM would have no placement; the labels stay, empty.
        let bare = MachineClass::default();
        metrics.machine_duration(
            MachineDuration::Delete,
            &pooled,
            Some(&bare),
            Duration::from_millis(400),
        );
        let text = metrics.render(Some(&[]), false);
        assert!(
            !text.contains("mcm_machine_create_duration_seconds{"),
            "{text}"
        );
        assert!(!text.contains("mcm_machine_num_failed_join{"), "{text}");
        assert!(
            !text.contains("mcm_machine_join_duration_seconds{"),
            "{text}"
        );
        assert!(text.contains("mcm_machine_delete_duration_seconds{namespace=\"shoot--a\",machine_deployment=\"pool-a\",instance_type=\"\",zone=\"z1\"} 0.0"), "{text}");
        assert!(!text.contains("mcm_misc_scrape_failure_total{"), "{text}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_have_go_names_types_and_help() {
        let text = Metrics::new().render(Some(&[]), false);
        for (name, type_, help) in [
            (
                "process_cpu_seconds",
                "counter",
                "Total user and system CPU time spent in seconds.",
            ),
            (
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
            ),
            (
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
            ),
            (
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
            ),
            (
                "process_virtual_memory_max_bytes",
                "gauge",
                "Maximum amount of virtual memory available in bytes.",
            ),
            (
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
            ),
            (
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
            ),
        ] {
            let header = format!("# HELP {name} {help}\n# TYPE {name} {type_}\n");
            assert!(text.contains(&header), "missing {header:?} in\n{text}");
        }
        assert!(text.contains("\nprocess_cpu_seconds_total "), "{text}");
    }

    #[test]
    fn reconciles_are_counted_by_outcome_and_failed_stage() {
        let metrics = Metrics::new();
        metrics.reconciled("machine", None);
        metrics.reconciled("machine", Some("creation"));
        metrics.reconciled("machine", Some("creation"));
        let text = metrics.render(Some(&[]), false);
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
