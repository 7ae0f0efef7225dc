//! The agent's local HTTP endpoints, for the gateway's own monitoring: `/healthz` and
//! `/metrics` (Prometheus text format). Bound to loopback by default.

use crate::metrics::Metrics;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::net::TcpListener;

pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(prometheus))
        .with_state(metrics)
}

/// Binds first (so a port clash fails start-up, before anything else runs), then serves.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics))
        .with_graceful_shutdown(shutdown)
        .await
}

/// 200 while the agent runs; the body says whether the uplink is connected and how much is
/// waiting, so a field engineer's `curl` answers "is it forwarding?" at a glance.
async fn healthz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    let now = chrono::Utc::now().timestamp_millis();
    (
        StatusCode::OK,
        Json(serde_json::json!({
            "status": "ok",
            "uplink_connected": m.uplink_connected.load(Relaxed),
            "buffered_events": m.buffer_events.load(Relaxed),
            "buffered_bytes": m.buffer_bytes.load(Relaxed),
            "oldest_unacked_age_s": m.oldest_unacked_age_s(now),
            "sources": m.source_health(),
        })),
    )
}

async fn prometheus(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.render(chrono::Utc::now().timestamp_millis()),
    )
}
