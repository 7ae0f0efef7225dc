//! The HTTP API (JSON) for operators, plus `/healthz` and `/metrics`.
//!
//! Every `/api` call needs a bearer token whose SHA-256 is listed in the config; the hub never
//! holds the tokens themselves.

use crate::metrics::Metrics;
use crate::progress::MAX_MISSING_RANGES;
use crate::registry::Registry;
use crate::secret::token_digest;
use crate::store::{EventJson, Reader};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use qyt_proto::SiteId;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tracing::{debug, error};

/// Events per page when the caller does not say, and the most it may ask for.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

#[derive(Clone)]
pub struct ApiState {
    pub registry: Arc<Registry>,
    pub reader: Arc<Mutex<Reader>>,
    pub metrics: Arc<Metrics>,
    /// SHA-256 digests of the accepted tokens, with their holders' names.
    pub tokens: Arc<Vec<([u8; 32], String)>>,
    pub subscribed: watch::Receiver<bool>,
}

pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/api/sites", get(sites))
        .route("/api/sites/{site}/events", get(events))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(api)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(state)
}

#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

async fn authenticate(
    State(st): State<ApiState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing bearer token: send the header `Authorization: Bearer <token>`",
            )
        })?;
    // A plain comparison is safe here: timing could only leak digest bytes, not the token.
    let digest = token_digest(token.trim());
    let holder = st
        .tokens
        .iter()
        .find(|(d, _)| *d == digest)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "token not accepted: its SHA-256 is not among api.tokens in the hub config",
            )
        })?;
    debug!(caller = %holder.1, path = %req.uri().path(), "api call");
    Ok(next.run(req).await)
}

#[derive(Serialize)]
struct SiteView {
    site: SiteId,
    online: bool,
    last_seen: Option<DateTime<Utc>>,
    stored_events: u64,
    contiguous_seq: u64,
    missing: Vec<[u64; 2]>,
    backlog: u64,
    agent_version: Option<String>,
}

async fn sites(State(st): State<ApiState>) -> Json<Vec<SiteView>> {
    Json(st.registry.read(|all| {
        all.iter()
            .map(|(site, s)| SiteView {
                site: site.clone(),
                online: s.online,
                last_seen: s.last_seen,
                stored_events: s.stored_events,
                contiguous_seq: s.progress.contiguous(),
                missing: s.progress.missing(MAX_MISSING_RANGES),
                backlog: s.backlog,
                agent_version: s.agent_version.clone(),
            })
            .collect()
    }))
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    after: u64,
    limit: Option<u32>,
}

async fn events(
    State(st): State<ApiState>,
    Path(site): Path<String>,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<Vec<EventJson>>, ApiError> {
    let Query(page) = page.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "{}: use ?after=SEQ&limit=N with whole numbers",
                e.body_text()
            ),
        )
    })?;
    let site = SiteId::new(&site)
        .ok()
        .filter(|s| st.registry.read(|all| all.contains_key(s)))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("site {site:?} is not declared in the hub config"),
            )
        })?;
    let limit = page.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("limit {limit} is out of range: use 1 to {MAX_LIMIT}"),
        ));
    }
    let reader = st.reader.clone();
    let rows = tokio::task::spawn_blocking(move || {
        let reader = reader.lock().unwrap_or_else(|p| p.into_inner());
        reader.events(&site, page.after, limit)
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("query task failed: {e}"),
        )
    })?
    .map_err(|e| {
        error!(error = %e, "events query failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read events: {e}"),
        )
    })?;
    Ok(Json(rows))
}

/// 200 while the hub is subscribed to the broker, 503 while it is not (it keeps retrying).
async fn healthz(State(st): State<ApiState>) -> Response {
    if *st.subscribed.borrow() {
        Json(serde_json::json!({ "status": "ok" })).into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not subscribed to the MQTT broker (yet): see the hub log",
        )
        .into_response()
    }
}

async fn metrics(State(st): State<ApiState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(st.registry.online_count()),
    )
}
