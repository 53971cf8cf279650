//! `--kube-api-qps`/`--kube-api-burst` on kube's client: stands for client-go's token
//! bucket in front of a real API server. Measured on tokio's paused clock, so the test
//! asserts the schedule of requests, not the speed of the machine.

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use kube::client::ClientBuilder;

use mcm_machine_controller::runtime::clients::rate_limit;

#[tokio::test(start_paused = true)]
async fn requests_beyond_the_burst_wait_for_the_rate() {
    let server = kube_fake::FakeApiServer::new();
    let client = ClientBuilder::new(server.service(), "default")
        .with_layer(&rate_limit(20.0, 30))
        .build();
    let nodes: Api<Node> = Api::all(client);
    let started = tokio::time::Instant::now();
    for _ in 0..30 {
        nodes.list(&ListParams::default()).await.unwrap();
    }
    assert!(
        started.elapsed() < std::time::Duration::from_millis(10),
        "the burst goes at once"
    );
    for _ in 0..31 {
        nodes.list(&ListParams::default()).await.unwrap();
    }
    // 61 requests at 30 per 1.5s: the third window opens after 3s.
    let elapsed = started.elapsed();
    assert!(elapsed >= std::time::Duration::from_secs(3), "{elapsed:?}");
    assert!(elapsed < std::time::Duration::from_secs(4), "{elapsed:?}");
    assert_eq!(server.requests().len(), 61);
}
