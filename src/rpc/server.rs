//! The one shared tonic server of the node. Every Raft RPC names its group and is routed
//! through the registry; an unknown group is NOT_FOUND. Accepted sockets are wrapped so that
//! each counts as an inbound connection of the `rpc_server` owner for exactly its lifetime.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::{Request, Response, Status};

use crate::context::NodeContext;
use crate::kv::{Kv, ReadMode};
use crate::ledger::{Direction, ItemGuard, Owner};
use crate::raft::types::{Snapshot, SnapshotMeta, Vote};
use crate::rpc::codec;
use crate::rpc::pb::kv_service_server::{KvService, KvServiceServer};
use crate::rpc::pb::raft_service_server::{RaftService, RaftServiceServer};
use crate::rpc::pb::{self, RaftReply, RaftRequest};
use crate::rpc::FORWARDED_HEADER;

/// An accepted socket that counts itself in the ledger until it is dropped.
pub struct CountedStream {
    inner: TcpStream,
    _guard: ItemGuard,
}

impl Connected for CountedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The running server: stop it with [`RpcServer::stop`].
pub struct RpcServer {
    owner: Owner,
    task: tokio::task::JoinHandle<()>,
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
        let incoming = futures::stream::unfold(listener, move |l| {
            let owner = conn_owner.clone();
            async move {
                let accepted = l.accept().await.map(|(stream, peer)| {
                    let _ = stream.set_nodelay(true);
                    CountedStream {
                        inner: stream,
                        _guard: owner.track_connection(Direction::Inbound, peer.to_string()),
                    }
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

#[tonic::async_trait]
impl RaftService for RaftSvc {
    async fn vote(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = req.into_inner();
        let g = group_of(&self.ctx, req.group_id)?;
        reply(g.raft.vote(decode(&req)?).await)
    }

    async fn pre_vote(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = req.into_inner();
        let g = group_of(&self.ctx, req.group_id)?;
        reply(g.raft.pre_vote(decode(&req)?).await)
    }

    async fn append_entries(
        &self,
        req: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let req = req.into_inner();
        let g = group_of(&self.ctx, req.group_id)?;
        reply(g.raft.append_entries(decode(&req)?).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let req = req.into_inner();
        let g = group_of(&self.ctx, req.group_id)?;
        let (vote, meta, data): (Vote, SnapshotMeta, serde_bytes::ByteBuf) = decode(&req)?;
        let snapshot = Snapshot {
            meta,
            snapshot: data.into_vec(),
        };
        reply(g.raft.install_full_snapshot(vote, snapshot).await)
    }

    async fn transfer_leader(
        &self,
        req: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let req = req.into_inner();
        let g = group_of(&self.ctx, req.group_id)?;
        reply(g.raft.handle_transfer_leader(decode(&req)?).await)
    }
}

struct KvSvc {
    ctx: Arc<NodeContext>,
}

fn forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().contains_key(FORWARDED_HEADER)
}

#[tonic::async_trait]
impl KvService for KvSvc {
    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutReply>, Status> {
        let fwd = forwarded(&req);
        let r = req.into_inner();
        let index = Kv::new(&self.ctx, fwd)
            .put(r.group_id, r.key, r.value)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::PutReply { index }))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetReply>, Status> {
        let fwd = forwarded(&req);
        let r = req.into_inner();
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
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteReply>, Status> {
        let fwd = forwarded(&req);
        let r = req.into_inner();
        let (index, existed) = Kv::new(&self.ctx, fwd)
            .delete(r.group_id, r.key)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::DeleteReply { index, existed }))
    }
}
