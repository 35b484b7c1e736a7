//! The sending side of every node-to-node RPC: encode, call over a peer's shared channel,
//! decode. Used by openraft's network adapter and by the forwarding of proposals and reads.

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::raft::types::GroupId;
use crate::rpc::batcher::Batcher;
pub use crate::rpc::cluster::{client, PeerClient};
use crate::rpc::codec;
use crate::rpc::methods::Rpc;
use crate::rpc::pb::RaftRequest;

/// Why a call produced no response.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The call did not complete: the peer is unreachable, refused it, or answered a status.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(tonic::Status),
    /// No answer within the call's timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The peer's method ran and failed; the text is its error.
    #[error("{0}")]
    Remote(String),
}

/// The wire form of one call of `M` for `group`.
fn request<M: Rpc>(group: GroupId, req: &M::Request) -> Result<RaftRequest, CallError> {
    Ok(RaftRequest {
        group_id: group,
        payload: codec::encode(req).map_err(CallError::Status)?,
        method: M::METHOD.code(),
        traceparent: String::new(),
    })
}

/// The remote side answers `Result<Response, String>`; a reply that does not decode is the
/// peer's fault, reported like any other failed call.
pub(crate) fn response<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CallError> {
    let result: Result<T, String> = codec::decode(payload).map_err(CallError::Status)?;
    result.map_err(CallError::Remote)
}

/// Calls `M` for `group`, bounded by `timeout`. When `span` is recorded, its context travels
/// in the request's metadata, so that the peer's work joins the caller's trace.
pub async fn call<M: Rpc>(
    client: &mut PeerClient,
    group: GroupId,
    req: &M::Request,
    timeout: Duration,
    span: &tracing::Span,
) -> Result<M::Response, CallError> {
    let mut request = tonic::Request::new(request::<M>(group, req)?);
    if !span.is_none() {
        crate::otel::propagation::inject_metadata(span, request.metadata_mut());
    }
    // The bound is kept here, not sent as `grpc-timeout`: that header would cost every Raft
    // message a timer on the server, and a call this side gives up on is reset anyway.
    let reply = match tokio::time::timeout(timeout, client.call(request)).await {
        Err(_) => return Err(CallError::Timeout(timeout)),
        Ok(Err(status)) => return Err(CallError::Status(status)),
        Ok(Ok(r)) => r.into_inner(),
    };
    response::<M::Response>(&reply.payload)
}

/// Calls `M` for `group` in the peer's next batch, bounded by `timeout`; a recorded `span`'s
/// context travels in the call itself.
pub async fn call_batched<M: Rpc>(
    batcher: &Batcher,
    group: GroupId,
    req: &M::Request,
    timeout: Duration,
    span: &tracing::Span,
) -> Result<M::Response, CallError> {
    let mut request = request::<M>(group, req)?;
    if !span.is_none() {
        if let Some(tp) = crate::otel::propagation::traceparent_of(span) {
            request.traceparent = tp;
        }
    }
    let payload = match batcher.call(request, timeout).await {
        Ok(payload) => payload,
        Err(s) if s.code() == tonic::Code::DeadlineExceeded => {
            return Err(CallError::Timeout(timeout))
        }
        Err(s) => return Err(CallError::Status(s)),
    };
    response::<M::Response>(&payload)
}
