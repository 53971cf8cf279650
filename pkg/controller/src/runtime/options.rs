//! The sidecar's command-line flags: the Go sidecar's names, types and defaults
//! (MCM `pkg/util/provider/app/options`), so an MCM Deployment's args work unchanged.

use std::net::IpAddr;
use std::time::Duration;

use clap::{ArgAction, Args};

use crate::util::go_duration::parse_go_duration;

/// `--target-kubeconfig=none`: run without a target cluster (no Nodes, no drain).
pub const TARGET_KUBECONFIG_DISABLED: &str = "none";
/// `--control-kubeconfig=inClusterConfig`: the Pod's service account.
pub const IN_CLUSTER_CONFIG: &str = "inClusterConfig";

/// Every flag the Go sidecar accepts, in groups for `--help`; the flag names are the
/// field names, as in the Go sidecar. Flags with no effect here (profiling, content type,
/// resource lock kind) are accepted so existing Deployments keep starting; see `--help`.
#[derive(Debug, Clone, Args)]
pub struct Options {
    #[command(flatten)]
    pub clusters: Clusters,
    #[command(flatten)]
    pub server: Server,
    #[command(flatten)]
    pub controller: Controller,
    #[command(flatten)]
    pub machines: MachineLifecycle,
    #[command(flatten)]
    pub safety: Safety,
    #[command(flatten)]
    pub leader_election: LeaderElection,
    #[command(flatten)]
    pub logging: Logging,
    #[command(flatten)]
    pub compatibility: Compatibility,
}

/// The control and target clusters and how they are talked to.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Clusters")]
pub struct Clusters {
    /// Filepath to the target cluster's kubeconfig where node objects are expected to join, or "none" if there is no target cluster
    #[arg(long, default_value = "")]
    pub target_kubeconfig: String,
    /// Filepath to the control cluster's kubeconfig where machine objects live, or "inClusterConfig" (default: same as --target-kubeconfig)
    #[arg(long, default_value = "")]
    pub control_kubeconfig: String,
    /// Namespace in the control cluster where the controller looks for Machines, MachineClasses and Secrets
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Content type of requests sent to the API server (accepted for compatibility; JSON is used)
    #[arg(long, default_value = "application/vnd.kubernetes.protobuf")]
    pub kube_api_content_type: String,
    /// QPS to use while talking with the Kubernetes API servers
    #[arg(long, default_value_t = 20.0)]
    pub kube_api_qps: f32,
    /// Burst to use while talking with the Kubernetes API servers
    // MCM's int32, which its validation keeps non-negative.
    #[arg(long, default_value_t = 30, value_parser = non_negative_int32())]
    pub kube_api_burst: u32,
}

/// The HTTP endpoint for /metrics and /healthz.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Server")]
pub struct Server {
    /// The IP address to serve on (set to 0.0.0.0 for all interfaces)
    #[arg(long, default_value = "0.0.0.0")]
    pub address: IpAddr,
    /// The port that the controller's http service (/metrics, /healthz) runs on
    // MCM's flag is an int32 that its validation limits to 1..65535; checked here at parse
    // time so a bad value is a clap error naming the flag.
    #[arg(long, default_value_t = 10259, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
}

/// How the machine controller runs.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Controller")]
pub struct Controller {
    /// The number of machines reconciled concurrently (1-65535)
    // kube-runtime takes the concurrency as a u16 in which 0 means unbounded: MCM's
    // "greater than zero" and the u16 bound are both checked at parse time, with no clamping.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrent_syncs: u16,
    /// Interval between starting controller managers
    #[arg(long, default_value = "0s", value_parser = parse_go_duration)]
    pub controller_start_interval: Duration,
}

/// Defaults for a machine's creation, health, drain and deletion; a Machine's spec may
/// override most of them.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Machine lifecycle")]
pub struct MachineLifecycle {
    /// Timeout used while joining (during creation) of a machine before it is declared Failed
    #[arg(long, default_value = "20m", value_parser = parse_go_duration)]
    pub machine_creation_timeout: Duration,
    /// Timeout used while re-joining (in case of temporary health issues) of a machine before it is declared Failed
    #[arg(long, default_value = "10m", value_parser = parse_go_duration)]
    pub machine_health_timeout: Duration,
    /// Timeout used while draining a machine before deletion, beyond which the machine is force-deleted
    #[arg(long, default_value = "2h", value_parser = parse_go_duration)]
    pub machine_drain_timeout: Duration,
    /// Timeout of a machine's in-place update (from the drain's end), after which it is InPlaceUpdateFailed
    #[arg(long, default_value = "20m", value_parser = parse_go_duration)]
    pub machine_inplace_update_timeout: Duration,
    /// Maximum number of times evicts are attempted on a pod before it is forcibly deleted during drain
    // MCM's int32, which its validation keeps non-negative.
    #[arg(long, default_value_t = 360, value_parser = non_negative_int32())]
    pub machine_max_evict_retries: u32,
    /// Timeout used while waiting for detach of PVs while evicting pods
    #[arg(long, default_value = "2m", value_parser = parse_go_duration)]
    pub machine_pv_detach_timeout: Duration,
    /// Timeout used while waiting for reattach of PVs onto a different node
    #[arg(long, default_value = "90s", value_parser = parse_go_duration)]
    pub machine_pv_reattach_timeout: Duration,
    /// Duration for which a failed machine should be preserved if it has the preserve annotation set
    #[arg(long, default_value = "96h", value_parser = parse_go_duration)]
    pub machine_preserve_timeout: Duration,
    /// Retry period when machine creation fails with ResourceExhausted (0 means 10m)
    #[arg(long, default_value = "10m", value_parser = parse_go_duration)]
    pub resource_exhausted_retry: Duration,
    /// Comma-separated, case-sensitive node conditions which, when True, make a machine unhealthy
    #[arg(
        long,
        default_value = "KernelDeadlock,ReadonlyFilesystem,DiskPressure,NetworkUnavailable",
        value_parser = parse_condition_list
    )]
    pub node_conditions: ConditionList,
    /// Comma-separated list of groups set as the bootstrap token's "auth-extra-groups"
    #[arg(long, default_value = "")]
    pub bootstrap_token_auth_extra_groups: String,
}

/// The safety controller: orphan VMs and API server reachability.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Safety")]
pub struct Safety {
    /// Period of the safety controller's orphan VM collection
    #[arg(long, default_value = "15m", value_parser = parse_go_duration)]
    pub machine_safety_orphan_vms_period: Duration,
    /// Period of the safety controller's API server reachability check
    #[arg(long, default_value = "1m", value_parser = parse_go_duration)]
    pub machine_safety_apiserver_statuscheck_period: Duration,
    /// Time the API servers may be unreachable before the machine controller is frozen
    #[arg(long, default_value = "30s", value_parser = parse_go_duration)]
    pub machine_safety_apiserver_statuscheck_timeout: Duration,
}

/// `--leader-elect*`: one active sidecar per namespace.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Leader election")]
pub struct LeaderElection {
    /// Start a leader election client and gain leadership before running the controllers
    #[arg(long, default_value_t = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub leader_elect: bool,
    /// How long non-leaders wait after the last renewal before taking over the lease
    #[arg(long, default_value = "15s", value_parser = parse_go_duration)]
    pub leader_elect_lease_duration: Duration,
    /// Interval in which the leader must renew the lease before it stops leading
    #[arg(long, default_value = "10s", value_parser = parse_go_duration)]
    pub leader_elect_renew_deadline: Duration,
    /// Interval between attempts to acquire or renew the lease
    #[arg(long, default_value = "2s", value_parser = parse_go_duration)]
    pub leader_elect_retry_period: Duration,
    /// Lock kind for leader election; only "leases" is supported
    #[arg(long, default_value = "leases", value_parser = ["leases", "endpointsleases", "configmapsleases"])]
    pub leader_elect_resource_lock: String,
}

/// klog's flags, mapped onto tracing.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Logging")]
pub struct Logging {
    /// Log verbosity: 0-1 info, 2-3 more info, 4+ debug, 6+ trace
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    pub verbosity: u8,
    /// Per-module verbosity (accepted for compatibility; use RUST_LOG for per-module filters)
    #[arg(long, default_value = "")]
    pub vmodule: String,
    /// Log format: "text" or "json"
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub logging_format: String,
    /// Maximum seconds between log flushes (accepted for compatibility; logs are not buffered)
    #[arg(long, default_value = "5s", value_parser = parse_go_duration)]
    pub log_flush_frequency: Duration,
}

/// Go sidecar flags with no effect here, accepted so existing Deployments keep starting.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Accepted for compatibility")]
pub struct Compatibility {
    /// The provider for cloud services (accepted for compatibility; unused)
    #[arg(long, default_value = "")]
    pub cloud_provider: String,
    /// Resync period of the watches (accepted for compatibility; watches re-list on their own)
    #[arg(long, default_value = "12h", value_parser = parse_go_duration)]
    pub min_resync_period: Duration,
    /// Enable profiling via web interface (accepted for compatibility; no pprof in Rust)
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub profiling: bool,
    /// Enable lock contention profiling (accepted for compatibility)
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub contention_profiling: bool,
}

/// Parses only the defaults.
#[derive(Debug, clap::Parser)]
struct DefaultsOnly {
    #[command(flatten)]
    options: Options,
}

impl Default for Options {
    /// The flag defaults, as a sidecar started without arguments has them.
    fn default() -> Self {
        use clap::Parser;
        DefaultsOnly::parse_from(["machine-controller"]).options
    }
}

/// The cap MCM applies to `--resource-exhausted-retry=0`.
pub const LONG_RETRY: Duration = Duration::from_secs(10 * 60);

impl Options {
    /// The checks MCM's `Validate` makes, with the same meaning; all problems at once.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        // --port, --concurrent-syncs, --kube-api-burst and --machine-max-evict-retries are
        // range-checked by their types at parse time.
        let mut errors = Vec::new();
        if self.compatibility.contention_profiling && !self.compatibility.profiling {
            errors.push(
                "--contention-profiling: cannot be enabled without enabling --profiling".into(),
            );
        }
        if self.clusters.kube_api_qps.is_nan() || self.clusters.kube_api_qps <= 0.0 {
            errors.push(format!(
                "--kube-api-qps: should be greater than zero: got {}",
                self.clusters.kube_api_qps
            ));
        }
        if self.safety.machine_safety_apiserver_statuscheck_period
            < self.safety.machine_safety_apiserver_statuscheck_timeout
        {
            errors.push(
                "--machine-safety-apiserver-statuscheck-period: should not be less than --machine-safety-apiserver-statuscheck-timeout"
                    .into(),
            );
        }
        if self.clusters.control_kubeconfig.is_empty()
            && self.clusters.target_kubeconfig == TARGET_KUBECONFIG_DISABLED
        {
            errors.push(format!(
                "--control-kubeconfig: cannot be empty if --target-kubeconfig={TARGET_KUBECONFIG_DISABLED} is specified"
            ));
        }
        if self.leader_election.leader_elect
            && self.leader_election.leader_elect_renew_deadline
                > self.leader_election.leader_elect_lease_duration
        {
            errors.push(
                "--leader-elect-renew-deadline: must be less than or equal to --leader-elect-lease-duration"
                    .into(),
            );
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Node condition types that make a machine unhealthy when not False.
    pub fn node_condition_types(&self) -> Vec<String> {
        self.machines.node_conditions.names().to_vec()
    }

    /// `--resource-exhausted-retry`, where MCM reads 0 as its long retry.
    pub fn effective_resource_exhausted_retry(&self) -> Duration {
        if self.machines.resource_exhausted_retry.is_zero() {
            LONG_RETRY
        } else {
            self.machines.resource_exhausted_retry
        }
    }
}

/// A `--node-conditions`-style list: comma-separated, blanks dropped.
pub fn split_conditions(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `--node-conditions` split once at parse time. A single value (not a clap list) so that,
/// as with pflag, a repeated flag replaces the list instead of extending it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConditionList(Vec<String>);

impl ConditionList {
    pub fn names(&self) -> &[String] {
        &self.0
    }
}

fn parse_condition_list(list: &str) -> Result<ConditionList, std::convert::Infallible> {
    Ok(ConditionList(split_conditions(list)))
}

/// A Go int32 flag that MCM's validation keeps non-negative.
fn non_negative_int32() -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(0..=i64::from(i32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        options: Options,
    }

    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        let mut argv = vec!["machine-controller"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|cli| cli.options)
    }

    #[test]
    fn defaults_are_mcm_defaults() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.server.port, 10259);
        assert_eq!(o.server.address.to_string(), "0.0.0.0");
        assert_eq!(o.clusters.namespace, "default");
        assert_eq!(o.controller.concurrent_syncs, 50);
        assert_eq!(o.clusters.kube_api_qps, 20.0);
        assert_eq!(o.clusters.kube_api_burst, 30);
        assert_eq!(
            o.machines.machine_creation_timeout,
            Duration::from_secs(20 * 60)
        );
        assert_eq!(
            o.machines.machine_health_timeout,
            Duration::from_secs(10 * 60)
        );
        assert_eq!(
            o.machines.machine_drain_timeout,
            Duration::from_secs(2 * 3600)
        );
        assert_eq!(o.machines.machine_max_evict_retries, 360);
        assert_eq!(
            o.machines.machine_inplace_update_timeout,
            Duration::from_secs(20 * 60)
        );
        assert_eq!(
            o.machines.machine_pv_detach_timeout,
            Duration::from_secs(120)
        );
        assert_eq!(
            o.machines.machine_pv_reattach_timeout,
            Duration::from_secs(90)
        );
        assert_eq!(
            o.safety.machine_safety_orphan_vms_period,
            Duration::from_secs(900)
        );
        assert_eq!(
            o.safety.machine_safety_apiserver_statuscheck_period,
            Duration::from_secs(60)
        );
        assert_eq!(
            o.safety.machine_safety_apiserver_statuscheck_timeout,
            Duration::from_secs(30)
        );
        assert_eq!(
            o.machines.resource_exhausted_retry,
            Duration::from_secs(600)
        );
        assert_eq!(
            o.node_condition_types(),
            [
                "KernelDeadlock",
                "ReadonlyFilesystem",
                "DiskPressure",
                "NetworkUnavailable"
            ]
        );
        assert!(o.leader_election.leader_elect);
        assert_eq!(
            o.leader_election.leader_elect_lease_duration,
            Duration::from_secs(15)
        );
        assert_eq!(
            o.leader_election.leader_elect_renew_deadline,
            Duration::from_secs(10)
        );
        assert_eq!(
            o.leader_election.leader_elect_retry_period,
            Duration::from_secs(2)
        );
        assert_eq!(o.logging.verbosity, 0);
        assert!(o.validate().is_ok());
    }

    /// The args Gardener's machine-controller-manager Deployment passes to the sidecar.
    #[test]
    fn gardener_args_parse() {
        let o = parse(&[
            "--control-kubeconfig=inClusterConfig",
            "--machine-creation-timeout=20m",
            "--machine-drain-timeout=2h0m0s",
            "--machine-health-timeout=10m",
            "--machine-pv-detach-timeout=2m",
            "--machine-safety-apiserver-statuscheck-timeout=30s",
            "--machine-safety-apiserver-statuscheck-period=1m",
            "--machine-safety-orphan-vms-period=30m",
            "--namespace=shoot--dev--kubevirt",
            "--port=10259",
            "--target-kubeconfig=/var/run/secrets/gardener.cloud/shoot/generic-kubeconfig/kubeconfig",
            "--v=3",
            "--leader-elect=true",
            "--concurrent-syncs=30",
            "--kube-api-qps=100",
            "--kube-api-burst=200",
        ])
        .unwrap();
        assert_eq!(o.clusters.control_kubeconfig, IN_CLUSTER_CONFIG);
        assert_eq!(o.clusters.namespace, "shoot--dev--kubevirt");
        assert_eq!(
            o.safety.machine_safety_orphan_vms_period,
            Duration::from_secs(1800)
        );
        assert_eq!(o.machines.machine_drain_timeout, Duration::from_secs(7200));
        assert_eq!(o.logging.verbosity, 3);
        assert_eq!(o.controller.concurrent_syncs, 30);
        assert!(o.validate().is_ok());
    }

    #[test]
    fn booleans_take_pflag_forms() {
        assert!(
            !parse(&["--leader-elect=false"])
                .unwrap()
                .leader_election
                .leader_elect
        );
        assert!(
            parse(&["--leader-elect"])
                .unwrap()
                .leader_election
                .leader_elect
        );
        assert!(parse(&["--profiling"]).unwrap().compatibility.profiling);
        // pflag booleans never consume the next argument.
        assert!(parse(&["--leader-elect", "false"]).is_err());
    }

    #[test]
    fn short_v_and_space_separated_values() {
        let o = parse(&["-v", "4", "--namespace", "ns"]).unwrap();
        assert_eq!(o.logging.verbosity, 4);
        assert_eq!(o.clusters.namespace, "ns");
    }

    #[test]
    fn unknown_flags_and_bad_values_are_rejected_by_name() {
        let error = parse(&["--machine-safety-overshooting-period=1m"]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("--machine-safety-overshooting-period"),
            "{error}"
        );
        let error = parse(&["--machine-creation-timeout=20"]).unwrap_err();
        assert!(
            error.to_string().contains("--machine-creation-timeout"),
            "{error}"
        );
        assert!(parse(&["--address=not-an-ip"]).is_err());
        assert!(parse(&["--logging-format=xml"]).is_err());
        // MCM's validation: the in-place update timeout must not be negative.
        let error = parse(&["--machine-inplace-update-timeout=-1m"]).unwrap_err();
        assert!(
            error.to_string().contains("must not be negative"),
            "{error}"
        );
        assert_eq!(
            parse(&["--machine-inplace-update-timeout=45m"])
                .unwrap()
                .machines
                .machine_inplace_update_timeout,
            Duration::from_secs(45 * 60)
        );
    }

    #[test]
    fn validation_names_each_bad_flag() {
        let o = parse(&[
            "--kube-api-qps=0",
            "--machine-safety-apiserver-statuscheck-period=10s",
            "--target-kubeconfig=none",
            "--contention-profiling",
            "--leader-elect-renew-deadline=20s",
        ])
        .unwrap();
        let errors = o.validate().unwrap_err();
        for flag in [
            "--kube-api-qps",
            "--machine-safety-apiserver-statuscheck-period",
            "--control-kubeconfig",
            "--contention-profiling",
            "--leader-elect-renew-deadline",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(flag)),
                "{flag} missing in {errors:?}"
            );
        }
    }

    /// Out-of-range numbers are refused by clap, naming the flag, before any validation.
    #[test]
    fn numbers_out_of_range_are_parse_errors_naming_the_flag() {
        for (arg, flag) in [
            ("--port=0", "--port"),
            ("--port=65536", "--port"),
            ("--port=-1", "--port"),
            ("--concurrent-syncs=0", "--concurrent-syncs"),
            ("--concurrent-syncs=65536", "--concurrent-syncs"),
            ("--kube-api-burst=-1", "--kube-api-burst"),
            ("--kube-api-burst=2147483648", "--kube-api-burst"),
            (
                "--machine-max-evict-retries=-1",
                "--machine-max-evict-retries",
            ),
        ] {
            let error = parse(&[arg]).unwrap_err();
            assert!(error.to_string().contains(flag), "{arg}: {error}");
        }
        let o = parse(&["--port=65535", "--concurrent-syncs=1", "--kube-api-burst=0"]).unwrap();
        assert_eq!(
            (
                o.server.port,
                o.controller.concurrent_syncs,
                o.clusters.kube_api_burst
            ),
            (65535, 1, 0)
        );
    }

    #[test]
    fn node_conditions_are_split_at_parse_time() {
        let o = parse(&["--node-conditions= Ready,,DiskPressure "]).unwrap();
        assert_eq!(o.node_condition_types(), ["Ready", "DiskPressure"]);
        assert!(
            parse(&["--node-conditions="])
                .unwrap()
                .node_condition_types()
                .is_empty()
        );
    }

    /// `--help` shows each group under its heading, flags after their heading.
    #[test]
    fn help_groups_the_flags() {
        use clap::CommandFactory;
        let help = Cli::command().render_help().to_string();
        for (heading, flag) in [
            ("Clusters:", "--kube-api-burst"),
            ("Server:", "--port"),
            ("Controller:", "--concurrent-syncs"),
            ("Machine lifecycle:", "--node-conditions"),
            ("Safety:", "--machine-safety-orphan-vms-period"),
            ("Leader election:", "--leader-elect-renew-deadline"),
            ("Logging:", "--logging-format"),
            ("Accepted for compatibility:", "--contention-profiling"),
        ] {
            let at = help
                .find(heading)
                .unwrap_or_else(|| panic!("{heading} in {help}"));
            assert!(
                help[at..].contains(flag),
                "{flag} after {heading} in {help}"
            );
        }
    }

    #[test]
    fn zero_resource_exhausted_retry_means_long_retry() {
        let o = parse(&["--resource-exhausted-retry=0"]).unwrap();
        assert_eq!(o.effective_resource_exhausted_retry(), LONG_RETRY);
        let o = parse(&["--resource-exhausted-retry=30s"]).unwrap();
        assert_eq!(
            o.effective_resource_exhausted_retry(),
            Duration::from_secs(30)
        );
    }
}
