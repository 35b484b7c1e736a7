//! `/v1/kv/{group}/{key}`: values are raw bodies; errors are JSON.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{json_ok, parse_id, ApiError, AppState};
use crate::kv::{Kv, ReadMode};

pub async fn empty_key() -> ApiError {
    ApiError::bad_request("key must not be empty")
}

pub async fn put(
    State(s): State<AppState>,
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
                    s.ctx.settings.max_value_bytes
                ),
            )
        } else {
            ApiError::bad_request(r.body_text())
        }
    })?;
    let index = Kv::new(&s.ctx, false)
        .put(group, key, body.to_vec())
        .await?;
    Ok(json_ok(json!({ "index": index })))
}

pub async fn get(
    State(s): State<AppState>,
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
    match Kv::new(&s.ctx, false).get(group, key.clone(), mode).await? {
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

pub async fn delete(
    State(s): State<AppState>,
    Path((group, key)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let group = parse_id("group", &group)?;
    let (index, existed) = Kv::new(&s.ctx, false).delete(group, key).await?;
    Ok(json_ok(json!({ "index": index, "existed": existed })))
}
