//! The node's own HTTP routes: health, readiness, metrics, status, groups at runtime, leader
//! transfer, membership changes and the RPC-server restart. The program's routes (the KV
//! store's `/v1/kv/...`) are merged in by the node, and share the tracing middleware.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, ChangeMembers, ServerState};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use tracing::Instrument;

use crate::group::Group;
use crate::http::{json_ok, parse_id, ApiError};
use crate::metrics::Metrics;
use crate::node::error::{GroupOpError, RequestError};
use crate::node::handover;
use crate::node::shared::NodeCore;
use crate::node::types::AfterPurge;
use crate::raft::types::{NodeId, RaftError};

#[derive(Clone)]
struct ApiState {
    core: Arc<NodeCore>,
    metrics: Metrics,
}

/// The whole HTTP API: the node's routes and `app`'s, traced alike.
pub(crate) fn router(core: Arc<NodeCore>, metrics: Metrics, app: Option<Router>) -> Router {
    let core_auth = core.auth.clone();
    let metrics_auth = core.config.metrics_auth;
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .route("/v1/status", get(status))
        .route("/v1/groups/{id}", put(add_group).delete(remove_group))
        .route("/v1/groups/{id}/transfer-leader", post(transfer_leader))
        .route("/v1/groups/{id}/learners", post(add_learner))
        .route("/v1/groups/{id}/learners/{node}", delete(remove_learner))
        .route("/v1/groups/{id}/voters", post(add_voter))
        .route("/v1/groups/{id}/voters/{node}", delete(remove_voter))
        .route("/v1/admin/rpc-server/restart", post(restart_rpc_server));
    #[cfg(feature = "leak-injection")]
    let router = router
        .route("/v1/debug/leaks", post(inject_leak))
        .route("/v1/debug/faults", post(inject_fault));
    let router = router.with_state(ApiState { core, metrics });
    let router = match app {
        Some(app) => router.merge(app),
        None => router,
    };
    let router = match core_auth {
        Some(authorizer) => router.layer(axum::middleware::from_fn_with_state(
            crate::auth::http::HttpAuth {
                authorizer,
                metrics_auth,
            },
            crate::auth::http::check,
        )),
        None => router,
    };
    router
        .route_layer(axum::middleware::from_fn(trace_request))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        // Admin bodies are small JSON; routes that take large bodies set their own limit.
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
}

/// The server span of an API call, continuing the client's trace when it sent a
/// `traceparent`. Health checks and scrapes are left out: they would flood the exporter with
/// traces nobody follows.
async fn trace_request(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if !req.uri().path().starts_with("/v1/") {
        return next.run(req).await;
    }
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| req.uri().path().to_owned());
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format_args!("{} {route}", req.method()),
        otel.kind = "server",
        http.request.method = %req.method(),
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    crate::otel::propagation::adopt_from_headers(&span, req.headers());
    let response = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

/// A request error as the API answers it: every route, the program's too, maps it the same way.
impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        let (status, code) = match &e {
            RequestError::GroupNotFound(_) => (StatusCode::NOT_FOUND, "group_not_found"),
            RequestError::NoLeader(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_leader"),
            RequestError::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
            RequestError::StorageFailed => (StatusCode::SERVICE_UNAVAILABLE, "storage_failed"),
            RequestError::Rejected(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            RequestError::Codec(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            RequestError::Overloaded(_) => (StatusCode::TOO_MANY_REQUESTS, "overloaded"),
        };
        let mut err = ApiError::new(status, code, e.to_string());
        if let RequestError::Overloaded(_) = e {
            err.retry_after = Some(crate::node::error::OVERLOAD_RETRY_AFTER);
        }
        err
    }
}

/// A group operation error as the API answers it.
impl From<GroupOpError> for ApiError {
    fn from(e: GroupOpError) -> Self {
        let (status, code) = match &e {
            GroupOpError::NotFound(_) => (StatusCode::NOT_FOUND, "group_not_found"),
            GroupOpError::Purged(_) => (StatusCode::CONFLICT, "purged"),
            GroupOpError::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
            GroupOpError::Start(_)
            | GroupOpError::Purge { .. }
            | GroupOpError::RpcRestart { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

async fn readyz(State(s): State<ApiState>) -> impl IntoResponse {
    if s.core.deps.storage.is_failed() {
        (StatusCode::SERVICE_UNAVAILABLE, "storage failed\n")
    } else if s.core.lifecycle.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if !s.core.lifecycle.is_ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}

async fn render_metrics(State(s): State<ApiState>) -> Response {
    match s.metrics.render() {
        Ok(text) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e).into_response(),
    }
}

fn role(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "Leader",
        ServerState::Follower => "Follower",
        ServerState::Candidate => "Candidate",
        ServerState::Learner => "Learner",
        ServerState::Shutdown => "Shutdown",
    }
}

fn group_status(g: &Group) -> serde_json::Value {
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

async fn status(State(s): State<ApiState>) -> impl IntoResponse {
    let groups: Vec<_> = s
        .core
        .registry
        .all()
        .iter()
        .map(|g| group_status(g))
        .collect();
    json_ok(json!({
        "node_id": s.core.node_id(),
        "cluster_id": s.core.deps.network.peers.identity().get(),
        "ready": s.core.lifecycle.is_ready(),
        "draining": s.core.lifecycle.is_draining(),
        "grpc_addr": s.core.config.grpc_addr.to_string(),
        "groups": groups,
    }))
}

/// What an operator is told when a group's data is erased here, or added again after that.
const ERASED_NOTE: &str = "this node's replica of the group has no data: add the group again \
    with ?fresh=true if it is created anew on every member, or with ?rejoin=true if this replica \
    rejoins a group its peers still run; it then votes for nobody until it has caught up with a \
    leader, so that it cannot help elect a member missing writes it had acknowledged";

async fn add_group(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id("group", &id)?;
    let flag = |name: &str| match q.get(name).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "{name} must be true or false, not {other:?}"
        ))),
    };
    let after_purge = match (flag("fresh")?, flag("rejoin")?) {
        (false, false) => AfterPurge::Ask,
        (true, false) => AfterPurge::Fresh,
        (false, true) => AfterPurge::Rejoin,
        (true, true) => return Err(ApiError::bad_request("fresh and rejoin exclude each other")),
    };
    let created = s.core.start_group(id, true, after_purge).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let erased = s.core.registry.get(id).is_some_and(|g| g.is_erased());
    let mut body = json!({ "group": id, "created": created, "erased": erased });
    if erased {
        body["note"] = json!(ERASED_NOTE);
    }
    Ok((status, Json(body)))
}

async fn remove_group(
    State(s): State<ApiState>,
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
    s.core.stop_group(id, purge).await?;
    let mut body = json!({ "group": id, "stopped": true, "purged": purge });
    if purge {
        body["note"] = json!(ERASED_NOTE);
    }
    Ok(json_ok(body))
}

fn group(s: &ApiState, id: &str) -> Result<Arc<Group>, ApiError> {
    let id = parse_id("group", id)?;
    s.core.registry.get(id).ok_or_else(|| {
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

async fn transfer_leader(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let g = group(&s, &id)?;
    let req: Option<TransferBody> = body(&b)?;
    let (me, voters, followers) = handover::followers(&g);
    if !g.is_leader() {
        return Err(ApiError::not_leader(
            g.raft.metrics().borrow_watched().current_leader,
        ));
    }
    let to = match req.and_then(|r| r.to) {
        Some(to) if !voters.contains(&to) => {
            return Err(ApiError::bad_request(format!(
                "node {to} is not a voter of group {}",
                g.id
            )))
        }
        Some(to) => to,
        // An operator's transfer picks among every voter, answering or not: it is theirs.
        None => handover::pick_successor(me, &voters, &followers, None).ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "no_successor",
                "no other voter to transfer to",
            )
        })?,
    };
    if to == me {
        return Ok(json_ok(json!({ "group": g.id, "leader": to })));
    }
    s.core
        .transfer_leadership(&g, to)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "group_stopped", e))?;
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

/// Checks `addr` as a member address the way `--peers` would.
fn check_addr(node: NodeId, addr: &str) -> Result<(), ApiError> {
    let bad =
        |reason: &str| ApiError::bad_request(format!("addr {addr:?} of node {node}: {reason}"));
    if node == 0 {
        return Err(ApiError::bad_request("node ids start at 1"));
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(bad("not HOST:PORT")),
    }
}

async fn add_learner(
    State(s): State<ApiState>,
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
    check_addr(req.node_id, &addr)?;
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
    s: &ApiState,
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

async fn add_voter(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    b: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let req: NodeBody =
        body(&b)?.ok_or_else(|| ApiError::bad_request("body must be {\"node_id\": N}"))?;
    let members = ChangeMembers::AddVoterIds(BTreeSet::from([req.node_id]));
    change(&s, &id, "voter", req.node_id, members).await
}

async fn remove_voter(
    State(s): State<ApiState>,
    Path((id, node)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let node = parse_id("node", &node)?;
    let members = ChangeMembers::RemoveVoters(BTreeSet::from([node]));
    change(&s, &id, "removed_voter", node, members).await
}

async fn remove_learner(
    State(s): State<ApiState>,
    Path((id, node)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let node = parse_id("node", &node)?;
    let members = ChangeMembers::RemoveNodes(BTreeSet::from([node]));
    change(&s, &id, "removed_learner", node, members).await
}

async fn restart_rpc_server(State(s): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    s.core.restart_rpc_server().await?;
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
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultBody {
    /// What happens to the next forwarded proposal this node applies as leader.
    propose: crate::leak_injection::ProposeFault,
}

#[cfg(feature = "leak-injection")]
async fn inject_fault(State(s): State<ApiState>, b: Bytes) -> Result<impl IntoResponse, ApiError> {
    let req: FaultBody = body(&b)?.ok_or_else(|| {
        ApiError::bad_request("body must be {\"propose\": \"lose_reply\" or \"exit\"}")
    })?;
    s.core.injected.arm_propose(req.propose);
    Ok(json_ok(json!({ "armed": req.propose })))
}

#[cfg(feature = "leak-injection")]
async fn inject_leak(State(s): State<ApiState>, b: Bytes) -> Result<impl IntoResponse, ApiError> {
    let req: LeakBody = body(&b)?
        .ok_or_else(|| ApiError::bad_request("body must be {\"target\": ..., \"kind\": ...}"))?;
    match req.target.as_str() {
        "group" => s.core.injected.arm_group(req.kind),
        "rpc_server" => s.core.injected.arm_rpc_server(),
        other => {
            return Err(ApiError::bad_request(format!(
                "target must be group or rpc_server, not {other:?}"
            )))
        }
    }
    Ok(json_ok(json!({ "armed": req.target })))
}
