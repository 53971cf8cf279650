//! Every request of the control and target clients counted by cluster, verb and resource
//! (`mcm_machine_controller_api_requests_total`): what the sidecar costs an API server,
//! which the API server's own metrics cannot tell apart when several clients share it.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request};
use tower::{Layer, Service};

use mcm_provider_kubevirt::kubevirt::api_calls::service_of;

use crate::runtime::metrics::Metrics;

/// The API verb of a request, as the API server's audit log and metrics name it.
pub fn verb_of(method: &Method, path: &str, query: Option<&str>) -> &'static str {
    let watch = query.is_some_and(|q| q.split('&').any(|pair| pair == "watch=true"));
    match *method {
        Method::GET if watch => "watch",
        Method::GET if names_an_object(path) => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if names_an_object(path) => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    }
}

/// Whether the path goes beyond the collection: `.../<resource>/<name>[/<subresource>]`.
fn names_an_object(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return false,
    };
    match rest {
        ["namespaces", _namespace, _resource, _name, ..] => true,
        ["namespaces", _namespace] => true,
        ["namespaces", ..] => false,
        [_resource, _name, ..] => true,
        _ => false,
    }
}

#[derive(Clone)]
pub struct RequestCountLayer {
    metrics: Arc<Metrics>,
    cluster: &'static str,
}

impl RequestCountLayer {
    /// `cluster`: `control` or `target`.
    pub fn new(metrics: Arc<Metrics>, cluster: &'static str) -> Self {
        RequestCountLayer { metrics, cluster }
    }
}

impl<S> Layer<S> for RequestCountLayer {
    type Service = RequestCount<S>;

    fn layer(&self, inner: S) -> RequestCount<S> {
        RequestCount {
            inner,
            layer: self.clone(),
        }
    }
}

pub struct RequestCount<S> {
    inner: S,
    layer: RequestCountLayer,
}

impl<S, B> Service<Request<B>> for RequestCount<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> S::Future {
        let uri = request.uri();
        let verb = verb_of(request.method(), uri.path(), uri.query());
        self.layer
            .metrics
            .api_request(self.layer.cluster, verb, service_of(uri.path()));
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_follow_the_api_servers_names() {
        let cases = [
            (
                Method::GET,
                "/apis/machine.sapcloud.io/v1alpha1/namespaces/ns/machines/m1",
                None,
                "get",
            ),
            (
                Method::GET,
                "/apis/machine.sapcloud.io/v1alpha1/namespaces/ns/machines",
                Some("limit=500"),
                "list",
            ),
            (
                Method::GET,
                "/apis/machine.sapcloud.io/v1alpha1/namespaces/ns/machines",
                Some("watch=true&resourceVersion=5"),
                "watch",
            ),
            (Method::GET, "/api/v1/nodes/n1", None, "get"),
            (Method::GET, "/api/v1/nodes", None, "list"),
            (Method::GET, "/api/v1/namespaces/ns", None, "get"),
            (
                Method::PUT,
                "/apis/machine.sapcloud.io/v1alpha1/namespaces/ns/machines/m1/status",
                None,
                "update",
            ),
            (Method::PATCH, "/api/v1/nodes/n1", None, "patch"),
            (
                Method::POST,
                "/api/v1/namespaces/ns/pods/p/eviction",
                None,
                "create",
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/ns/secrets/s",
                None,
                "delete",
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/ns/secrets",
                None,
                "deletecollection",
            ),
        ];
        for (method, path, query, verb) in cases {
            assert_eq!(verb_of(&method, path, query), verb, "{method} {path}");
        }
    }
}
