//! API errors: a status and a message saying what failed and what to do, as `{"error": ...}`.

use crate::access::TokenError;
use crate::store::StoreError;
use crate::supervision::alarm::LifecycleError;
use crate::supervision::engine::EngineError;
use crate::supervision::service::ActionError;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use tracing::error;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
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

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        error!(error = %e, "database error answering an API call");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("database error: {e}; see the hub log"),
        )
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        let status = match &e {
            EngineError::Invalid(_) => StatusCode::BAD_REQUEST,
            EngineError::UnknownTransit(_) | EngineError::UnknownAlarm(_) => StatusCode::NOT_FOUND,
            EngineError::Lifecycle(
                LifecycleError::NoUnit | LifecycleError::NoComment | LifecycleError::ReservedReason,
            ) => StatusCode::BAD_REQUEST,
            EngineError::Conflict(_) | EngineError::Lifecycle(_) => StatusCode::CONFLICT,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> ApiError {
        match e {
            ActionError::Engine(e) => e.into(),
            ActionError::Store(e) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot record the change, nothing was changed: {e}; retry later"),
            ),
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> ApiError {
        let status = match &e {
            TokenError::Invalid(_) => StatusCode::BAD_REQUEST,
            TokenError::Unknown(_) => StatusCode::NOT_FOUND,
            TokenError::NameTaken(_)
            | TokenError::FromConfig(_)
            | TokenError::AlreadyRevoked { .. } => StatusCode::CONFLICT,
            TokenError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

pub fn query_error(e: QueryRejection, usage: &str) -> ApiError {
    ApiError::bad_request(format!("{}: {usage}", e.body_text()))
}

/// A JSON request body whose rejection is an [`ApiError`] naming the problem.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(e) => Err(ApiError::bad_request(match e {
                JsonRejection::MissingJsonContentType(_) => {
                    "send the body as JSON with `Content-Type: application/json`".to_string()
                }
                other => format!("request body: {}", other.body_text()),
            })),
        }
    }
}
