//! One tonic `Channel` per peer address, shared by every group that replicates to that peer.
//! JRaft's per-group Bolt clients multiplied connections by groups; here a node with a hundred
//! groups and two peers holds two channels. Each peer is an owner in the ledger.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::ledger::conn::{counting_connector, OwnerExecutor};
use crate::ledger::{Owner, OwnerKind};
use crate::raft::types::NodeId;

struct Peer {
    addr: String,
    channel: Channel,
    owner: Owner,
}

/// The node's peer channels, keyed by node id (an address change replaces the channel).
#[derive(Clone)]
pub struct Peers {
    parent: Owner,
    inner: Arc<Mutex<HashMap<NodeId, Peer>>>,
    connect_timeout: Duration,
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
    pub fn new(parent: Owner, connect_timeout: Duration) -> Self {
        Peers {
            parent,
            inner: Arc::new(Mutex::new(HashMap::new())),
            connect_timeout,
        }
    }

    /// The shared channel to `node` at `addr`, created lazily on first use.
    pub fn channel(&self, node: NodeId, addr: &str) -> Result<Channel, BadPeerAddr> {
        let mut peers = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = peers.get(&node) {
            if p.addr == addr {
                return Ok(p.channel.clone());
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
        let channel = endpoint.connect_with_connector_lazy(counting_connector(owner.clone()));
        if let Some(old) = peers.insert(
            node,
            Peer {
                addr: addr.to_string(),
                channel: channel.clone(),
                owner,
            },
        ) {
            tracing::info!(peer = node, old = %old.addr, new = %addr, "peer address changed");
            // The old channel's owner is retired like any other: it must reach zero once the
            // clones still in flight are dropped.
            let deadline = self.connect_timeout * 5;
            drop(self.parent.spawn("peer-retire", async move {
                drop(old.channel);
                old.owner.stop(deadline).await;
            }));
        }
        Ok(channel)
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
                drop(p.channel);
                p.owner
            })
            .collect();
        futures::future::join_all(owners.iter().map(|o| o.stop(deadline))).await;
    }
}
