//! The KV operations behind both client APIs (HTTP and gRPC): validation, proposal, reads at
//! the requested consistency, and forwarding to the leader when this node is a follower.
//!
//! A new leader may refuse for a moment (no leader yet, lease not established), so every
//! operation retries with backoff until `request_timeout`, then reports `NoLeader` (503).

use std::time::Duration;

use openraft::raft::ReadPolicy;
use tonic::metadata::MetadataValue;
use tracing::Instrument;

use crate::context::NodeContext;
use crate::raft::types::{GroupId, KvOp, KvRequest, NodeId};
use crate::rpc::pb::kv_service_client::KvServiceClient;
use crate::rpc::pb::{self, ReadMode as PbReadMode};
use crate::rpc::FORWARDED_HEADER;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    Linearizable,
    Lease,
    Local,
}

impl ReadMode {
    pub fn parse(s: &str) -> Option<ReadMode> {
        match s {
            "linearizable" => Some(ReadMode::Linearizable),
            "lease" => Some(ReadMode::Lease),
            "local" => Some(ReadMode::Local),
            _ => None,
        }
    }

    pub fn from_pb(m: i32) -> Option<ReadMode> {
        match PbReadMode::try_from(m).ok()? {
            PbReadMode::Linearizable => Some(ReadMode::Linearizable),
            PbReadMode::Lease => Some(ReadMode::Lease),
            PbReadMode::Local => Some(ReadMode::Local),
        }
    }

    fn to_pb(self) -> PbReadMode {
        match self {
            ReadMode::Linearizable => PbReadMode::Linearizable,
            ReadMode::Lease => PbReadMode::Lease,
            ReadMode::Local => PbReadMode::Local,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("group {0} is not running on this node")]
    GroupNotFound(GroupId),
    #[error("group {0} has no leader reachable within the request timeout")]
    NoLeader(GroupId),
    #[error("node is shutting down")]
    Draining,
    #[error("{0}")]
    Internal(String),
}

impl KvError {
    pub fn to_status(&self) -> tonic::Status {
        let msg = self.to_string();
        match self {
            KvError::BadRequest(_) => tonic::Status::invalid_argument(msg),
            KvError::TooLarge(_) => tonic::Status::out_of_range(msg),
            KvError::GroupNotFound(_) => tonic::Status::not_found(msg),
            KvError::NoLeader(_) | KvError::Draining => tonic::Status::unavailable(msg),
            KvError::Internal(_) => tonic::Status::internal(msg),
        }
    }

    /// Maps a forwarded call's failure back. Transport failures mean the leader we knew is
    /// gone; they are retried like an absent leader.
    fn from_status(group: GroupId, s: tonic::Status) -> KvError {
        let msg = s.message().to_string();
        match s.code() {
            tonic::Code::InvalidArgument => KvError::BadRequest(msg),
            tonic::Code::OutOfRange => KvError::TooLarge(msg),
            tonic::Code::NotFound => KvError::GroupNotFound(group),
            tonic::Code::Internal => KvError::Internal(msg),
            _ => KvError::NoLeader(group),
        }
    }

    fn retryable(&self) -> bool {
        matches!(self, KvError::NoLeader(_))
    }
}

/// Where an operation goes next, decided from openraft's answer.
enum Next<T> {
    Done(T),
    Forward(NodeId, String),
    Retry,
}

pub struct Kv<'a> {
    ctx: &'a NodeContext,
    /// A forwarded call is never forwarded again.
    forwarded: bool,
}

impl<'a> Kv<'a> {
    pub fn new(ctx: &'a NodeContext, forwarded: bool) -> Self {
        Kv { ctx, forwarded }
    }

    fn check_key(&self, key: &str) -> Result<(), KvError> {
        if key.is_empty() {
            return Err(KvError::BadRequest("key must not be empty".into()));
        }
        let max = self.ctx.settings.max_key_bytes;
        if key.len() > max {
            return Err(KvError::TooLarge(format!(
                "key is {} bytes; the limit is {max} (max_key_bytes)",
                key.len()
            )));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), KvError> {
        let max = self.ctx.settings.max_value_bytes;
        if value.len() > max {
            return Err(KvError::TooLarge(format!(
                "value is {} bytes; the limit is {max} (max_value_bytes)",
                value.len()
            )));
        }
        Ok(())
    }

    fn group(&self, id: GroupId) -> Result<std::sync::Arc<crate::group::Group>, KvError> {
        if self.ctx.is_draining() && !self.forwarded {
            return Err(KvError::Draining);
        }
        self.ctx.registry.get(id).ok_or(KvError::GroupNotFound(id))
    }

    pub async fn put(&self, group: GroupId, key: String, value: Vec<u8>) -> Result<u64, KvError> {
        self.check_key(&key)?;
        self.check_value(&value)?;
        self.write(group, KvOp::Put { key, value })
            .await
            .map(|(index, _)| index)
    }

    pub async fn delete(&self, group: GroupId, key: String) -> Result<(u64, bool), KvError> {
        self.check_key(&key)?;
        self.write(group, KvOp::Delete { key }).await
    }

    async fn write(&self, group: GroupId, op: KvOp) -> Result<(u64, bool), KvError> {
        let op = &op;
        self.retry(
            group,
            || async {
                let g = self.group(group)?;
                let proposal = g.stats.proposal();
                // From submit through commit to apply: client_write answers once the entry is
                // applied here. The entry carries this span's context to every node.
                let span =
                    tracing::info_span!("raft.propose", group, raft.index = tracing::field::Empty);
                let written = async {
                    let req = KvRequest {
                        op: op.clone(),
                        trace: crate::otel::propagation::current_traceparent(),
                    };
                    let written = g.raft.client_write(req).await;
                    if let Ok(w) = &written {
                        tracing::debug!(index = w.log_id.index, "write applied");
                    }
                    written
                }
                .instrument(span.clone())
                .await;
                match written {
                    Ok(resp) => {
                        span.record("raft.index", resp.log_id.index);
                        proposal.finish(Some(true));
                        Ok(Next::Done((resp.log_id.index, resp.data.existed)))
                    }
                    Err(e) => {
                        proposal.finish(e.forward_to_leader().is_none().then_some(false));
                        self.route(
                            group,
                            e.forward_to_leader()
                                .map(|f| (f.leader_id, f.leader_node.clone())),
                            &e,
                        )
                    }
                }
            },
            |leader_addr| async move {
                let mut client = self.client(group, leader_addr.0, &leader_addr.1)?;
                let r = match op {
                    KvOp::Put { key, value } => client
                        .put(self.forward_request(pb::PutRequest {
                            group_id: group,
                            key: key.clone(),
                            value: value.clone(),
                        }))
                        .await
                        .map(|r| (r.into_inner().index, false)),
                    KvOp::Delete { key } => client
                        .delete(self.forward_request(pb::DeleteRequest {
                            group_id: group,
                            key: key.clone(),
                        }))
                        .await
                        .map(|r| {
                            let r = r.into_inner();
                            (r.index, r.existed)
                        }),
                };
                r.map_err(|s| KvError::from_status(group, s))
            },
        )
        .await
    }

    pub async fn get(
        &self,
        group: GroupId,
        key: String,
        mode: ReadMode,
    ) -> Result<Option<Vec<u8>>, KvError> {
        self.check_key(&key)?;
        if mode == ReadMode::Local {
            return Ok(self.group(group)?.sm.get(&key));
        }
        let policy = match mode {
            ReadMode::Lease => ReadPolicy::LeaseRead,
            _ => ReadPolicy::ReadIndex,
        };
        self.retry(
            group,
            || async {
                let g = self.group(group)?;
                let confirmed = g
                    .raft
                    .ensure_linearizable(policy.clone())
                    .instrument(tracing::info_span!("raft.read_barrier", group, ?mode))
                    .await;
                match confirmed {
                    Ok(_) => Ok(Next::Done(g.sm.get(&key))),
                    Err(e) => self.route(
                        group,
                        e.forward_to_leader()
                            .map(|f| (f.leader_id, f.leader_node.clone())),
                        &e,
                    ),
                }
            },
            |leader| {
                let key = key.clone();
                async move {
                    let mut client = self.client(group, leader.0, &leader.1)?;
                    let r = client
                        .get(self.forward_request(pb::GetRequest {
                            group_id: group,
                            key,
                            read_mode: mode.to_pb() as i32,
                        }))
                        .await
                        .map_err(|s| KvError::from_status(group, s))?
                        .into_inner();
                    Ok(r.found.then_some(r.value))
                }
            },
        )
        .await
    }

    /// Decides what an openraft refusal means for the request.
    fn route<T>(
        &self,
        group: GroupId,
        forward: Option<(Option<NodeId>, Option<openraft::BasicNode>)>,
        err: &dyn std::fmt::Display,
    ) -> Result<Next<T>, KvError> {
        match forward {
            Some((Some(leader), Some(node))) if leader != self.ctx.node_id() && !self.forwarded => {
                Ok(Next::Forward(leader, node.addr))
            }
            Some(_) => Ok(Next::Retry),
            None => {
                // Quorum loss, a fatal stop of the group, or the lease not yet held: all
                // transient from a client's point of view.
                tracing::debug!(group, error = %err, "request refused; retrying");
                Ok(Next::Retry)
            }
        }
    }

    async fn retry<T, F, Fut, G, GFut>(
        &self,
        group: GroupId,
        mut attempt: F,
        forward: G,
    ) -> Result<T, KvError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Next<T>, KvError>>,
        G: Fn((NodeId, String)) -> GFut,
        GFut: std::future::Future<Output = Result<T, KvError>>,
    {
        let until = tokio::time::Instant::now() + self.ctx.settings.request_timeout;
        let mut backoff = Duration::from_millis(10);
        loop {
            let outcome = match attempt().await? {
                Next::Done(v) => return Ok(v),
                Next::Forward(leader, addr) => match forward((leader, addr))
                    .instrument(tracing::info_span!(
                        "kv.forward",
                        group,
                        leader,
                        otel.kind = "client"
                    ))
                    .await
                {
                    Ok(v) => return Ok(v),
                    Err(e) if e.retryable() => e,
                    Err(e) => return Err(e),
                },
                Next::Retry => KvError::NoLeader(group),
            };
            if tokio::time::Instant::now() + backoff >= until || self.forwarded {
                return Err(outcome);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    fn client(
        &self,
        group: GroupId,
        leader: NodeId,
        addr: &str,
    ) -> Result<KvServiceClient<tonic::transport::Channel>, KvError> {
        let channel = self.ctx.deps.peers.channel(leader, addr).map_err(|e| {
            tracing::warn!(group, error = %e, "cannot forward to leader");
            KvError::NoLeader(group)
        })?;
        Ok(KvServiceClient::new(channel)
            .max_decoding_message_size(crate::config::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::config::MAX_MESSAGE_BYTES))
    }

    fn forward_request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.metadata_mut()
            .insert(FORWARDED_HEADER, MetadataValue::from_static("1"));
        // Called inside the `kv.forward` span: the leader's handler continues this trace.
        crate::otel::propagation::inject_metadata(&tracing::Span::current(), req.metadata_mut());
        req.set_timeout(self.ctx.settings.request_timeout);
        req
    }
}
