//! The JSON error body of the HTTP API: `{"error": "...", "code": "..."}` with a fitting status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::raft::types::NodeId;

/// An error answer: its status, a stable code, and a message for people.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, machine-readable code (`group_not_found`, `no_leader`, ...).
    pub code: &'static str,
    /// What happened, for people.
    pub message: String,
    /// For `not_leader`: where the caller should go instead.
    pub leader: Option<NodeId>,
    /// For `overloaded`: when to retry, sent as `Retry-After` (whole seconds, at least one).
    pub retry_after: Option<std::time::Duration>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            leader: None,
            retry_after: None,
        }
    }

    /// A 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// A 409 `not_leader`, naming the leader when known.
    pub fn not_leader(leader: Option<NodeId>) -> Self {
        let message = match leader {
            Some(l) => format!("this node is not the group's leader; node {l} is"),
            None => "this node is not the group's leader, and no leader is known".to_string(),
        };
        let mut e = Self::new(StatusCode::CONFLICT, "not_leader", message);
        e.leader = leader;
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.message, "code": self.code});
        if let Some(l) = self.leader {
            body["leader"] = json!(l);
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs().max(1);
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs),
            );
        }
        response
    }
}
