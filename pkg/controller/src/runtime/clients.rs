//! Clients of the control and target clusters from the sidecar's kubeconfig flags.
//!
//! A kubeconfig whose user has a `tokenFile` (Gardener's generic token kubeconfig) is
//! re-read by kube's client itself, at the latest a minute after the file changes, so
//! rotated tokens are picked up without a restart.

use std::sync::Arc;
use std::time::Duration;

use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::runtime::metrics::Metrics;
use crate::runtime::options::{IN_CLUSTER_CONFIG, Options, TARGET_KUBECONFIG_DISABLED};
use crate::runtime::request_counts::RequestCountLayer;
use crate::runtime::token_bucket::TokenBucketLayer;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{flag}: cannot read kubeconfig {path:?}: {source}")]
    Kubeconfig {
        flag: &'static str,
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("{flag}: in-cluster configuration unavailable (not running in a Pod?): {source}")]
    InCluster {
        flag: &'static str,
        source: kube::config::InClusterError,
    },
    #[error("{flag}: cannot build a client: {source}")]
    Client {
        flag: &'static str,
        source: kube::Error,
    },
    #[error("{what} API server at {url} is unreachable: {source}")]
    Unreachable {
        what: &'static str,
        url: String,
        source: kube::Error,
    },
    #[error("{what} API server at {url} does not serve {resource}: {detail}")]
    MissingResource {
        what: &'static str,
        url: String,
        resource: &'static str,
        detail: String,
    },
}

async fn config_for(flag: &'static str, value: &str) -> Result<Config, ClientError> {
    if value.is_empty() || value == IN_CLUSTER_CONFIG {
        return Config::incluster().map_err(|source| ClientError::InCluster { flag, source });
    }
    let kubeconfig = Kubeconfig::read_from(value).map_err(|source| ClientError::Kubeconfig {
        flag,
        path: value.to_owned(),
        source,
    })?;
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| ClientError::Kubeconfig {
            flag,
            path: value.to_owned(),
            source,
        })
}

/// Bounded waits, so a reconcile cannot hang on a dead API server. The read timeout
/// stays above the API server's 290s watch timeout: a quiet watch sends nothing until then,
/// and a shorter bound would cut every idle watch of the controllers.
fn with_timeouts(mut config: Config) -> Config {
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = Some(Duration::from_secs(295));
    // Count from the request, not from when the pooled connection went idle.
    config.reset_reader_on_write = true;
    config
}

/// The control and target cluster configs, as MCM derives them from the flags:
/// control defaults to the target's kubeconfig; target `none` means no target cluster.
pub async fn configs(options: &Options) -> Result<(Config, Option<Config>), ClientError> {
    let target = if options.clusters.target_kubeconfig == TARGET_KUBECONFIG_DISABLED {
        None
    } else {
        Some(config_for("--target-kubeconfig", &options.clusters.target_kubeconfig).await?)
    };
    let control = match (&target, options.clusters.control_kubeconfig.as_str()) {
        (Some(target), "") => target.clone(),
        (_, value) => config_for("--control-kubeconfig", value).await?,
    };
    Ok((with_timeouts(control), target.map(with_timeouts)))
}

/// A client of one cluster (`cluster`: `control` or `target`), rate-limited by the flags,
/// its requests counted in `metrics`.
///
/// Without kube's default retry, which repeats every 429, 503 and 504 up to 15 times
/// with a backoff growing to minutes: an eviction a PodDisruptionBudget refuses is a 429
/// (without Retry-After), and the drain must see it at once to count it and try again on
/// its own schedule, not stall a worker for minutes. client-go retries only answers with
/// Retry-After; here every such answer fails the reconcile, which is requeued.
pub fn client(
    flag: &'static str,
    cluster: &'static str,
    mut config: Config,
    options: &Options,
    metrics: Arc<Metrics>,
) -> Result<Client, ClientError> {
    config.default_retry = false;
    let builder =
        ClientBuilder::try_from(config).map_err(|source| ClientError::Client { flag, source })?;
    // Counted once sent, so a request waiting for a token is not counted yet.
    Ok(builder
        .with_layer(&RequestCountLayer::new(metrics, cluster))
        .with_layer(&TokenBucketLayer::new(
            options.clusters.kube_api_qps,
            options.clusters.kube_api_burst,
        ))
        .build())
}

/// Fails fast, with the server named, when an API server cannot be reached: retried for
/// `patience` first, since the sidecar may start together with its API server.
pub async fn ensure_reachable(
    what: &'static str,
    client: &Client,
    url: &str,
    patience: Duration,
) -> Result<(), ClientError> {
    let started = std::time::Instant::now();
    loop {
        match client.apiserver_version().await {
            Ok(_) => return Ok(()),
            Err(source) if started.elapsed() >= patience => {
                return Err(ClientError::Unreachable {
                    what,
                    url: url.to_owned(),
                    source,
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::options::Clusters;

    const KUBECONFIG: &str = "apiVersion: v1
kind: Config
current-context: c
clusters:
- name: c
  cluster:
    server: https://127.0.0.1:6443
contexts:
- name: c
  context:
    cluster: c
    user: u
users:
- name: u
  user:
    token: t
";

    /// Watches of a quiet cluster deliver nothing for up to the API server's 290s watch
    /// timeout; a read timeout below it would cut them.
    #[tokio::test]
    async fn read_timeout_outlasts_an_idle_watch_and_connects_fail_fast() {
        let path = std::env::temp_dir().join(format!("mcm-kubeconfig-{}", std::process::id()));
        std::fs::write(&path, KUBECONFIG).unwrap();
        let defaults = Options::default();
        let options = Options {
            clusters: Clusters {
                control_kubeconfig: String::new(),
                target_kubeconfig: path.display().to_string(),
                ..defaults.clusters.clone()
            },
            ..defaults
        };
        let (control, target) = configs(&options).await.unwrap();
        std::fs::remove_file(&path).unwrap();
        for config in [control, target.unwrap()] {
            assert!(config.read_timeout.unwrap() > Duration::from_secs(290));
            assert!(config.reset_reader_on_write);
            assert_eq!(config.connect_timeout, Some(Duration::from_secs(10)));
            assert_eq!(config.cluster_url.to_string(), "https://127.0.0.1:6443/");
        }
    }
}
