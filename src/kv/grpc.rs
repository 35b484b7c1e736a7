//! The KV store's gRPC client API (`raftnode.v1.KvService`), served by the node's shared
//! server. Any member answers: the node hands writes to the leader and serves linearizable
//! reads after the leader grants a read index.

use std::future::Future;
use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::kv::ops::{Kv, KvError};
use crate::metrics::RpcMetrics;
use crate::node::{ReadMode, RequestError};
use crate::rpc::pb::kv_service_server::{KvService, KvServiceServer};
use crate::rpc::pb::{self, ReadMode as PbReadMode};

impl KvError {
    /// The gRPC status of this error.
    pub fn to_status(&self) -> Status {
        let msg = self.to_string();
        match self {
            KvError::BadRequest(_) | KvError::Request(RequestError::Rejected(_)) => {
                Status::invalid_argument(msg)
            }
            KvError::TooLarge(_) => Status::out_of_range(msg),
            KvError::Request(RequestError::GroupNotFound(_)) => Status::not_found(msg),
            KvError::Request(
                RequestError::NoLeader(_) | RequestError::Draining | RequestError::StorageFailed,
            ) => Status::unavailable(msg),
            KvError::Request(RequestError::Codec(_)) | KvError::Read(_) => Status::internal(msg),
            KvError::Request(RequestError::Overloaded(_)) => {
                let mut status = Status::resource_exhausted(msg);
                // gRPC's retry pushback: how long the client waits before it tries again.
                let ms = crate::node::error::OVERLOAD_RETRY_AFTER.as_millis();
                status.metadata_mut().insert(
                    "grpc-retry-pushback-ms",
                    u64::try_from(ms).unwrap_or(u64::MAX).into(),
                );
                status
            }
        }
    }
}

fn read_mode(m: i32) -> Option<ReadMode> {
    match PbReadMode::try_from(m).ok()? {
        PbReadMode::Linearizable => Some(ReadMode::Linearizable),
        PbReadMode::Lease => Some(ReadMode::Lease),
        PbReadMode::Local => Some(ReadMode::Local),
    }
}

/// The service, with its requests counted in `raftnode_rpc_requests_total{service="kv"}`.
pub fn service(
    kv: Kv,
    metrics: Arc<RpcMetrics>,
    max_message_bytes: usize,
) -> KvServiceServer<KvSvc> {
    KvServiceServer::new(KvSvc { kv, metrics })
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

/// The KV service's handlers.
pub struct KvSvc {
    kv: Kv,
    metrics: Arc<RpcMetrics>,
}

impl KvSvc {
    /// The server span of a client call, continuing the caller's trace when it sent one.
    fn span<T>(method: &'static str, req: &Request<T>) -> tracing::Span {
        let span = tracing::info_span!(
            "grpc.request",
            otel.name = %format_args!("raftnode.v1.KvService/{method}"),
            rpc.method = method,
            otel.kind = "server",
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
        self.metrics.served("kv", method, &r);
        r
    }
}

#[tonic::async_trait]
impl KvService for KvSvc {
    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutReply>, Status> {
        let span = Self::span("Put", &req);
        let r = req.into_inner();
        self.observe("put", span, async {
            let index = self
                .kv
                .put(r.group_id, r.key, r.value)
                .await
                .map_err(|e| e.to_status())?;
            Ok(Response::new(pb::PutReply { index }))
        })
        .await
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetReply>, Status> {
        let span = Self::span("Get", &req);
        let r = req.into_inner();
        self.observe("get", span, async {
            let mode = read_mode(r.read_mode).ok_or_else(|| {
                Status::invalid_argument(format!("unknown read mode {}", r.read_mode))
            })?;
            let value = self
                .kv
                .get(r.group_id, &r.key, mode)
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
        let span = Self::span("Delete", &req);
        let r = req.into_inner();
        self.observe("delete", span, async {
            let (index, existed) = self
                .kv
                .delete(r.group_id, r.key)
                .await
                .map_err(|e| e.to_status())?;
            Ok(Response::new(pb::DeleteReply { index, existed }))
        })
        .await
    }
}
