//! `machine-controller`: the KubeVirt provider sidecar of the Gardener
//! machine-controller-manager. Without a subcommand it runs the sidecar with MCM's flags;
//! `render` and `schema` work without a cluster.

mod render;
mod serve_grpc;

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use mcm_machine_controller::Options;
use mcm_machine_controller::runtime::go_flags;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "machine-controller",
    version,
    about,
    args_conflicts_with_subcommands = true,
    // A repeated flag takes its last value, as with Go's pflag: Deployments that append an
    // override to the args (`--leader-elect=false`) keep starting.
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    options: Options,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the VirtualMachine and userdata Secret CreateMachine would write, as YAML.
    Render(render::RenderArgs),
    /// Print the JSON schema of the MachineClass providerSpec.
    Schema,
    /// Serve the driver over gRPC (the cmi.v1 protocol) instead of running the sidecar.
    ServeGrpc(serve_grpc::ServeGrpcArgs),
}

/// `--v` as a tracing filter: klog's 0-3 are info, 4-5 debug, 6+ trace. RUST_LOG wins.
fn init_logging(verbosity: u8, format: &str) {
    let level = match verbosity {
        0..=3 => "info",
        4..=5 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,machine_controller={level},mcm_machine_controller={level},mcm_provider_kubevirt={level},mcm_grpc_driver={level},kube_lease_manager=info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run_sidecar(options: Options, retired_flags: &[String]) -> ExitCode {
    if let Err(errors) = options.validate() {
        for error in errors {
            eprintln!("error: {error}");
        }
        return ExitCode::from(2);
    }
    init_logging(options.logging.verbosity, &options.logging.logging_format);
    for flag in retired_flags {
        tracing::warn!(
            "flag --{flag} is deprecated and ignored: it is klog's, and logs go to stderr here (set --v and --logging-format); remove it"
        );
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    // The driver reports each request to a provider cluster to the metrics /metrics serves.
    let metrics = Arc::new(mcm_machine_controller::runtime::metrics::Metrics::new());
    let driver = Arc::new(mcm_provider_kubevirt::observed_kubevirt_driver(
        metrics.clone(),
    ));
    let run = mcm_machine_controller::runtime::run::run_with_metrics(options, driver, metrics);
    match runtime.block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("error: {error}");
            ExitCode::from(1)
        }
    }
}

/// Subcommands, whose own flags are Rust-style and left as they are.
const SUBCOMMANDS: &[&str] = &["render", "schema", "serve-grpc", "help"];

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let is_sidecar = args
        .get(1)
        .and_then(|a| a.to_str())
        .is_none_or(|a| !SUBCOMMANDS.contains(&a));
    let (args, retired_flags) = if is_sidecar {
        go_flags::normalize(args)
    } else {
        (args, Vec::new())
    };
    let cli = Cli::parse_from(args);
    match cli.command {
        None => run_sidecar(cli.options, &retired_flags),
        Some(Command::Render(args)) => match render::render(&args) {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::from(1)
            }
        },
        Some(Command::ServeGrpc(args)) => {
            init_logging(args.verbosity, &args.logging_format);
            let served = tokio::runtime::Runtime::new()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| runtime.block_on(serve_grpc::serve_grpc(args)));
            match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: {error:#}");
                    ExitCode::from(1)
                }
            }
        }
        Some(Command::Schema) => {
            let schema = mcm_provider_kubevirt::provider_spec::provider_spec_schema();
            match serde_json::to_string_pretty(&schema) {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
