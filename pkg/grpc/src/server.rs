//! Serving the Identity and Machine services: on TCP or a unix socket, with the standard
//! gRPC health service, bounded message sizes and a graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use mcm_provider_kubevirt::Driver;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Notify;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::Server;
use tonic_health::ServingStatus;
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
    Unix(UnixListener, SocketFile),
}

/// The socket file this server made, told apart from one a later server made at the same
/// path by its device and inode.
pub struct SocketFile {
    path: PathBuf,
    identity: Option<(u64, u64)>,
}

fn file_identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

impl SocketFile {
    /// Removes the file if it is still this server's.
    fn remove(&self) {
        if self.identity.is_some() && file_identity(&self.path) == self.identity {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Listener {
    /// Binds `listen`. A socket file left by a server that is gone is replaced; a socket a
    /// server still answers on, and any other file, are errors and left alone.
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
                    if std::os::unix::net::UnixStream::connect(path).is_ok() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::AddrInUse,
                            format!("a server is listening on {} already", path.display()),
                        ));
                    }
                    std::fs::remove_file(path)?;
                }
                let listener = UnixListener::bind(path)?;
                let socket = SocketFile {
                    path: path.clone(),
                    identity: file_identity(path),
                };
                Ok(Listener::Unix(listener, socket))
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
            Listener::Unix(_, socket) => format!("unix:{}", socket.path.display()),
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

impl ServeOptions {
    /// The usual limits; the cluster has no default, as it decides which VMs are ours.
    pub fn new(cluster: impl Into<String>) -> Self {
        ServeOptions {
            cluster: cluster.into(),
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
/// by itself). Returns then; connections still open run on in their tasks until the
/// runtime ends, which for the binary is the moment it exits. The unix socket file is
/// removed, if it is still this server's.
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
        health
            .set_service_status("", ServingStatus::NotServing)
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
        Listener::Unix(listener, socket) => {
            let serving =
                router.serve_with_incoming_shutdown(UnixListenerStream::new(listener), stopping);
            (until_grace_over(serving, grace_over).await, Some(socket))
        }
    };
    if let Some(socket) = socket {
        socket.remove();
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
            warn!("gRPC calls still open when the shutdown grace ended; not waiting for them");
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
