//! The node's HTTP API (axum): the server that serves whatever router the node gives it
//! (health, readiness, metrics, status, the admin API, and the program's own routes), and the
//! helpers and JSON error body every route answers with.

mod error;
mod server;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
pub use error::ApiError;
pub use server::{HttpLimits, HttpServer};

/// Parses a path id, with a 400 that names what was wrong.
pub fn parse_id(what: &str, s: &str) -> Result<u64, ApiError> {
    s.parse::<u64>().ok().filter(|v| *v > 0).ok_or_else(|| {
        ApiError::bad_request(format!("{what} must be a positive integer, not {s:?}"))
    })
}

/// A 200 with a JSON body.
pub fn json_ok(v: serde_json::Value) -> impl IntoResponse {
    (StatusCode::OK, Json(v))
}
