//! The OpenAPI 3.1 description of this API, served at `/api/openapi.json`.
//!
//! Written by hand (`openapi.json` beside this file) rather than generated from annotations:
//! the router is a plain table (`routes()` in the parent module), and a test checks the document against it
//! both ways — every route documented with the roles it admits, nothing documented that the
//! router does not serve — so the two cannot drift apart unnoticed.

use axum::http::header;
use axum::response::IntoResponse;

const DOCUMENT: &str = include_str!("openapi.json");

pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}
