//! The sidecar's clients as `runtime::clients::client` builds them, over HTTP (the
//! in-process fake client lacks the layers kube's builder adds): a 429 reaches the caller
//! with the first answer. Found on a real API server, where a PodDisruptionBudget's refusal
//! of an eviction (429, no Retry-After) was retried by kube's default retry policy for
//! minutes inside one drain pass, so the drain never saw the refusal.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, EvictParams};
use kube::{Config, Error};
use serde_json::json;

use mcm_machine_controller::runtime::clients::client;
use mcm_machine_controller::runtime::metrics::Metrics;
use mcm_machine_controller::runtime::options::Options;

#[tokio::test]
async fn a_refused_eviction_is_answered_at_once() {
    let server = kube_fake::FakeApiServer::new();
    server.insert(
        "/api/v1/namespaces/app/pods",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "app"},
               "spec": {"nodeName": "n1", "containers": []}, "status": {"phase": "Running"}}),
    );
    server.set_fault(|request, _| {
        request.path.ends_with("/eviction").then(|| {
            kube_fake::Fault::Status(
                429,
                "Cannot evict pod as it would violate the pod's disruption budget.".into(),
            )
        })
    });
    let url = server.listen().await.unwrap();
    let config = Config::new(url.parse().unwrap());
    let metrics = std::sync::Arc::new(Metrics::new());
    let client = client(
        "--target-kubeconfig",
        "target",
        config,
        &Options::default(),
        metrics.clone(),
    )
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "app");

    // Retried, the 16 attempts would take minutes; one answer takes milliseconds.
    let answer = tokio::time::timeout(
        Duration::from_secs(20),
        pods.evict("web", &EvictParams::default()),
    )
    .await
    .expect("the refusal is not answered at once: the client retries it");
    match answer {
        Err(Error::Api(status)) => assert_eq!(status.code, 429, "{status:?}"),
        other => panic!("expected the 429, got {other:?}"),
    }
    let evictions = server
        .request_lines()
        .into_iter()
        .filter(|line| line.ends_with("/eviction"))
        .count();
    assert_eq!(evictions, 1, "{:?}", server.request_lines());
    // The sidecar's own count of what it sent: one eviction, by cluster, verb and resource.
    let counted = metrics.render(None, false);
    assert!(
        counted.contains(
            r#"mcm_machine_controller_api_requests_total{cluster="target",verb="create",resource="pods"} 1"#
        ),
        "{counted}"
    );
    assert!(server.get("/api/v1/namespaces/app/pods", "web").is_some());
}
