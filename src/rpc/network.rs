//! openraft's network adapter: each group's RPCs to a peer go over that peer's shared channel,
//! tagged with the group id. Thin by design: encode, call, decode, map errors.

use std::future::Future;
use std::time::Duration;

use openraft::errors::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend, RPCTypes};
use serde::de::DeserializeOwned;
use serde::Serialize;

use tonic::transport::Channel;
use tracing::Instrument;

use crate::group::GroupDeps;
use crate::ledger::{Direction, Owner};

use crate::raft::types::{GroupId, NodeId, Snapshot, TypeConfig, Vote};
use crate::rpc::codec;
use crate::rpc::pb::raft_service_client::RaftServiceClient;
use crate::rpc::pb::RaftRequest;

/// Creates per-target clients for one group.
pub struct GroupNetworkFactory {
    group: GroupId,
    owner: Owner,
    deps: GroupDeps,
}

impl GroupNetworkFactory {
    pub fn new(group: GroupId, owner: Owner, deps: GroupDeps) -> Self {
        GroupNetworkFactory { group, owner, deps }
    }
}

impl RaftNetworkFactory<TypeConfig> for GroupNetworkFactory {
    type Network = GroupNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GroupNetwork {
        let client = match self.deps.peers.channel(target, &node.addr) {
            Ok(channel) => Ok(RaftServiceClient::new(channel)
                .max_decoding_message_size(self.deps.max_message_bytes)
                .max_encoding_message_size(self.deps.max_message_bytes)),
            Err(e) => Err(e.to_string()),
        };
        GroupNetwork {
            group: self.group,
            node: self.deps.node_id,
            target,
            client,
            owner: self.owner.clone(),
            rtt: self
                .deps
                .rpc_metrics
                .peer_rtt
                .with_label_values(&[target.to_string()]),
        }
    }
}

/// One group's view of one peer.
pub struct GroupNetwork {
    group: GroupId,
    node: NodeId,
    target: NodeId,
    /// An address that cannot even be parsed is reported on every call, not at creation,
    /// because openraft's factory cannot fail.
    client: Result<RaftServiceClient<Channel>, String>,
    /// The group's owner: each call in flight counts as one of its outbound streams on the
    /// shared channel, the group-level analogue of JRaft's per-group connections.
    owner: Owner,
    rtt: prometheus::Histogram,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RpcFailure(String);

enum Method {
    Vote,
    PreVote,
    Append,
    Snapshot,
    TransferLeader,
}

impl Method {
    fn name(&self) -> &'static str {
        match self {
            Method::Vote => "vote",
            Method::PreVote => "pre_vote",
            Method::Append => "append_entries",
            Method::Snapshot => "install_snapshot",
            Method::TransferLeader => "transfer_leader",
        }
    }
}

impl GroupNetwork {
    /// A span for replicating `entries` to this peer, when some of them belong to sampled
    /// writes: a child of the first write's proposal, linked to the others. Heartbeats and
    /// untraced entries get none, so idle replication sends the collector nothing.
    fn replicate_span(&self, entries: &[crate::raft::types::Entry]) -> tracing::Span {
        if !crate::otel::enabled() {
            return tracing::Span::none();
        }
        let mut traces = entries.iter().filter_map(|e| match &e.payload {
            openraft::EntryPayload::Normal(r) => r.trace.as_deref(),
            _ => None,
        });
        let Some(first) = traces.next() else {
            return tracing::Span::none();
        };
        let span = tracing::info_span!(
            "raft.replicate",
            otel.kind = "client",
            group = self.group,
            target = self.target,
            entries = entries.len(),
        );
        crate::otel::propagation::adopt_traceparent(&span, first);
        // Bounded: a large catch-up batch must not carry thousands of links.
        for tp in traces.take(31) {
            crate::otel::propagation::link_traceparent(&span, tp);
        }
        span
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        method: Method,
        req: &Req,
        ttl: Duration,
        span: tracing::Span,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => return Err(Unreachable::new(&RpcFailure(e.clone())).into()),
        };
        let payload = codec::encode(req).map_err(|s| NetworkError::new(&s))?;
        let mut request = tonic::Request::new(RaftRequest {
            group_id: self.group,
            payload,
        });
        if !span.is_none() {
            crate::otel::propagation::inject_metadata(&span, request.metadata_mut());
        }
        let _stream = self.owner.track_connection(
            Direction::Outbound,
            format!("{} {}", self.target, method.name()),
        );
        let started = std::time::Instant::now();
        let fut = async {
            match method {
                Method::Vote => client.vote(request).await,
                Method::PreVote => client.pre_vote(request).await,
                Method::Append => client.append_entries(request).await,
                Method::Snapshot => client.install_snapshot(request).await,
                Method::TransferLeader => client.transfer_leader(request).await,
            }
        };
        let reply = match tokio::time::timeout(ttl, fut).instrument(span).await {
            Err(_) => {
                return Err(RPCError::Timeout(Timeout {
                    action: rpc_type(&method),
                    id: self.node,
                    target: self.target,
                    timeout: ttl,
                }))
            }
            Ok(Err(status)) => return Err(status_error(status)),
            Ok(Ok(r)) => r.into_inner(),
        };
        self.rtt.observe(started.elapsed().as_secs_f64());
        // The remote side answers Result<Resp, String>, the error being its Raft error's text
        // (for instance, the group is shutting down there); openraft backs off from that peer.
        let result: Result<Resp, String> =
            codec::decode(&reply.payload).map_err(|s| NetworkError::new(&s))?;
        result.map_err(|e| Unreachable::new(&RpcFailure(e)).into())
    }
}

fn rpc_type(m: &Method) -> RPCTypes {
    match m {
        Method::Vote | Method::PreVote => RPCTypes::Vote,
        Method::Append => RPCTypes::AppendEntries,
        Method::Snapshot => RPCTypes::InstallSnapshot,
        Method::TransferLeader => RPCTypes::TransferLeader,
    }
}

/// Connection failures mean "back off and retry"; anything else is a network error.
fn status_error(status: tonic::Status) -> RPCError<TypeConfig> {
    let failure = RpcFailure(format!("{}: {}", status.code(), status.message()));
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::NotFound => Unreachable::new(&failure).into(),
        _ => NetworkError::new(&failure).into(),
    }
}

fn streaming(e: RPCError<TypeConfig>) -> StreamingError<TypeConfig> {
    match e {
        RPCError::Timeout(t) => StreamingError::Timeout(t),
        RPCError::Unreachable(u) => StreamingError::Unreachable(u),
        RPCError::Network(n) => StreamingError::Network(n),
        RPCError::RemoteError(r) => StreamingError::Network(NetworkError::new(&r)),
    }
}

impl RaftNetworkV2<TypeConfig> for GroupNetwork {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let span = self.replicate_span(&rpc.entries);
        self.call(Method::Append, &rpc, option.hard_ttl(), span)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Method::Vote, &rpc, option.hard_ttl(), tracing::Span::none())
            .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(
            Method::PreVote,
            &rpc,
            option.hard_ttl(),
            tracing::Span::none(),
        )
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let req = (
            vote,
            snapshot.meta,
            serde_bytes::ByteBuf::from(snapshot.snapshot),
        );
        // Snapshots are rare and slow: always worth a (root) span.
        let span = tracing::info_span!(
            "raft.send_snapshot",
            otel.kind = "client",
            group = self.group,
            target = self.target,
            bytes = req.2.len(),
        );
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = self.call(Method::Snapshot, &req, option.hard_ttl(), span) => r.map_err(streaming),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(
            Method::TransferLeader,
            &req,
            option.hard_ttl(),
            tracing::Span::none(),
        )
        .await
    }
}
