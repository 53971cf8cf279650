//! `machine-controller serve-grpc`: the KubeVirt driver over gRPC (cmi.v1), for callers
//! that drive machines themselves instead of through MCM's Machine objects.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use mcm_grpc_driver::server::{DEFAULT_MAX_MESSAGE_SIZE, Listener, ServeOptions};
use mcm_grpc_driver::{Listen, serve};
use mcm_machine_controller::util::go_duration::parse_go_duration;

#[derive(Debug, Args)]
pub struct ServeGrpcArgs {
    /// Where to listen: <ip>:<port>, or unix:<path> for a unix socket
    #[arg(long, default_value = "127.0.0.1:8080", value_parser = |s: &str| s.parse::<Listen>())]
    pub listen: Listen,
    /// The cluster the VMs are labelled with, owned by and listed by: what the sidecar
    /// takes from the MachineClass namespace, which the protocol does not carry
    #[arg(long)]
    pub cluster: String,
    /// Accept clients on a non-loopback address. The service has no authentication, and a
    /// client chooses the kubeconfig (and so the servers) the driver talks to
    #[arg(long)]
    pub allow_remote_clients: bool,
    /// Largest request or response, in bytes
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE_SIZE)]
    pub max_message_size: usize,
    /// How long calls in flight may finish after SIGTERM or Ctrl-C
    #[arg(long, default_value = "10s", value_parser = parse_go_duration)]
    pub shutdown_grace: Duration,
    /// Log verbosity: 0-3 info, 4-5 debug, 6+ trace
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    pub verbosity: u8,
    /// Log format: "text" or "json"
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub logging_format: String,
}

/// SIGTERM (what Kubernetes sends) or Ctrl-C, watched from the moment this is called.
fn terminated() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

pub async fn serve_grpc(args: ServeGrpcArgs) -> Result<()> {
    if let Listen::Tcp(address) = &args.listen
        && !address.ip().is_loopback()
        && !args.allow_remote_clients
    {
        anyhow::bail!(
            "--listen {address}: the gRPC service has no authentication; listen on a loopback address or a unix socket, or pass --allow-remote-clients"
        );
    }
    if args.cluster.is_empty() {
        anyhow::bail!("--cluster cannot be empty: it names the cluster whose VMs are served");
    }
    // Before the address is announced, so a supervisor's early SIGTERM is a clean stop.
    let shutdown = terminated()?;
    let listener = Listener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {:?}", args.listen))?;
    // Printed for scripts that start the server on port 0.
    eprintln!("serving gRPC on {}", listener.address());
    let mut options = ServeOptions::new(args.cluster);
    options.max_message_size = args.max_message_size;
    options.shutdown_grace = args.shutdown_grace;
    let driver = Arc::new(mcm_provider_kubevirt::kubevirt_driver());
    serve(listener, driver, options, shutdown).await?;
    Ok(())
}
