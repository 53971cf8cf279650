//! A plain-HTTP forwarding proxy in front of the provider cluster, in the test process.
//!
//! The provider Secret's kubeconfig points to it (`http://127.0.0.1:<port>`, accepted
//! by the provider), and it forwards each request with a kube client of the real cluster,
//! so a scenario sees every request the driver makes. A trap lets a scenario stop the
//! sidecar at an exact point: once a chosen request has been forwarded, nothing else goes
//! through until the scenario releases the proxy (by then it has killed the sidecar), so
//! "killed right after the VM was written" does not depend on timing.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use http::{Method, StatusCode, header};
use kube::Client;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// One request the proxy saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub method: Method,
    /// Path and query, as the driver sent them.
    pub path: String,
    /// The upstream's status, or `None` when the proxy held the request and then refused
    /// it without forwarding (it arrived after the trap sprang).
    pub status: Option<u16>,
}

impl Exchange {
    /// A request that reached the provider cluster and succeeded.
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|status| status < 300)
    }
}

struct Trap {
    method: Method,
    path_suffix: String,
    sprung: oneshot::Sender<Exchange>,
}

struct Shared {
    upstream: Client,
    exchanges: Mutex<Vec<Exchange>>,
    trap: Mutex<Option<Trap>>,
    /// True from the moment the trap springs until [`ProviderProxy::release`].
    holding: watch::Sender<bool>,
}

/// The running proxy; stops when dropped.
pub struct ProviderProxy {
    pub port: u16,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl ProviderProxy {
    /// Listens on a free loopback port and forwards to `upstream`'s cluster.
    pub async fn start(upstream: Client) -> ProviderProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy listener");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            upstream,
            exchanges: Mutex::default(),
            trap: Mutex::default(),
            holding: watch::channel(false).0,
        });
        let router = Router::new().fallback(forward).with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        ProviderProxy {
            port,
            shared,
            server,
        }
    }

    /// A provider kubeconfig for this proxy with `namespace` for the VMs. The token is a
    /// placeholder: the proxy drops it and authenticates as the upstream client.
    pub fn kubeconfig(&self, namespace: &str) -> String {
        format!(
            "apiVersion: v1
kind: Config
current-context: proxy
clusters:
- name: proxy
  cluster:
    server: http://127.0.0.1:{}
contexts:
- name: proxy
  context:
    cluster: proxy
    user: proxy
    namespace: {namespace}
users:
- name: proxy
  user:
    token: e2e-proxy-placeholder
",
            self.port
        )
    }

    /// Arms the trap: after the first successful `method` request whose path (without
    /// query) ends with `path_suffix` has been forwarded, every later request is held and
    /// then refused. The receiver gets that request once it has been answered upstream.
    pub fn hold_after(&self, method: Method, path_suffix: &str) -> oneshot::Receiver<Exchange> {
        let (sprung, receiver) = oneshot::channel();
        *self.shared.trap.lock().unwrap() = Some(Trap {
            method,
            path_suffix: path_suffix.to_owned(),
            sprung,
        });
        receiver
    }

    /// Lets requests through again; those held until now are refused with 503, as their
    /// sender is gone.
    pub fn release(&self) {
        self.shared.holding.send_replace(false);
    }

    /// Every request seen so far, in order of completion.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.shared.exchanges.lock().unwrap().clone()
    }

    /// Successful `method` requests whose path (without query) ends with `path_suffix`.
    pub fn count(&self, method: &Method, path_suffix: &str) -> usize {
        self.exchanges()
            .iter()
            .filter(|e| {
                e.succeeded()
                    && e.method == *method
                    && e.path
                        .split('?')
                        .next()
                        .unwrap_or_default()
                        .ends_with(path_suffix)
            })
            .count()
    }
}

impl Drop for ProviderProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn plain(status: StatusCode, text: String) -> Response {
    Response::builder()
        .status(status)
        .body(Body::from(text))
        .unwrap_or_default()
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let mut holding = shared.holding.subscribe();
    if *holding.borrow_and_update() {
        // Arrived after the trap sprang: it must not reach the cluster. Waiting (rather
        // than refusing at once) keeps the sender from retrying before it is killed.
        let _ = holding.wait_for(|held| !held).await;
        shared.exchanges.lock().unwrap().push(Exchange {
            method: parts.method.clone(),
            path,
            status: None,
        });
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "held by the e2e proxy".into(),
        );
    }

    let body = match to_bytes(body, 64 << 20).await {
        Ok(body) => body,
        Err(error) => return plain(StatusCode::BAD_REQUEST, error.to_string()),
    };
    let mut upstream = http::Request::builder()
        .method(parts.method.clone())
        .uri(&path);
    for (name, value) in &parts.headers {
        // The upstream client sets its own host, credentials and framing.
        if ![
            header::HOST,
            header::AUTHORIZATION,
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::CONNECTION,
        ]
        .contains(name)
        {
            upstream = upstream.header(name, value);
        }
    }
    let upstream = match upstream.body(kube::client::Body::from(body)) {
        Ok(request) => request,
        Err(error) => return plain(StatusCode::BAD_REQUEST, error.to_string()),
    };
    let (status, headers, bytes) = match shared.upstream.send(upstream).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            match body.collect_bytes().await {
                Ok(bytes) => (parts.status, parts.headers, bytes),
                Err(error) => return plain(StatusCode::BAD_GATEWAY, error.to_string()),
            }
        }
        Err(error) => return plain(StatusCode::BAD_GATEWAY, error.to_string()),
    };
    let exchange = Exchange {
        method: parts.method,
        path,
        status: Some(status.as_u16()),
    };
    shared.exchanges.lock().unwrap().push(exchange.clone());
    let sprung = {
        let mut trap = shared.trap.lock().unwrap();
        let hit = trap.as_ref().is_some_and(|t| {
            exchange.succeeded()
                && exchange.method == t.method
                && exchange
                    .path
                    .split('?')
                    .next()
                    .unwrap_or_default()
                    .ends_with(&t.path_suffix)
        });
        if hit {
            // Hold before anyone hears of it, so the sender's next request is held.
            shared.holding.send_replace(true);
            trap.take()
        } else {
            None
        }
    };
    if let Some(trap) = sprung {
        let _ = trap.sprung.send(exchange);
    }

    let mut response = Response::builder().status(status);
    for (name, value) in &headers {
        if ![
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::CONNECTION,
        ]
        .contains(name)
        {
            response = response.header(name, value);
        }
    }
    response.body(Body::from(bytes)).unwrap_or_default()
}
