//! Which cluster a node-to-node call belongs to. Every Raft RPC carries the sender's node id
//! and its cluster id in metadata (`x-raftnode-from`, `x-raftnode-cluster`), stamped by an
//! interceptor on every peer client; the server refuses a call of another cluster before any
//! group sees it, logs it once per sender, and counts every one. A node whose cluster id is not
//! settled yet (a new data dir, during its start-up check) sends none, and may only introduce
//! itself.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Status;

use crate::raft::types::NodeId;
use crate::rpc::pb::raft_service_client::RaftServiceClient;

/// The metadata key of the sender's cluster id.
pub const CLUSTER_KEY: &str = "x-raftnode-cluster";
/// The metadata key of the sender's node id.
pub const FROM_KEY: &str = "x-raftnode-from";

/// This node's id and cluster id, shared by its peer clients and its server.
pub struct ClusterIdentity {
    from: AsciiMetadataValue,
    id: OnceLock<(String, AsciiMetadataValue)>,
    /// Senders already logged, with the cluster id they sent.
    logged: Mutex<HashSet<(String, String)>>,
    refusals: prometheus::IntCounter,
}

impl ClusterIdentity {
    /// Node `node`'s identity, its cluster id not yet settled; refusals count in `refusals`.
    pub fn new(node: NodeId, refusals: prometheus::IntCounter) -> Arc<ClusterIdentity> {
        Arc::new(ClusterIdentity {
            from: AsciiMetadataValue::from(node),
            id: OnceLock::new(),
            logged: Mutex::new(HashSet::new()),
            refusals,
        })
    }

    /// Settles the cluster id (once; later calls are ignored). An id that cannot travel as
    /// metadata (not printable ASCII) is refused.
    pub fn set(&self, id: &str) -> Result<(), String> {
        let value = AsciiMetadataValue::try_from(id)
            .map_err(|_| format!("cluster id {id:?} is not printable ASCII"))?;
        let _ = self.id.set((id.to_string(), value));
        Ok(())
    }

    /// The cluster id, once settled.
    pub fn get(&self) -> Option<&str> {
        self.id.get().map(|(s, _)| s.as_str())
    }

    /// The interceptor that stamps every call of a peer client.
    pub fn stamp(self: &Arc<Self>) -> Stamp {
        Stamp(self.clone())
    }

    /// Admits a call that carried `metadata`; `introduction` is true for the one method a
    /// node with no cluster id yet may call.
    pub fn admit(&self, metadata: &MetadataMap, introduction: bool) -> Result<(), Status> {
        let Some((ours, _)) = self.id.get() else {
            return Ok(());
        };
        let theirs = metadata.get(CLUSTER_KEY).and_then(|v| v.to_str().ok());
        let from = metadata
            .get(FROM_KEY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?");
        match theirs {
            Some(t) if t == ours => Ok(()),
            None if introduction => Ok(()),
            _ => {
                let theirs = theirs.unwrap_or("(none)");
                self.refusals.inc();
                let first = self
                    .logged
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((from.to_string(), theirs.to_string()));
                if first {
                    tracing::warn!(
                        peer = from,
                        their_cluster = theirs,
                        our_cluster = ours.as_str(),
                        "refused a node-to-node call from another cluster (logged once per peer)"
                    );
                }
                Err(Status::failed_precondition(format!(
                    "this node belongs to cluster {ours}; the caller (node {from}) to cluster \
                     {theirs}"
                )))
            }
        }
    }
}

/// A client of the Raft service on a peer's shared channel, whose every call carries this
/// node's id and cluster id.
pub type PeerClient = RaftServiceClient<InterceptedService<Channel, Stamp>>;

/// A client of the Raft service on one peer's shared channel, with the message size bounds.
pub fn client(channel: Channel, max_message_bytes: usize, stamp: Stamp) -> PeerClient {
    RaftServiceClient::with_interceptor(channel, stamp)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

/// Stamps a peer client's every call with this node's id and cluster id.
#[derive(Clone)]
pub struct Stamp(Arc<ClusterIdentity>);

impl tonic::service::Interceptor for Stamp {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let md = req.metadata_mut();
        md.insert(FROM_KEY, self.0.from.clone());
        if let Some((_, v)) = self.0.id.get() {
            md.insert(CLUSTER_KEY, v.clone());
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    fn identity(node: NodeId) -> Arc<ClusterIdentity> {
        ClusterIdentity::new(node, prometheus::IntCounter::new("r", "r").unwrap())
    }

    fn stamped(by: &Arc<ClusterIdentity>) -> MetadataMap {
        by.stamp()
            .call(tonic::Request::new(()))
            .unwrap()
            .metadata()
            .clone()
    }

    #[test]
    fn calls_of_another_cluster_are_refused_and_counted() {
        let a = identity(1);
        let b = identity(2);
        let stranger = identity(3);
        // Not settled: everything passes, nothing is stamped but the node id.
        assert!(a.admit(&stamped(&stranger), false).is_ok());
        a.set("c-1").unwrap();
        b.set("c-1").unwrap();
        stranger.set("c-2").unwrap();
        assert!(a.admit(&stamped(&b), false).is_ok());
        let e = a.admit(&stamped(&stranger), false).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(
            e.message().contains("c-1") && e.message().contains("c-2"),
            "{e}"
        );
        // A node not settled yet may only introduce itself.
        let new = identity(4);
        assert!(a.admit(&stamped(&new), true).is_ok());
        assert!(a.admit(&stamped(&new), false).is_err());
        assert_eq!(a.refusals.get(), 2);
        // Settling twice keeps the first.
        a.set("c-9").unwrap();
        assert_eq!(a.get(), Some("c-1"));
    }
}
