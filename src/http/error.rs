//! The JSON error body of the HTTP API: `{"error": "...", "code": "..."}` with a fitting status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::context::GroupOpError;
use crate::kv::KvError;
use crate::raft::types::NodeId;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// For `not_leader`: where the caller should go instead.
    pub leader: Option<NodeId>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            leader: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

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
        (self.status, Json(body)).into_response()
    }
}

impl From<KvError> for ApiError {
    fn from(e: KvError) -> Self {
        let (status, code) = match &e {
            KvError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            KvError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            KvError::GroupNotFound(_) => (StatusCode::NOT_FOUND, "group_not_found"),
            KvError::NoLeader(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_leader"),
            KvError::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
            KvError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<GroupOpError> for ApiError {
    fn from(e: GroupOpError) -> Self {
        let (status, code) = match &e {
            GroupOpError::NotFound(_) => (StatusCode::NOT_FOUND, "group_not_found"),
            GroupOpError::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
            GroupOpError::Start(_)
            | GroupOpError::Purge { .. }
            | GroupOpError::RpcRestart { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}
