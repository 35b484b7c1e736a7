//! The one shared tonic server of the node. Every Raft RPC names its group and is routed
//! through the registry; an unknown group is NOT_FOUND. Accepted sockets are wrapped so that
//! each counts as an inbound connection of the `rpc_server` owner for exactly its lifetime.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::context::NodeContext;
use crate::group::Group;
use crate::kv::{Kv, ReadMode};
use crate::ledger::{Counted, Direction, Owner};
use crate::raft::types::{Snapshot, SnapshotMeta, Vote};
use crate::rpc::codec;
use crate::rpc::pb::kv_service_server::{KvService, KvServiceServer};
use crate::rpc::pb::raft_service_server::{RaftService, RaftServiceServer};
use crate::rpc::pb::{self, RaftReply, RaftRequest};
use crate::rpc::FORWARDED_HEADER;

/// The running server: stop it with [`RpcServer::stop`].
pub struct RpcServer {
    pub owner: Owner,
    task: tokio::task::JoinHandle<()>,
    /// Force-closes accepted connections that did not drain: tonic runs each connection in a
    /// task of its own, which aborting the server task would leave running.
    kill: CancellationToken,
    pub local_addr: SocketAddr,
}

impl RpcServer {
    /// Serves on an already bound listener, so that a bind failure is reported before startup
    /// goes any further.
    pub fn start(
        ctx: Arc<NodeContext>,
        listener: TcpListener,
        owner: Owner,
    ) -> io::Result<RpcServer> {
        let local_addr = listener.local_addr()?;
        let conn_owner = owner.clone();
        let kill = CancellationToken::new();
        let conn_kill = kill.clone();
        let incoming = futures::stream::unfold(listener, move |l| {
            let owner = conn_owner.clone();
            let kill = conn_kill.clone();
            async move {
                let accepted = l.accept().await.map(|(stream, peer)| {
                    let _ = stream.set_nodelay(true);
                    Counted::killable(
                        stream,
                        owner.track_connection(Direction::Inbound, peer.to_string()),
                        kill,
                    )
                });
                Some((accepted, l))
            }
        });
        let max = crate::config::MAX_MESSAGE_BYTES;
        let raft = RaftServiceServer::new(RaftSvc { ctx: ctx.clone() })
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let kv = KvServiceServer::new(KvSvc { ctx })
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let token = owner.token().clone();
        let task = owner.spawn("rpc-serve", async move {
            let result = tonic::transport::Server::builder()
                .add_service(raft)
                .add_service(kv)
                .serve_with_incoming_shutdown(incoming, token.cancelled_owned())
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "gRPC server failed");
            }
        });
        Ok(RpcServer {
            owner,
            task,
            kill,
            local_addr,
        })
    }

    /// Stops accepting, lets in-flight calls drain for up to `drain`, then closes what is left;
    /// finally holds the `rpc_server` owner to zero.
    pub async fn stop(self, drain: Duration, leak_deadline: Duration) {
        self.owner.token().cancel();
        let abort = self.task.abort_handle();
        if tokio::time::timeout(drain, self.task).await.is_err() {
            tracing::warn!("gRPC server did not drain in time; closing remaining connections");
            abort.abort();
        }
        // Whatever is still connected (a peer that never answered the GOAWAY, a silent client)
        // is closed now; the owner's verdict below then judges what still remains.
        self.kill.cancel();
        self.owner.stop(leak_deadline).await;
    }
}

fn group_of(ctx: &NodeContext, id: u64) -> Result<Arc<crate::group::Group>, Status> {
    ctx.registry
        .get(id)
        .ok_or_else(|| Status::not_found(format!("group {id} is not running on this node")))
}

/// Encodes openraft's answer; its error travels as text, which is all the caller needs.
fn reply<T: Serialize, E: std::fmt::Display>(
    r: Result<T, E>,
) -> Result<Response<RaftReply>, Status> {
    let r: Result<T, String> = r.map_err(|e| e.to_string());
    Ok(Response::new(RaftReply {
        payload: codec::encode(&r)?,
    }))
}

fn decode<T: DeserializeOwned>(req: &RaftRequest) -> Result<T, Status> {
    codec::decode(&req.payload)
}

struct RaftSvc {
    ctx: Arc<NodeContext>,
}

/// Which Raft RPCs get a span. Heartbeats and votes never do, so that an idle cluster sends
/// the collector nothing; appends do when the leader sent a trace context, which it does only
/// for entries of a sampled write; snapshots always do, being rare and slow.
#[derive(Clone, Copy, PartialEq)]
enum Traced {
    Never,
    WithParent,
    Always,
}

impl RaftSvc {
    /// Routes one Raft RPC to its group, decodes it, runs it, and counts the outcome.
    async fn handle<Req, T, E, Fut>(
        &self,
        method: &'static str,
        traced: Traced,
        req: Request<RaftRequest>,
        call: impl FnOnce(Arc<Group>, Req) -> Fut,
    ) -> Result<Response<RaftReply>, Status>
    where
        Req: DeserializeOwned,
        T: Serialize,
        E: std::fmt::Display,
        Fut: Future<Output = Result<T, E>>,
    {
        let span = match traced {
            _ if !crate::otel::enabled() => tracing::Span::none(),
            Traced::Never => tracing::Span::none(),
            Traced::WithParent if !req.metadata().contains_key("traceparent") => {
                tracing::Span::none()
            }
            Traced::WithParent | Traced::Always => {
                let span = tracing::info_span!(
                    "raft.rpc",
                    otel.name = %format_args!("raft.{method}"),
                    otel.kind = "server",
                    group = req.get_ref().group_id,
                );
                crate::otel::propagation::adopt_from_metadata(&span, req.metadata());
                span
            }
        };
        let r = async {
            let req = req.into_inner();
            let g = group_of(&self.ctx, req.group_id)?;
            reply(call(g, decode(&req)?).await)
        }
        .instrument(span)
        .await;
        self.ctx.deps.rpc_metrics.served("raft", method, &r);
        r
    }
}

#[tonic::async_trait]
impl RaftService for RaftSvc {
    async fn vote(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        self.handle("vote", Traced::Never, req, |g, r| async move {
            g.raft.vote(r).await
        })
        .await
    }

    async fn pre_vote(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        self.handle("pre_vote", Traced::Never, req, |g, r| async move {
            g.raft.pre_vote(r).await
        })
        .await
    }

    async fn append_entries(
        &self,
        req: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        self.handle(
            "append_entries",
            Traced::WithParent,
            req,
            |g, r| async move { g.raft.append_entries(r).await },
        )
        .await
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        self.handle(
            "install_snapshot",
            Traced::Always,
            req,
            |g, (vote, meta, data): (Vote, SnapshotMeta, serde_bytes::ByteBuf)| async move {
                let snapshot = Snapshot {
                    meta,
                    snapshot: data.into_vec(),
                };
                g.raft.install_full_snapshot(vote, snapshot).await
            },
        )
        .await
    }

    async fn transfer_leader(
        &self,
        req: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        self.handle("transfer_leader", Traced::Never, req, |g, r| async move {
            g.raft.handle_transfer_leader(r).await
        })
        .await
    }
}

struct KvSvc {
    ctx: Arc<NodeContext>,
}

fn forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().contains_key(FORWARDED_HEADER)
}

impl KvSvc {
    /// The server span of a client call, continuing the caller's trace when it sent one (a
    /// follower forwarding to this leader always does, when the write is traced).
    fn span<T>(method: &'static str, req: &Request<T>, fwd: bool) -> tracing::Span {
        let span = tracing::info_span!(
            "grpc.request",
            otel.name = %format_args!("raftnode.v1.KvService/{method}"),
            rpc.method = method,
            otel.kind = "server",
            forwarded = fwd,
        );
        crate::otel::propagation::adopt_from_metadata(&span, req.metadata());
        span
    }

    async fn observe<T>(
        &self,
        method: &'static str,
        span: tracing::Span,
        fut: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let r = fut.instrument(span).await;
        self.ctx.deps.rpc_metrics.served("kv", method, &r);
        r
    }
}

#[tonic::async_trait]
impl KvService for KvSvc {
    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutReply>, Status> {
        let fwd = forwarded(&req);
        let span = Self::span("Put", &req, fwd);
        let r = req.into_inner();
        self.observe("put", span, async {
            let index = Kv::new(&self.ctx, fwd)
                .put(r.group_id, r.key, r.value)
                .await
                .map_err(|e| e.to_status())?;
            Ok(Response::new(pb::PutReply { index }))
        })
        .await
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetReply>, Status> {
        let fwd = forwarded(&req);
        let span = Self::span("Get", &req, fwd);
        let r = req.into_inner();
        self.observe("get", span, async {
            let mode = ReadMode::from_pb(r.read_mode).ok_or_else(|| {
                Status::invalid_argument(format!("unknown read mode {}", r.read_mode))
            })?;
            let value = Kv::new(&self.ctx, fwd)
                .get(r.group_id, r.key, mode)
                .await
                .map_err(|e| e.to_status())?;
            Ok(Response::new(pb::GetReply {
                found: value.is_some(),
                value: value.unwrap_or_default(),
            }))
        })
        .await
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteReply>, Status> {
        let fwd = forwarded(&req);
        let span = Self::span("Delete", &req, fwd);
        let r = req.into_inner();
        self.observe("delete", span, async {
            let (index, existed) = Kv::new(&self.ctx, fwd)
                .delete(r.group_id, r.key)
                .await
                .map_err(|e| e.to_status())?;
            Ok(Response::new(pb::DeleteReply { index, existed }))
        })
        .await
    }
}
