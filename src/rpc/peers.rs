//! One tonic `Channel` per peer address, shared by every group that replicates to that peer.
//! JRaft's per-group Bolt clients multiplied connections by groups; here a node with a hundred
//! groups and two peers holds two channels. Each peer is an owner in the ledger, and owns the
//! peer's batching queue ([`Batcher`]) with its sender task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::ledger::conn::OwnerExecutor;
use crate::ledger::{Owner, OwnerKind};
use crate::raft::types::NodeId;
use crate::rpc::batcher::{BatchLimits, Batcher};
use crate::rpc::cluster::{ClusterIdentity, Stamp};
use crate::tls::io::peer_connector;
use crate::tls::Tls;

struct Peer {
    addr: String,
    link: PeerLink,
    owner: Owner,
}

/// What reaches one peer: its shared channel, for calls that travel alone, and its batching
/// queue, for the Raft messages of every group.
#[derive(Clone)]
pub struct PeerLink {
    /// The shared channel.
    pub channel: Channel,
    /// The peer's queue, which sends over the same channel.
    pub batcher: Batcher,
}

/// How the peer queues batch, and where their batch sizes are recorded.
#[derive(Clone)]
pub struct Batching {
    /// Batch sizes and bounds.
    pub limits: BatchLimits,
    /// Largest message sent or accepted.
    pub max_message_bytes: usize,
    /// `raftnode_peer_batch_messages{peer}`.
    pub sizes: prometheus::HistogramVec,
}

/// The node's peer channels, keyed by node id (an address change replaces the channel).
#[derive(Clone)]
pub struct Peers {
    parent: Owner,
    identity: Arc<ClusterIdentity>,
    tls: Option<Arc<Tls>>,
    inner: Arc<Mutex<HashMap<NodeId, Peer>>>,
    connect_timeout: Duration,
    batching: Batching,
}

/// A peer address that cannot be dialled.
#[derive(Debug, thiserror::Error)]
#[error("bad address {addr:?} for node {node}: {reason}")]
pub struct BadPeerAddr {
    /// The peer.
    pub node: NodeId,
    /// Its address as given.
    pub addr: String,
    /// Why it cannot be used.
    pub reason: String,
}

impl Peers {
    /// No channel yet; each peer's is made on first use, as a child owner of `parent`.
    pub fn new(
        parent: Owner,
        identity: Arc<ClusterIdentity>,
        tls: Option<Arc<Tls>>,
        connect_timeout: Duration,
        batching: Batching,
    ) -> Self {
        Peers {
            parent,
            identity,
            tls,
            inner: Arc::new(Mutex::new(HashMap::new())),
            connect_timeout,
            batching,
        }
    }

    /// The stamp of this node's calls: its id and cluster id.
    pub fn stamp(&self) -> Stamp {
        self.identity.stamp()
    }

    /// This node's id and cluster id.
    pub fn identity(&self) -> &Arc<ClusterIdentity> {
        &self.identity
    }

    /// The shared channel to `node` at `addr`, created lazily on first use.
    pub fn channel(&self, node: NodeId, addr: &str) -> Result<Channel, BadPeerAddr> {
        self.link(node, addr).map(|l| l.channel)
    }

    /// The channel and the batching queue to `node` at `addr`, created lazily on first use.
    pub fn link(&self, node: NodeId, addr: &str) -> Result<PeerLink, BadPeerAddr> {
        let mut peers = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = peers.get(&node) {
            if p.addr == addr {
                return Ok(p.link.clone());
            }
        }
        let bad = |reason: String| BadPeerAddr {
            node,
            addr: addr.to_string(),
            reason,
        };
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let owner = self.parent.child(OwnerKind::Peer, node.to_string());
        // The channel's worker and connection tasks then count as the peer's own.
        let endpoint = endpoint.executor(OwnerExecutor::new(owner.clone(), "peer-channel"));
        let channel = endpoint.connect_with_connector_lazy(peer_connector(
            owner.clone(),
            node,
            self.tls.clone(),
        ));
        let client = crate::rpc::client::client(
            channel.clone(),
            self.batching.max_message_bytes,
            self.stamp(),
        );
        let sizes = self.batching.sizes.with_label_values(&[node.to_string()]);
        let batcher = Batcher::start(&owner, client, self.batching.limits, sizes);
        let link = PeerLink { channel, batcher };
        if let Some(old) = peers.insert(
            node,
            Peer {
                addr: addr.to_string(),
                link: link.clone(),
                owner,
            },
        ) {
            tracing::info!(peer = node, old = %old.addr, new = %addr, "peer address changed");
            // The old channel's owner is retired like any other: it must reach zero once the
            // clones still in flight are dropped.
            let deadline = self.connect_timeout * 5;
            drop(self.parent.spawn("peer-retire", async move {
                drop(old.link);
                old.owner.stop(deadline).await;
            }));
        }
        Ok(link)
    }

    /// Drops every channel and stops the peer owners, together, within `deadline`. Groups
    /// must have stopped first, since they hold clones of the channels.
    pub async fn close(&self, deadline: Duration) {
        let peers: Vec<Peer> = {
            let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            map.drain().map(|(_, p)| p).collect()
        };
        let owners: Vec<Owner> = peers
            .into_iter()
            .map(|p| {
                drop(p.link);
                p.owner
            })
            .collect();
        futures::future::join_all(owners.iter().map(|o| o.stop(deadline))).await;
    }
}
