//! openraft's network adapter: each group's messages to a peer go over that peer's shared
//! channel, tagged with the group id; votes and appends (heartbeats included) join the peer's
//! batches. Thin by design: pick the method, call, map errors.

use std::future::Future;
use std::sync::Arc;
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
use tracing::Instrument;

use crate::ledger::{Direction, Owner};
use crate::metrics::RpcMetrics;
use crate::raft::state_machine::Snapshot;
use crate::raft::types::{entry_bytes, Entry, GroupId, NodeId, TypeConfig, Vote};
use crate::rpc::batcher::Batcher;
use crate::rpc::client::{self, CallError};
use crate::rpc::cluster::PeerClient;
use crate::rpc::methods::{rpc, Method, Rpc};
use crate::rpc::peers::Peers;
use crate::rpc::snapshot_stream;

/// What every group's network adapter shares.
#[derive(Clone)]
pub struct NetworkDeps {
    /// This node's id.
    pub node_id: NodeId,
    /// The node's peer channels.
    pub peers: Peers,
    /// Largest message sent or accepted.
    pub max_message_bytes: usize,
    /// Bound on the log entries one AppendEntries carries, in bytes.
    pub max_append_bytes: usize,
    /// Round-trip times per peer.
    pub metrics: Arc<RpcMetrics>,
}

/// Creates per-target clients for one group.
pub struct GroupNetworkFactory {
    group: GroupId,
    owner: Owner,
    deps: NetworkDeps,
}

impl GroupNetworkFactory {
    /// The factory of group `group`, whose calls count as `owner`'s streams.
    pub fn new(group: GroupId, owner: Owner, deps: NetworkDeps) -> Self {
        GroupNetworkFactory { group, owner, deps }
    }
}

impl RaftNetworkFactory<TypeConfig> for GroupNetworkFactory {
    type Network = GroupNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GroupNetwork {
        let client = match self.deps.peers.link(target, &node.addr) {
            Ok(link) => Ok(Link {
                alone: client::client(
                    link.channel,
                    self.deps.max_message_bytes,
                    self.deps.peers.stamp(),
                ),
                batched: link.batcher,
            }),
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
                .metrics
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
    client: Result<Link, String>,
    /// The group's owner: each call in flight counts as one of its outbound streams on the
    /// shared channel, the group-level analogue of JRaft's per-group connections.
    owner: Owner,
    rtt: prometheus::Histogram,
}

/// The two ways to the peer: alone, for the rare large calls (snapshots, transfers), and in
/// the peer's batches, for the steady stream of votes and appends.
struct Link {
    alone: PeerClient,
    batched: Batcher,
}

/// Whether `method` joins the peer's batches. A snapshot would hold up every message batched
/// with it, and a transfer is rare; both travel alone.
fn batched(method: Method) -> bool {
    matches!(
        method,
        Method::AppendEntries | Method::Vote | Method::PreVote
    )
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RpcFailure(String);

/// The slowest transfer rate a peer link is expected to sustain. openraft gives every append
/// the same timeout (a heartbeat interval), which a message of large values can never meet;
/// each message gets that plus the time its bytes take at this rate.
const MIN_BYTES_PER_SEC: f64 = (8u64 << 20) as f64;

/// The timeout of a message of `bytes` whose base timeout is `base`.
fn sized_ttl(base: Duration, bytes: usize) -> Duration {
    base + Duration::from_secs_f64(bytes as f64 / MIN_BYTES_PER_SEC)
}

impl GroupNetwork {
    /// A span for replicating `entries` to this peer, when some of them belong to sampled
    /// writes: a child of the first write's proposal, linked to the others. Heartbeats and
    /// untraced entries get none, so idle replication sends the collector nothing.
    fn replicate_span(&self, entries: &[Entry]) -> tracing::Span {
        let mut traces = entries.iter().filter_map(|e| match &e.payload {
            openraft::EntryPayload::Normal(p) => p.trace.as_deref(),
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

    async fn call<M: Rpc>(
        &mut self,
        req: &M::Request,
        ttl: Duration,
        span: tracing::Span,
    ) -> Result<M::Response, RPCError<TypeConfig>> {
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => return Err(Unreachable::new(&RpcFailure(e.clone())).into()),
        };
        let _stream = self.owner.track_connection(
            Direction::Outbound,
            format!("{} {}", self.target, M::METHOD.name()),
        );
        let started = std::time::Instant::now();
        let result = if batched(M::METHOD) {
            client::call_batched::<M>(&client.batched, self.group, req, ttl, &span)
                .instrument(span.clone())
                .await
        } else {
            client::call::<M>(&mut client.alone, self.group, req, ttl, &span)
                .instrument(span.clone())
                .await
        };
        self.outcome(result, started, rpc_type::<M>())
    }

    /// openraft's view of a call's outcome; answers, failed or not, are round trips.
    fn outcome<T>(
        &self,
        result: Result<T, CallError>,
        started: std::time::Instant,
        action: RPCTypes,
    ) -> Result<T, RPCError<TypeConfig>> {
        match result {
            Ok(r) => {
                self.rtt.observe(started.elapsed().as_secs_f64());
                Ok(r)
            }
            Err(CallError::Timeout(t)) => Err(RPCError::Timeout(Timeout {
                action,
                id: self.node,
                target: self.target,
                timeout: t,
            })),
            Err(CallError::Status(status)) => Err(status_error(status)),
            // The remote side's Raft error (for instance, the group is shutting down there):
            // openraft backs off from that peer.
            Err(CallError::Remote(e)) => {
                self.rtt.observe(started.elapsed().as_secs_f64());
                Err(Unreachable::new(&RpcFailure(e)).into())
            }
        }
    }
}

fn rpc_type<M: Rpc>() -> RPCTypes {
    match M::METHOD {
        Method::AppendEntries => RPCTypes::AppendEntries,
        Method::TransferLeader => RPCTypes::TransferLeader,
        _ => RPCTypes::Vote,
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
    type SnapshotData = crate::raft::snapshot_data::SnapshotData;

    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let span = self.replicate_span(&req.entries);
        let bytes = req.entries.iter().map(entry_bytes).sum();
        let ttl = sized_ttl(option.hard_ttl(), bytes);
        self.call::<rpc::AppendEntries>(&req, ttl, span).await
    }

    async fn vote(
        &mut self,
        req: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call::<rpc::Vote>(&req, option.hard_ttl(), tracing::Span::none())
            .await
    }

    async fn pre_vote(
        &mut self,
        req: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call::<rpc::PreVote>(&req, option.hard_ttl(), tracing::Span::none())
            .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut cancel = std::pin::pin!(cancel);
        let Snapshot { meta, snapshot } = snapshot;
        // A view of the engine is written out first, on a blocking thread of the group.
        let write = self
            .owner
            .spawn_blocking("snapshot-write", move || snapshot.into_file());
        let file = tokio::select! {
            closed = &mut cancel => return Err(StreamingError::Closed(closed)),
            written = write => match written {
                Ok(Ok(file)) => file,
                Ok(Err(e)) => return Err(StreamingError::Network(NetworkError::new(&e))),
                Err(e) => return Err(StreamingError::Network(NetworkError::new(&e))),
            },
        };
        // Snapshots are rare and slow: always worth a (root) span.
        let span = tracing::info_span!(
            "raft.send_snapshot",
            otel.kind = "client",
            group = self.group,
            target = self.target,
            bytes = file.len(),
        );
        let client = match &self.client {
            Ok(c) => c.alone.clone(),
            Err(e) => {
                return Err(StreamingError::Unreachable(Unreachable::new(&RpcFailure(
                    e.clone(),
                ))))
            }
        };
        let _stream = self.owner.track_connection(
            Direction::Outbound,
            format!("{} send_snapshot", self.target),
        );
        let ttl = sized_ttl(option.hard_ttl(), file.len() as usize);
        let started = std::time::Instant::now();
        let send = snapshot_stream::send(
            client,
            &self.owner,
            self.group,
            vote,
            meta,
            file,
            ttl,
            &span,
        )
        .instrument(span.clone());
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = send => self.outcome(r, started, RPCTypes::InstallSnapshot).map_err(streaming),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call::<rpc::TransferLeader>(&req, option.hard_ttl(), tracing::Span::none())
            .await
    }
}
