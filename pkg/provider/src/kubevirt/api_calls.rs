//! Every request to a provider cluster counted and timed for MCM's cloud API metrics
//! (`mcm_cloud_api_requests_total`, `_requests_failed_total`,
//! `_api_request_duration_seconds`, by provider and service). The provider's "cloud API"
//! is the KubeVirt cluster's API server; a service is the resource a request is about
//! (`virtualmachines`, `datavolumes`, `secrets`, ...). A tower layer on each client.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use http::{Request, Response};
use tower::{Layer, Service};

/// Receives one record per request to a provider cluster.
pub trait ApiCallObserver: Send + Sync {
    /// `failed`: no answer, or an error status other than 404 and 409, which the
    /// retry-safe calls expect (a VM not there yet, a Secret an earlier attempt created).
    /// `elapsed` until the response head arrived.
    fn observe(&self, service: &str, elapsed: Duration, failed: bool);
}

/// The resource a Kubernetes API path is about: the plural after the version (and after
/// `namespaces/<ns>/` when namespaced); the group version itself for discovery requests.
pub fn service_of(path: &str) -> &str {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return "other",
    };
    match rest {
        ["namespaces", _namespace, resource, ..] => resource,
        [resource, ..] => resource,
        [] => "discovery",
    }
}

#[derive(Clone)]
pub struct ObservedLayer {
    observer: Arc<dyn ApiCallObserver>,
}

impl ObservedLayer {
    pub fn new(observer: Arc<dyn ApiCallObserver>) -> Self {
        ObservedLayer { observer }
    }
}

impl<S> Layer<S> for ObservedLayer {
    type Service = Observed<S>;
    fn layer(&self, inner: S) -> Observed<S> {
        Observed {
            inner,
            observer: self.observer.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Observed<S> {
    inner: S,
    observer: Arc<dyn ApiCallObserver>,
}

impl<S, B, RB> Service<Request<B>> for Observed<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<RB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let service = service_of(request.uri().path()).to_owned();
        let observer = self.observer.clone();
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            let failed = match &result {
                Ok(response) => {
                    let status = response.status();
                    !(status.is_success()
                        || status == http::StatusCode::NOT_FOUND
                        || status == http::StatusCode::CONFLICT)
                }
                Err(_) => true,
            };
            observer.observe(&service, started.elapsed(), failed);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn the_service_is_the_resource_of_the_path() {
        let cases = [
            (
                "/apis/kubevirt.io/v1/namespaces/vms/virtualmachines/m-1",
                "virtualmachines",
            ),
            (
                "/apis/cdi.kubevirt.io/v1beta1/namespaces/vms/datavolumes",
                "datavolumes",
            ),
            ("/api/v1/namespaces/vms/secrets/userdata-m-1", "secrets"),
            ("/api/v1/namespaces/vms", "namespaces"),
            ("/apis/kubevirt.io/v1/virtualmachines", "virtualmachines"),
            ("/apis/kubevirt.io/v1", "discovery"),
            ("/version", "other"),
        ];
        for (path, service) in cases {
            assert_eq!(service_of(path), service, "{path}");
        }
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, bool)>>);

    impl ApiCallObserver for Recorder {
        fn observe(&self, service: &str, _elapsed: Duration, failed: bool) {
            self.0.lock().unwrap().push((service.to_owned(), failed));
        }
    }

    #[tokio::test]
    async fn each_request_is_recorded_with_its_outcome() {
        let recorder = Arc::new(Recorder::default());
        let (mock, mut handle) = tower_test::mock::pair::<Request<()>, Response<()>>();
        let mut service = ObservedLayer::new(recorder.clone()).layer(mock);
        let answers = tokio::spawn(async move {
            for status in [200, 404, 403, 500] {
                let (_, reply) = handle.next_request().await.unwrap();
                reply.send_response(Response::builder().status(status).body(()).unwrap());
            }
        });
        let paths = [
            "/api/v1/namespaces/vms/secrets/a",
            "/apis/kubevirt.io/v1/namespaces/vms/virtualmachines/m",
            "/apis/cdi.kubevirt.io/v1beta1/namespaces/vms/datavolumes",
            "/api/v1/namespaces/vms/secrets",
        ];
        for path in paths {
            std::future::poll_fn(|cx| service.poll_ready(cx))
                .await
                .unwrap();
            let request = Request::builder().uri(path).body(()).unwrap();
            service.call(request).await.unwrap();
        }
        answers.await.unwrap();
        assert_eq!(
            *recorder.0.lock().unwrap(),
            [
                ("secrets".to_owned(), false),
                ("virtualmachines".to_owned(), false),
                ("datavolumes".to_owned(), true),
                ("secrets".to_owned(), true),
            ]
        );
    }
}
