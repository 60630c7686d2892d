//! The HTTP endpoint of a clickpath process: `/healthz`, `/readyz`, `/metrics`.

use crate::health::Health;
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::net::SocketAddr;

#[derive(Clone)]
struct AppState {
    health: Health,
    metrics: Metrics,
}

/// The router, so that tests and embedding programs can mount or call it directly.
pub fn router(health: Health, metrics: Metrics) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { health, metrics })
}

async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    let code = if s.health.is_live() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, s.health.describe())
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let code = if s.health.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, s.health.describe())
}

async fn metrics_text(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

/// Binds `bind` and serves in the background; returns the bound address (useful with port 0).
pub async fn serve(bind: &str, health: Health, metrics: Metrics) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {bind} (http.bind): {e}"))?;
    let addr = listener.local_addr()?;
    let app = router(health, metrics);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped.");
        }
    });
    tracing::info!(%addr, "HTTP endpoint listening.");
    Ok(addr)
}
