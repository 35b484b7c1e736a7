//! `/v1/kv/{group}/{key}`: values are raw bodies; errors are JSON.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use crate::http::{json_ok, parse_id, ApiError};
use crate::kv::ops::{Kv, KvError};
use crate::node::ReadMode;

impl From<KvError> for ApiError {
    fn from(e: KvError) -> Self {
        match e {
            KvError::BadRequest(m) => ApiError::bad_request(m),
            KvError::TooLarge(m) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", m),
            KvError::Request(e) => e.into(),
            KvError::Read(e) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage",
                format!("cannot read the state: {e}"),
            ),
        }
    }
}

/// The KV routes.
pub fn routes(kv: Kv) -> Router {
    // Bodies beyond the value limit are refused by the handler with a JSON 413; this outer
    // limit only stops absurd uploads from being buffered at all.
    let body_limit = kv.config().max_value_bytes.saturating_mul(2).max(1 << 20);
    Router::new()
        .route(
            "/v1/kv/{group}/",
            get(empty_key).put(empty_key).delete(empty_key),
        )
        .route("/v1/kv/{group}/{*key}", get(read).put(put).delete(delete))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(kv)
}

async fn empty_key() -> ApiError {
    ApiError::bad_request("key must not be empty")
}

async fn put(
    State(kv): State<Kv>,
    Path((group, key)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let group = parse_id("group", &group)?;
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "value exceeds max_value_bytes ({})",
                    kv.config().max_value_bytes
                ),
            )
        } else {
            ApiError::bad_request(r.body_text())
        }
    })?;
    let index = kv.put(group, key, body.to_vec()).await?;
    Ok(json_ok(json!({ "index": index })))
}

async fn read(
    State(kv): State<Kv>,
    Path((group, key)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let group = parse_id("group", &group)?;
    let mode = match q.get("read") {
        None => ReadMode::Linearizable,
        Some(m) => ReadMode::parse(m).ok_or_else(|| {
            ApiError::bad_request(format!(
                "read must be linearizable, lease or local, not {m:?}"
            ))
        })?,
    };
    match kv.get(group, &key, mode).await? {
        Some(v) => Ok((
            StatusCode::OK,
            [("content-type", "application/octet-stream")],
            v,
        )
            .into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "key_not_found",
            format!("key {key:?} not found in group {group}"),
        )),
    }
}

async fn delete(
    State(kv): State<Kv>,
    Path((group, key)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let group = parse_id("group", &group)?;
    let (index, existed) = kv.delete(group, key).await?;
    Ok(json_ok(json!({ "index": index, "existed": existed })))
}
