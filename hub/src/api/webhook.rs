//! An enterprise's webhook: set (URL and signing secret), show, remove, and its delivery log.

use crate::access::Caller;
use crate::api::error::{query_error, JsonBody};
use crate::api::{limit, ApiError, ApiState};
use crate::store::StoreError;
use crate::webhook::outbox::{self, Delivery, Webhook};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use rusqlite::Connection;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    url: String,
    secret: String,
}

/// Runs `f` on the sender's connection for the caller's enterprise, off the async workers.
async fn with_conn<T: Send + 'static>(
    st: &ApiState,
    caller: &Caller,
    f: impl FnOnce(&mut Connection, &str, &Caller) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let enterprise = caller
        .role
        .enterprise()
        .map(|e| e.to_string())
        .ok_or_else(|| ApiError::new(StatusCode::FORBIDDEN, "webhooks belong to enterprises"))?;
    let conn = st.webhooks.conn();
    let caller = caller.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn, &enterprise, &caller)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(ApiError::from)
}

pub async fn show(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Webhook>, ApiError> {
    with_conn(&st, &caller, |c, e, _| outbox::get(c, e))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no webhook set: PUT /api/webhook with {url, secret}"))
}

pub async fn set(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    JsonBody(new): JsonBody<NewWebhook>,
) -> Result<Json<Webhook>, ApiError> {
    let url = new.url.trim().to_string();
    let valid = (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() <= 2000
        && !url.contains(char::is_whitespace);
    if !valid {
        return Err(ApiError::bad_request(format!(
            "url {url:?} is not an http:// or https:// URL"
        )));
    }
    if new.secret.len() < 16 || new.secret.len() > 256 {
        return Err(ApiError::bad_request(
            "secret must be 16 to 256 characters: it keys the HMAC-SHA256 signature of every delivery",
        ));
    }
    let now = st.supervision.now();
    let hook = with_conn(&st, &caller, move |c, e, by| {
        outbox::set(c, e, &url, &new.secret, by, now)
    })
    .await?;
    st.webhooks.wake();
    Ok(Json(hook))
}

pub async fn remove(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let now = st.supervision.now();
    if with_conn(&st, &caller, move |c, e, by| outbox::delete(c, e, by, now)).await? {
        Ok(Json(serde_json::json!({ "removed": true })))
    } else {
        Err(ApiError::not_found("no webhook set"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    limit: Option<u32>,
}

pub async fn deliveries(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<Page>, QueryRejection>,
) -> Result<Json<Vec<Delivery>>, ApiError> {
    let Query(q) = q.map_err(|e| query_error(e, "use ?limit=N"))?;
    let n = limit(q.limit, 100, 1000)?;
    Ok(Json(
        with_conn(&st, &caller, move |c, e, _| outbox::deliveries(c, e, n)).await?,
    ))
}
