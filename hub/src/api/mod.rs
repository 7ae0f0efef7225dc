//! The HTTP API (JSON) for the command centre, the declaration system, enterprises and admins,
//! plus `/healthz`, `/metrics` and the operators' page at `/`.
//!
//! Every route is declared once, in `routes()` ([`route_table`] lists it), with the roles it admits; the router is built
//! from that table, so the access rules, the role tests and the OpenAPI check all read the same
//! list. A missing or unknown token answers 401, a role not admitted 403; resources of another
//! enterprise answer 404, as if they did not exist.

mod admin;
mod alarms;
mod audit;
mod error;
mod openapi;
mod page;
mod sites;
mod stream;
mod transits;
mod webhook;

use crate::access::{Caller, RoleKind, TokenBook};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::Reader;
use crate::supervision::service::Supervision;
use crate::webhook::sender::Sender;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::{Json, Router};
pub use error::ApiError;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tracing::{debug, info_span, Instrument};

#[derive(Clone)]
pub struct ApiState {
    pub registry: Arc<Registry>,
    pub reader: Arc<Mutex<Reader>>,
    pub metrics: Arc<Metrics>,
    pub tokens: Arc<TokenBook>,
    pub supervision: Supervision,
    pub subscribed: watch::Receiver<bool>,
    /// Turns true when the hub stops; ends the live streams, which would otherwise hold the
    /// server's graceful shutdown forever.
    pub stop: watch::Receiver<bool>,
    pub webhooks: Sender,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// No token needed (probes, metrics, the API description, the operators' page).
    Open,
    /// A valid token of one of these roles.
    Roles(&'static [RoleKind]),
}

/// One route of the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    #[serde(serialize_with = "method_name")]
    pub method: Method,
    /// In axum's syntax, e.g. `/api/transits/{id}`.
    pub path: &'static str,
    pub access: Access,
}

fn method_name<S: serde::Serializer>(m: &Method, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(m.as_str())
}

const ADMIN: &[RoleKind] = &[RoleKind::Admin];
const OPERATOR: &[RoleKind] = &[RoleKind::Operator];
const STAFF: &[RoleKind] = &[RoleKind::Admin, RoleKind::Operator];
const SUPERVISION: &[RoleKind] = &[RoleKind::Operator, RoleKind::Enterprise];
const ENTERPRISE: &[RoleKind] = &[RoleKind::Enterprise];

/// Every route with its handler. The single source of the router.
fn routes() -> Vec<(Route, MethodRouter<ApiState>)> {
    use Access::{Open, Roles};
    let r = |method: Method, path: &'static str, access: Access| Route {
        method,
        path,
        access,
    };
    vec![
        (r(Method::GET, "/", Open), get(page::operators)),
        (r(Method::GET, "/healthz", Open), get(healthz)),
        (r(Method::GET, "/metrics", Open), get(metrics)),
        (
            r(Method::GET, "/api/openapi.json", Open),
            get(openapi::document),
        ),
        (r(Method::GET, "/api/sites", Roles(STAFF)), get(sites::list)),
        (
            r(Method::GET, "/api/sites/{site}/events", Roles(STAFF)),
            get(sites::events),
        ),
        (
            r(Method::GET, "/api/admin/tokens", Roles(ADMIN)),
            get(admin::list),
        ),
        (
            r(Method::POST, "/api/admin/tokens", Roles(ADMIN)),
            post(admin::create),
        ),
        (
            r(Method::DELETE, "/api/admin/tokens/{id}", Roles(ADMIN)),
            delete(admin::revoke),
        ),
        (
            r(Method::POST, "/api/transits", Roles(OPERATOR)),
            post(transits::declare),
        ),
        (
            r(Method::GET, "/api/transits", Roles(SUPERVISION)),
            get(transits::list),
        ),
        (
            r(Method::GET, "/api/transits/{id}", Roles(SUPERVISION)),
            get(transits::detail),
        ),
        (
            r(Method::POST, "/api/transits/{id}/reseal", Roles(OPERATOR)),
            post(transits::reseal),
        ),
        (
            r(Method::POST, "/api/transits/{id}/release", Roles(OPERATOR)),
            post(transits::release),
        ),
        (
            r(Method::GET, "/api/alarms", Roles(SUPERVISION)),
            get(alarms::list),
        ),
        (
            r(Method::GET, "/api/alarms/{id}", Roles(SUPERVISION)),
            get(alarms::detail),
        ),
        (
            r(
                Method::POST,
                "/api/alarms/{id}/acknowledge",
                Roles(OPERATOR),
            ),
            post(alarms::acknowledge),
        ),
        (
            r(Method::POST, "/api/alarms/{id}/dispatch", Roles(OPERATOR)),
            post(alarms::dispatch),
        ),
        (
            r(Method::POST, "/api/alarms/{id}/close", Roles(OPERATOR)),
            post(alarms::close),
        ),
        (r(Method::GET, "/api/audit", Roles(STAFF)), get(audit::list)),
        (
            r(Method::GET, "/api/stream", Roles(SUPERVISION)),
            get(stream::events),
        ),
        (
            r(Method::GET, "/api/webhook", Roles(ENTERPRISE)),
            get(webhook::show),
        ),
        (
            r(Method::PUT, "/api/webhook", Roles(ENTERPRISE)),
            put(webhook::set),
        ),
        (
            r(Method::DELETE, "/api/webhook", Roles(ENTERPRISE)),
            delete(webhook::remove),
        ),
        (
            r(Method::GET, "/api/webhook/deliveries", Roles(ENTERPRISE)),
            get(webhook::deliveries),
        ),
    ]
}

/// The routes of the API and who may call them (the router is built from this list).
pub fn route_table() -> Vec<Route> {
    routes().into_iter().map(|(r, _)| r).collect()
}

pub fn router(state: ApiState) -> Router {
    let mut router = Router::new();
    for (route, handler) in routes() {
        let handler = match route.access {
            Access::Open => handler,
            Access::Roles(roles) => handler.route_layer(middleware::from_fn_with_state(
                (state.clone(), roles),
                guard,
            )),
        };
        router = router.route(route.path, handler);
    }
    router
        .fallback(|| async { ApiError::not_found("no such endpoint: see /api/openapi.json") })
        .with_state(state)
}

/// Authenticates the bearer token, checks its role against the route's, and hands the caller
/// to the handler.
async fn guard(
    State((st, roles)): State<(ApiState, &'static [RoleKind])>,
    mut req: Request,
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
    let caller = st.tokens.caller(token.trim()).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "token not accepted: it is not in hub.toml's api.tokens nor issued by an admin (or it was revoked)",
        )
    })?;
    if !roles.contains(&caller.role.kind()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "role {} may not {} {}: this needs {}",
                caller.role,
                req.method(),
                req.uri().path(),
                roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        ));
    }
    let span = info_span!("api", caller = %caller.name, role = %caller.role, method = %req.method(), path = %req.uri().path());
    debug!(parent: &span, "api call");
    req.extensions_mut().insert::<Caller>(caller);
    Ok(next.run(req).instrument(span).await)
}

/// Runs a read on the API's database connection, off the async workers.
async fn read<T: Send + 'static>(
    st: &ApiState,
    f: impl FnOnce(&rusqlite::Connection) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let reader = st.reader.clone();
    tokio::task::spawn_blocking(move || {
        let reader = reader.lock().unwrap_or_else(|p| p.into_inner());
        f(reader.conn())
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("query task failed: {e}"),
        )
    })?
    .map_err(ApiError::from)
}

/// `limit` of a list request: `default` when absent, refused outside 1..=`max`.
fn limit(asked: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    let limit = asked.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::bad_request(format!(
            "limit {limit} is out of range: use 1 to {max}"
        )))
    }
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
