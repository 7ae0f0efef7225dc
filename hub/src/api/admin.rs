//! Admin: the API-issued tokens (create — the token is shown once —, list, revoke).

use crate::access::{Caller, Issued, Role, TokenInfo};
use crate::api::error::JsonBody;
use crate::api::{ApiError, ApiState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    name: String,
    role: Role,
}

pub async fn list(State(st): State<ApiState>) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    let tokens = st.tokens.clone();
    let list = tokio::task::spawn_blocking(move || tokens.list())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(list))
}

pub async fn create(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    JsonBody(new): JsonBody<NewToken>,
) -> Result<(StatusCode, Json<Issued>), ApiError> {
    let tokens = st.tokens.clone();
    let issued = tokio::task::spawn_blocking(move || tokens.issue(&new.name, new.role, &caller))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok((StatusCode::CREATED, Json(issued)))
}

pub async fn revoke(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    let tokens = st.tokens.clone();
    let info = tokio::task::spawn_blocking(move || tokens.revoke(&id, &caller))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(info))
}
