//! The one shared tonic server of the node. Every node-to-node call names its method and its
//! group and is routed through the node's [`Router`]; an unknown group is NOT_FOUND. The
//! embedding program may add its own client-facing services to the same server.
//!
//! Accepted sockets are wrapped so that each counts as an inbound connection of the
//! `rpc_server` owner for exactly its lifetime.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Routes;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::auth::grpc::GrpcAuthLayer;
use crate::ledger::Owner;
use crate::metrics::RpcMetrics;
use crate::net::Admission;
use crate::raft::types::GroupId;
use crate::rpc::accept;
use crate::rpc::batcher::{to_result, MAX_BATCH_MESSAGES};
use crate::rpc::cluster::ClusterIdentity;
use crate::rpc::methods::{self, Ctx, Method, Traced};
use crate::rpc::pb::raft_service_server::{RaftService, RaftServiceServer};
use crate::rpc::pb::{RaftBatch, RaftBatchReply, RaftReply, RaftRequest, SnapshotChunk};
use crate::rpc::peer_gate::PeerGate;
use crate::rpc::router::Router;
use crate::rpc::snapshot_stream;

/// What the server serves, kept so that a restart serves the same.
#[derive(Clone)]
pub struct Services {
    /// The node's side of node-to-node calls.
    pub router: Arc<dyn Router>,
    /// The program's own services (the KV store's client API, say), if any.
    pub app: Option<Routes>,
    /// Requests served, by service, method and code.
    pub metrics: Arc<RpcMetrics>,
    /// Largest message accepted or sent.
    pub max_message_bytes: usize,
    /// What one client may hold.
    pub limits: GrpcLimits,
    /// The tokens client calls are checked against, if clients are authenticated.
    pub auth: Option<Arc<crate::auth::Authorizer>>,
    /// This node's cluster id, which node-to-node calls must carry.
    pub cluster: Arc<ClusterIdentity>,
    /// TLS, when on: peers then prove who they are with certificates.
    pub tls: Option<Arc<crate::tls::Tls>>,
}

/// What the gRPC server lets clients hold.
#[derive(Clone, Copy, Debug)]
pub struct GrpcLimits {
    /// Connections open at once, peers' included; more are closed as they arrive.
    pub max_connections: usize,
    /// Concurrent calls on one connection.
    pub max_concurrent_streams: u32,
}

/// The running server: stop it with [`RpcServer::stop`].
pub struct RpcServer {
    owner: Owner,
    task: tokio::task::JoinHandle<()>,
    /// Force-closes accepted connections that did not drain: tonic runs each connection in a
    /// task of its own, which aborting the server task would leave running.
    kill: CancellationToken,
    local_addr: SocketAddr,
}

impl RpcServer {
    /// Serves on an already bound listener, so that a bind failure is reported before startup
    /// goes any further.
    pub fn start(listener: TcpListener, owner: Owner, services: Services) -> io::Result<RpcServer> {
        let local_addr = listener.local_addr()?;
        let kill = CancellationToken::new();
        let admission = Admission::new(
            "grpc",
            services.limits.max_connections,
            services.metrics.refused("grpc_connections"),
        );
        let incoming = accept::incoming(
            listener,
            &owner,
            admission,
            services.tls.clone(),
            kill.clone(),
            services
                .metrics
                .auth_failures
                .with_label_values(&["tls_handshake"]),
        );
        let max = services.max_message_bytes;
        let cert_failures = services
            .metrics
            .auth_failures
            .with_label_values(&["peer_certificate"]);
        // The certificate check runs on the headers, before the decoder buffers a message.
        let raft = InterceptedService::new(
            RaftServiceServer::new(RaftSvc {
                router: services.router,
                metrics: services.metrics,
                cluster: services.cluster,
            })
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
            PeerGate::new(services.tls.is_some(), cert_failures),
        );
        let token = owner.token().clone();
        let app = services.app;
        let max_streams = services.limits.max_concurrent_streams;
        let auth = services.auth;
        let task = owner.spawn("rpc-serve", async move {
            // Peers cancel calls that outlive their deadline (openraft gives an append one
            // heartbeat interval), which resets streams the server may not have accepted yet.
            // At h2's default of 20 such resets, a loaded node tore down a peer's connection
            // with ENHANCE_YOUR_CALM, failing every call on it, so the peer looked dead and
            // woke every group it led: the bound stays (a rapid-reset flood is still cut off),
            // sized for thousands of groups' messages.
            let mut builder = tonic::transport::Server::builder()
                .http2_max_pending_accept_reset_streams(Some(PENDING_RESET_STREAMS))
                .max_concurrent_streams(Some(max_streams))
                .layer(GrpcAuthLayer::new(auth));
            let router = match app {
                Some(routes) => builder.add_routes(routes).add_service(raft),
                None => builder.add_service(raft),
            };
            let result = router
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

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The `rpc_server` owner: every accepted connection counts here.
    #[cfg(feature = "leak-injection")]
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Stops accepting, lets in-flight calls drain for up to `drain`, then closes what is left;
    /// finally holds the `rpc_server` owner to zero within `leak_deadline`.
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

/// Streams a client may reset before the server accepted them, at once, before the connection
/// is closed as abusive.
const PENDING_RESET_STREAMS: usize = 1024;

struct RaftSvc {
    router: Arc<dyn Router>,
    metrics: Arc<RpcMetrics>,
    cluster: Arc<ClusterIdentity>,
}

/// Where a call's trace context comes from: the request's metadata for a lone call, the call's
/// own field inside a batch.
enum Parent<'a> {
    Metadata(&'a tonic::metadata::MetadataMap),
    Traceparent(&'a str),
}

impl Parent<'_> {
    fn present(&self) -> bool {
        match self {
            Parent::Metadata(md) => md.contains_key("traceparent"),
            Parent::Traceparent(tp) => !tp.is_empty(),
        }
    }
}

/// The server span of a call, per the method's [`Traced`] policy.
fn span(method: Method, group: GroupId, parent: Parent<'_>) -> tracing::Span {
    let traced = match method.traced() {
        Traced::Never => false,
        Traced::WithParent => parent.present(),
        Traced::Always => true,
    };
    if !traced {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "raft.rpc",
        otel.name = method.span_name(),
        otel.kind = "server",
        group = group,
    );
    match parent {
        Parent::Metadata(md) => crate::otel::propagation::adopt_from_metadata(&span, md),
        Parent::Traceparent(tp) if !tp.is_empty() => {
            crate::otel::propagation::adopt_traceparent(&span, tp)
        }
        Parent::Traceparent(_) => {}
    }
    span
}

impl RaftSvc {
    /// Admits a node-to-node call by its cluster id; its certificate was checked before its
    /// body was read ([`PeerGate`]).
    fn admit(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        introduction: bool,
    ) -> Result<(), Status> {
        self.cluster.admit(metadata, introduction)
    }

    /// Serves one call, alone or inside a batch, and counts it under its own method.
    async fn serve(&self, call: &RaftRequest, parent: Parent<'_>) -> Result<Vec<u8>, Status> {
        let Some(method) = Method::from_code(call.method) else {
            let r = Err(Status::unimplemented(format!(
                "unknown Raft method code {} (a newer peer?)",
                call.method
            )));
            self.metrics.served("raft", "unknown", &r);
            return r;
        };
        let span = span(method, call.group_id, parent);
        let ctx = Ctx::new(self.router.clone(), call.group_id);
        let r = methods::serve(method, ctx, &call.payload)
            .instrument(span)
            .await;
        self.metrics.served("raft", method.name(), &r);
        r
    }
}

#[tonic::async_trait]
impl RaftService for RaftSvc {
    /// A snapshot in pieces; counted and traced as `install_snapshot`, under the group its
    /// first piece names.
    async fn send_snapshot(
        &self,
        req: Request<tonic::Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftReply>, Status> {
        let method = Method::InstallSnapshot;
        let (metadata, _, mut stream) = req.into_parts();
        self.admit(&metadata, false)?;
        let first = match snapshot_stream::first_piece(&mut stream).await {
            Ok(first) => first,
            Err(e) => {
                let r = Err(e);
                self.metrics.served("raft", method.name(), &r);
                return r.map(|p: Vec<u8>| Response::new(RaftReply { payload: p }));
            }
        };
        let span = span(method, first.group_id, Parent::Metadata(&metadata));
        let r = snapshot_stream::receive(self.router.as_ref(), first, stream)
            .instrument(span)
            .await;
        self.metrics.served("raft", method.name(), &r);
        Ok(Response::new(RaftReply { payload: r? }))
    }

    async fn call(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let introduction = req.get_ref().method == Method::Meet.code();
        self.admit(req.metadata(), introduction)?;
        let parent = Parent::Metadata(req.metadata());
        let payload = self.serve(req.get_ref(), parent).await?;
        Ok(Response::new(RaftReply { payload }))
    }

    /// The calls of a batch run concurrently, each as if it came alone: they are for
    /// different groups (or the same group's pipelined appends, which openraft orders by
    /// their log ids), and a failure of one is its own result, not the batch's.
    async fn batch(&self, req: Request<RaftBatch>) -> Result<Response<RaftBatchReply>, Status> {
        self.admit(req.metadata(), false)?;
        let calls = req.into_inner().calls;
        if calls.len() > MAX_BATCH_MESSAGES {
            return Err(Status::invalid_argument(format!(
                "a batch of {} calls; at most {MAX_BATCH_MESSAGES} are served",
                calls.len()
            )));
        }
        let served = calls
            .iter()
            .map(|c| self.serve(c, Parent::Traceparent(&c.traceparent)));
        let results = futures::future::join_all(served)
            .await
            .into_iter()
            .map(to_result)
            .collect();
        Ok(Response::new(RaftBatchReply { results }))
    }
}
