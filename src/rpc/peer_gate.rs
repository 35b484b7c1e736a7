//! The peer-certificate check of node-to-node calls, run on a call's headers before its body
//! is read. Node-to-node messages may be as large as a snapshot piece allows (hundreds of
//! MiB), so the check must come before the decoder buffers one: otherwise any client that
//! reaches the shared port (a token client over TLS, say) could make the node hold such a
//! message per stream before being refused. The cluster id is checked later, with the body,
//! because the introduction call is told apart by its content.

use tonic::{Request, Status};

use crate::raft::types::NodeId;
use crate::rpc::cluster::FROM_KEY;
use crate::tls::io::ConnInfo;
use crate::tls::names;

/// The check, as a tonic interceptor in front of the Raft service.
#[derive(Clone)]
pub struct PeerGate {
    /// With peer TLS on: a call must come over a connection whose certificate the peer CA
    /// signed, naming the node the call says it is from. Off, every call passes.
    required: bool,
    failures: prometheus::IntCounter,
}

impl PeerGate {
    /// A gate that refuses calls without a fitting peer certificate when `required`, counting
    /// each refusal in `failures`.
    pub fn new(required: bool, failures: prometheus::IntCounter) -> Self {
        PeerGate { required, failures }
    }
}

impl tonic::service::Interceptor for PeerGate {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        if !self.required {
            return Ok(req);
        }
        let from = req
            .metadata()
            .get(FROM_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<NodeId>().ok());
        let cert = req
            .extensions()
            .get::<ConnInfo>()
            .and_then(|i| i.peer.as_ref());
        let refusal = match (cert, from) {
            (None, _) => "the caller showed no certificate of the peer CA".to_string(),
            (Some(_), None) => "the call does not say which node it is from".to_string(),
            (Some(c), Some(n)) if !c.names(n) => format!(
                "the caller's certificate does not name node {n} ({})",
                names::node_name(n)
            ),
            _ => return Ok(req),
        };
        self.failures.inc();
        tracing::debug!(why = %refusal, "refused a node-to-node call");
        Err(Status::permission_denied(format!(
            "node-to-node calls need a peer certificate: {refusal}"
        )))
    }
}
