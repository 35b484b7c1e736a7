//! Admin routes: status, groups at runtime, leader transfer and membership changes.

use openraft::async_runtime::WatchReceiver;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use openraft::{BasicNode, ChangeMembers, ServerState};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use super::{json_ok, parse_id, ApiError, AppState};
use crate::group::Group;
use crate::raft::types::{NodeId, RaftError};

fn role(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "Leader",
        ServerState::Follower => "Follower",
        ServerState::Candidate => "Candidate",
        ServerState::Learner => "Learner",
        ServerState::Shutdown => "Shutdown",
    }
}

pub fn group_status(g: &Group) -> serde_json::Value {
    let m = g.raft.metrics().borrow_watched().clone();
    let membership = m.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let learners: Vec<NodeId> = membership.learner_ids().collect();
    json!({
        "id": g.id,
        "role": role(m.state),
        "term": m.current_term,
        "leader": m.current_leader,
        "commit_index": m.local_committed.map(|l| l.index).unwrap_or(0),
        "applied_index": m.last_applied.map(|l| l.index).unwrap_or(0),
        "last_log_index": m.last_log_index.unwrap_or(0),
        "snapshot_index": m.snapshot.map(|l| l.index),
        "voters": voters,
        "learners": learners,
    })
}

pub async fn status(State(s): State<AppState>) -> impl IntoResponse {
    let groups: Vec<_> = s
        .ctx
        .registry
        .all()
        .iter()
        .map(|g| group_status(g))
        .collect();
    json_ok(json!({
        "node_id": s.ctx.node_id(),
        "ready": s.ctx.ready.load(std::sync::atomic::Ordering::Acquire) && !s.ctx.is_draining(),
        "draining": s.ctx.is_draining(),
        "grpc_addr": s.ctx.settings.grpc_addr.to_string(),
        "groups": groups,
    }))
}

pub async fn add_group(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id("group", &id)?;
    let created = s.ctx.start_group(id, true).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({ "group": id, "created": created }))))
}

pub async fn remove_group(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id("group", &id)?;
    let purge = match q.get("purge").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "purge must be true or false, not {other:?}"
            )))
        }
    };
    s.ctx.stop_group(id, purge).await?;
    Ok(json_ok(
        json!({ "group": id, "stopped": true, "purged": purge }),
    ))
}

fn group(s: &AppState, id: &str) -> Result<Arc<Group>, ApiError> {
    let id = parse_id("group", id)?;
    s.ctx.registry.get(id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "group_not_found",
            format!("group {id} is not running on this node"),
        )
    })
}

/// Parses a JSON body; an empty body is `None`.
fn body<T: DeserializeOwned>(b: &Bytes) -> Result<Option<T>, ApiError> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(b)
        .map(Some)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    to: Option<NodeId>,
}

pub async fn transfer_leader(
    State(s): State<AppState>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let g = group(&s, &id)?;
    let req: Option<TransferBody> = body(&b)?;
    let m = g.raft.metrics().borrow_watched().clone();
    if m.current_leader != Some(m.id) {
        return Err(ApiError::not_leader(m.current_leader));
    }
    let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
    let to = match req.and_then(|r| r.to) {
        Some(to) if !voters.contains(&to) => {
            return Err(ApiError::bad_request(format!(
                "node {to} is not a voter of group {}",
                g.id
            )))
        }
        Some(to) => to,
        None => {
            let matched = m
                .replication
                .as_ref()
                .map(|r| r.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect())
                .unwrap_or_default();
            crate::shutdown::pick_successor(m.id, voters, &matched).ok_or_else(|| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "no_successor",
                    "no other voter to transfer to",
                )
            })?
        }
    };
    if to == m.id {
        return Ok(json_ok(json!({ "group": g.id, "leader": to })));
    }
    g.raft.trigger().transfer_leader(to).await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "group_stopped",
            e.to_string(),
        )
    })?;
    Ok(json_ok(json!({ "group": g.id, "transferring_to": to })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeBody {
    node_id: NodeId,
    addr: Option<String>,
}

fn membership_error<E>(e: RaftError<E>) -> ApiError
where
    E: std::error::Error
        + openraft::TryAsRef<openraft::errors::ForwardToLeader<crate::raft::types::TypeConfig>>,
{
    if let Some(f) = e.forward_to_leader() {
        return ApiError::not_leader(f.leader_id);
    }
    ApiError::new(StatusCode::CONFLICT, "membership_conflict", e.to_string())
}

pub async fn add_learner(
    State(s): State<AppState>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let g = group(&s, &id)?;
    let req: NodeBody = body(&b)?.ok_or_else(|| {
        ApiError::bad_request("body must be {\"node_id\": N, \"addr\": \"host:port\"}")
    })?;
    let addr = req
        .addr
        .ok_or_else(|| ApiError::bad_request("addr (the learner's gRPC address) is required"))?;
    crate::config::parse_peers(&format!("{}={addr}", req.node_id))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let r = g
        .raft
        .add_learner(req.node_id, BasicNode::new(addr), true)
        .await
        .map_err(membership_error)?;
    Ok(json_ok(
        json!({ "group": g.id, "learner": req.node_id, "log_index": r.log_id.index }),
    ))
}

/// Applies one membership change to group `id` and reports the log index it committed at.
async fn change(
    s: &AppState,
    id: &str,
    what: &'static str,
    node: NodeId,
    change: ChangeMembers<NodeId, BasicNode>,
) -> Result<impl IntoResponse + use<>, ApiError> {
    let g = group(s, id)?;
    let r = g
        .raft
        .change_membership(change, false)
        .await
        .map_err(membership_error)?;
    Ok(json_ok(
        json!({ "group": g.id, what: node, "log_index": r.log_id.index }),
    ))
}

pub async fn add_voter(
    State(s): State<AppState>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let req: NodeBody =
        body(&b)?.ok_or_else(|| ApiError::bad_request("body must be {\"node_id\": N}"))?;
    let members = ChangeMembers::AddVoterIds(BTreeSet::from([req.node_id]));
    change(&s, &id, "voter", req.node_id, members).await
}

pub async fn remove_voter(
    State(s): State<AppState>,
    Path((id, node)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let node = parse_id("node", &node)?;
    let members = ChangeMembers::RemoveVoters(BTreeSet::from([node]));
    change(&s, &id, "removed_voter", node, members).await
}

pub async fn remove_learner(
    State(s): State<AppState>,
    Path((id, node)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let node = parse_id("node", &node)?;
    let members = ChangeMembers::RemoveNodes(BTreeSet::from([node]));
    change(&s, &id, "removed_learner", node, members).await
}

pub async fn restart_rpc_server(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    s.ctx.restart_rpc_server().await?;
    Ok(json_ok(json!({ "restarted": true })))
}

#[cfg(feature = "leak-injection")]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeakBody {
    /// `group` (the next group stop) or `rpc_server` (the next gRPC server stop).
    target: String,
    kind: crate::leak_injection::LeakKind,
}

#[cfg(feature = "leak-injection")]
pub async fn inject_leak(
    State(s): State<AppState>,
    b: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let req: LeakBody = body(&b)?
        .ok_or_else(|| ApiError::bad_request("body must be {\"target\": ..., \"kind\": ...}"))?;
    match req.target.as_str() {
        "group" => s.ctx.injected.arm_group(req.kind),
        "rpc_server" => s.ctx.injected.arm_rpc_server(),
        other => {
            return Err(ApiError::bad_request(format!(
                "target must be group or rpc_server, not {other:?}"
            )))
        }
    }
    Ok(json_ok(json!({ "armed": req.target })))
}
