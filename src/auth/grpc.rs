//! The shared gRPC server's check, as a tower layer in front of every service: a client call
//! must carry `authorization: Bearer <token>` metadata whose role allows it, or it is answered
//! UNAUTHENTICATED or PERMISSION_DENIED before any service sees it. Node-to-node calls pass
//! through: peers are checked by their certificates.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{BoxFuture, FutureExt};
use tonic::Status;

use super::policy::grpc_role;
use super::Authorizer;

/// The layer; with no authorizer every call passes.
#[derive(Clone)]
pub struct GrpcAuthLayer {
    authorizer: Option<Arc<Authorizer>>,
}

impl GrpcAuthLayer {
    /// Checks calls against `authorizer`, if any.
    pub fn new(authorizer: Option<Arc<Authorizer>>) -> Self {
        GrpcAuthLayer { authorizer }
    }
}

impl<S> tower::Layer<S> for GrpcAuthLayer {
    type Service = GrpcAuth<S>;

    fn layer(&self, inner: S) -> GrpcAuth<S> {
        GrpcAuth {
            inner,
            authorizer: self.authorizer.clone(),
        }
    }
}

/// The service the layer wraps around the server's routes.
#[derive(Clone)]
pub struct GrpcAuth<S> {
    inner: S,
    authorizer: Option<Arc<Authorizer>>,
}

impl<S, B> tower::Service<http::Request<B>> for GrpcAuth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if let Some(authorizer) = &self.authorizer {
            if let Some(needed) = grpc_role(req.uri().path()) {
                let presented = req
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .map(http::HeaderValue::as_bytes);
                if let Err(f) = authorizer.check(presented, needed) {
                    let status = if f.unauthenticated() {
                        Status::unauthenticated(f.to_string())
                    } else {
                        Status::permission_denied(format!(
                            "{f}: it needs the {} role",
                            needed.name()
                        ))
                    };
                    return futures::future::ready(Ok(status.into_http())).boxed();
                }
            }
        }
        self.inner.call(req).boxed()
    }
}
