//! `machine-controller serve-grpc`: the KubeVirt driver over gRPC (cmi.v1), for callers
//! that drive machines themselves instead of through MCM's Machine objects.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use mcm_grpc_driver::server::{DEFAULT_MAX_MESSAGE_SIZE, Listener, ServeOptions};
use mcm_grpc_driver::{Listen, serve};
use mcm_machine_controller::go_duration::parse_go_duration;

#[derive(Debug, Args)]
pub struct ServeGrpcArgs {
    /// Where to listen: <ip>:<port>, or unix:<path> for a unix socket
    #[arg(long, default_value = "127.0.0.1:8080", value_parser = |s: &str| s.parse::<Listen>())]
    pub listen: Listen,
    /// The cluster the VMs are labelled with and listed by (the sidecar uses the
    /// MachineClass namespace, which the protocol does not carry)
    #[arg(long, default_value = "default")]
    pub cluster: String,
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

/// SIGTERM (what Kubernetes sends) or Ctrl-C.
async fn terminated() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::warn!("cannot watch SIGTERM ({error}); stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

pub async fn serve_grpc(args: ServeGrpcArgs) -> Result<()> {
    let listener = Listener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {:?}", args.listen))?;
    // Printed for scripts that start the server on port 0.
    eprintln!("serving gRPC on {}", listener.address());
    let options = ServeOptions {
        cluster: args.cluster,
        max_message_size: args.max_message_size,
        shutdown_grace: args.shutdown_grace,
    };
    let driver = Arc::new(mcm_provider_kubevirt::kubevirt_driver());
    serve(listener, driver, options, terminated()).await?;
    Ok(())
}
