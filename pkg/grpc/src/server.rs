//! Serving the Identity and Machine services: on TCP or a unix socket, with the standard
//! gRPC health service, bounded message sizes and a graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use mcm_provider_kubevirt::Driver;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Notify;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::Server;
use tracing::{info, warn};

use crate::proto::identity_server::IdentityServer;
use crate::proto::machine_server::MachineServer;
use crate::service::{IdentityService, MachineService};

/// Above the largest request MCM's objects make (userData is capped below 1 MiB, a
/// kubeconfig is a few KiB), as gRPC's usual limit.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// Within Kubernetes' default 30s termination grace period.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Where to listen: `<ip>:<port>`, or `unix:<path>` (also `unix://<path>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(rest) = text.strip_prefix("unix:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(format!("{text:?}: a unix socket needs a path"));
            }
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        text.parse().map(Listen::Tcp).map_err(|_| {
            format!("{text:?} is neither <ip>:<port> (127.0.0.1:8080) nor unix:<path>")
        })
    }
}

/// A bound socket, ready to serve.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds `listen`. A socket file left by an earlier run is replaced; any other file
    /// at that path is an error, never removed.
    pub async fn bind(listen: &Listen) -> std::io::Result<Listener> {
        match listen {
            Listen::Tcp(address) => Ok(Listener::Tcp(TcpListener::bind(address).await?)),
            Listen::Unix(path) => {
                if let Ok(existing) = std::fs::symlink_metadata(path) {
                    if !existing.file_type().is_socket() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::AlreadyExists,
                            format!("{} exists and is not a socket", path.display()),
                        ));
                    }
                    std::fs::remove_file(path)?;
                }
                Ok(Listener::Unix(UnixListener::bind(path)?, path.clone()))
            }
        }
    }

    /// Where clients reach it: `127.0.0.1:41234` or `unix:/run/driver.sock`.
    pub fn address(&self) -> String {
        match self {
            Listener::Tcp(listener) => listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            Listener::Unix(_, path) => format!("unix:{}", path.display()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The cluster VMs are labelled with, as the MachineClass namespace is for the sidecar.
    pub cluster: String,
    /// Largest request or response accepted, in bytes.
    pub max_message_size: usize,
    /// How long calls and streams (health watches) may run on after shutdown begins.
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            cluster: "default".to_owned(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("gRPC server failed: {0}")]
pub struct ServeError(#[from] tonic::transport::Error);

/// Serves until `shutdown` completes, then reports NOT_SERVING, stops accepting and lets
/// the calls in flight finish for up to `shutdown_grace` (a health watch never finishes
/// by itself). A unix socket file is removed afterwards.
pub async fn serve<D: Driver + ?Sized + 'static>(
    listener: Listener,
    driver: Arc<D>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<MachineServer<MachineService<D>>>()
        .await;
    health
        .set_serving::<IdentityServer<IdentityService>>()
        .await;
    let limit = options.max_message_size;
    let machine = MachineServer::new(MachineService::new(driver, options.cluster.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let identity = IdentityServer::new(IdentityService)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let begun = Arc::new(Notify::new());
    let begin = begun.clone();
    let stopping = async move {
        shutdown.await;
        info!("gRPC server stopping");
        health
            .set_not_serving::<MachineServer<MachineService<D>>>()
            .await;
        health
            .set_not_serving::<IdentityServer<IdentityService>>()
            .await;
        begin.notify_one();
    };
    let grace_over = async move {
        begun.notified().await;
        tokio::time::sleep(options.shutdown_grace).await;
    };
    info!(address = %listener.address(), cluster = %options.cluster, "gRPC server listening");
    let router = Server::builder()
        .add_service(health_service)
        .add_service(identity)
        .add_service(machine);
    let (served, socket) = match listener {
        Listener::Tcp(listener) => {
            let serving =
                router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), stopping);
            (until_grace_over(serving, grace_over).await, None)
        }
        Listener::Unix(listener, path) => {
            let serving =
                router.serve_with_incoming_shutdown(UnixListenerStream::new(listener), stopping);
            (until_grace_over(serving, grace_over).await, Some(path))
        }
    };
    if let Some(path) = socket {
        let _ = std::fs::remove_file(path);
    }
    served
}

async fn until_grace_over(
    serving: impl Future<Output = Result<(), tonic::transport::Error>>,
    grace_over: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    tokio::select! {
        served = serving => Ok(served?),
        () = grace_over => {
            warn!("gRPC calls still open when the shutdown grace ended; closing them");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse() {
        assert_eq!(
            "127.0.0.1:8080".parse::<Listen>(),
            Ok(Listen::Tcp("127.0.0.1:8080".parse().unwrap()))
        );
        assert_eq!(
            "unix:/run/d.sock".parse::<Listen>(),
            Ok(Listen::Unix("/run/d.sock".into()))
        );
        assert_eq!(
            "unix:///run/d.sock".parse::<Listen>(),
            Ok(Listen::Unix("/run/d.sock".into()))
        );
        assert!("unix:".parse::<Listen>().is_err());
        let error = "localhost".parse::<Listen>().unwrap_err();
        assert!(error.contains("neither <ip>:<port>"), "{error}");
    }
}
