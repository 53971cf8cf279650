//! The sidecar's HTTP endpoint on `--address:--port`: `/healthz` and `/metrics`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use kube::runtime::reflector::Store;

use mcm_provider_kubevirt::mcm::Machine;

use crate::context::Context;

#[derive(Clone)]
struct Shared {
    ctx: Arc<Context>,
    machines: Option<Store<Machine>>,
}

async fn healthz() -> &'static str {
    "ok"
}

async fn metrics(State(shared): State<Shared>) -> impl IntoResponse {
    let machines = shared.machines.as_ref().map(Store::state);
    let text = shared
        .ctx
        .metrics
        .render(machines.as_deref(), shared.ctx.is_frozen());
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

pub fn router(ctx: Arc<Context>, machines: Option<Store<Machine>>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(Shared { ctx, machines })
}
