//! `--kube-api-qps`/`--kube-api-burst` on kube's client as client-go applies them: a token
//! bucket of `burst` tokens refilled at `qps`. Measured on tokio's paused clock, so the test
//! asserts the schedule of requests, not the speed of the machine.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use kube::client::ClientBuilder;
use tokio::time::Instant;

use mcm_machine_controller::runtime::token_bucket::TokenBucketLayer;

#[tokio::test(start_paused = true)]
async fn the_burst_goes_at_once_then_one_request_per_token() {
    let server = kube_fake::FakeApiServer::new();
    let client = ClientBuilder::new(server.service(), "default")
        .with_layer(&TokenBucketLayer::new(20.0, 30))
        .build();
    let nodes: Api<Node> = Api::all(client);
    let started = Instant::now();
    for _ in 0..30 {
        nodes.list(&ListParams::default()).await.unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_millis(10),
        "the burst goes at once"
    );
    // Then a token every 50 ms: 31 more take 1.55 s, where a fixed window of 30 per
    // 1.5 s would have held the 61st request until 3 s.
    for _ in 0..31 {
        nodes.list(&ListParams::default()).await.unwrap();
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(1550), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1600), "{elapsed:?}");
    assert_eq!(server.requests().len(), 61);
}

#[tokio::test(start_paused = true)]
async fn an_idle_client_saves_up_to_the_burst_and_no_more() {
    let server = kube_fake::FakeApiServer::new();
    let client = ClientBuilder::new(server.service(), "default")
        .with_layer(&TokenBucketLayer::new(10.0, 5))
        .build();
    let nodes: Api<Node> = Api::all(client);
    for _ in 0..5 {
        nodes.list(&ListParams::default()).await.unwrap();
    }
    // Idle for far longer than the bucket takes to fill: it holds 5 tokens, not 100.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let started = Instant::now();
    for _ in 0..5 {
        nodes.list(&ListParams::default()).await.unwrap();
    }
    assert!(started.elapsed() < Duration::from_millis(10));
    nodes.list(&ListParams::default()).await.unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(150), "{elapsed:?}");
}
