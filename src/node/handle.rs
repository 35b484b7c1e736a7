//! The typed handle of a running node: what the embedding program calls. Every call goes to
//! the node's shared state (`shared.rs`), encoding and decoding the state machine's types at
//! this edge only. The stop is in `lifecycle.rs`, next to the start.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::http::HttpServer;
use crate::ledger::{Ledger, Owner};
use crate::node::data_dir::DirLock;
use crate::node::error::{GroupOpError, RequestError};
use crate::node::shared::NodeCore;
use crate::node::types::{AfterPurge, Applied, ReadMode, StopReport};
use crate::raft::types::{GroupId, NodeId};
use crate::state_machine::{codec, Reader, StateMachine};
use crate::storage::Storage;

/// The node's servers and what holds its data dir, until the stop takes them.
pub(crate) struct Servers {
    pub grpc_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    pub running: tokio::sync::Mutex<Option<Running>>,
    pub report: std::sync::OnceLock<StopReport>,
}

/// What only the stop may take apart.
pub(crate) struct Running {
    /// Held, not read: the data dir stays locked until the stop drops it.
    pub _lock: DirLock,
    pub storage: Storage,
    pub storage_owner: Owner,
    pub http: Option<HttpServer>,
    /// The leader balancer's owner, when it runs.
    pub balancer: Option<Owner>,
    /// The quiescer's owner (its probe and its rounds), when it runs.
    pub quiescer: Option<Owner>,
}

/// A running node hosting groups of state machine `S`. Clones share the node.
///
/// Dropping every handle does not stop it (its servers hold the node too): call
/// [`Node::stop`], which stops everything in order and reports what was left behind.
pub struct Node<S: StateMachine> {
    pub(crate) core: Arc<NodeCore>,
    pub(crate) servers: Arc<Servers>,
    pub(crate) _sm: PhantomData<fn() -> S>,
}

impl<S: StateMachine> Clone for Node<S> {
    fn clone(&self) -> Self {
        Node {
            core: self.core.clone(),
            servers: self.servers.clone(),
            _sm: PhantomData,
        }
    }
}

impl<S: StateMachine> Node<S> {
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.core.node_id()
    }

    /// The address the shared gRPC server listens on.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.servers.grpc_addr
    }

    /// The address the HTTP server listens on, if it runs.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.servers.http_addr
    }

    /// The HTTP server's base URL, `https://` when it serves clients over TLS, if it runs.
    pub fn http_url(&self) -> Option<String> {
        let tls = self.core.tls.as_ref();
        let https = tls.is_some_and(|t| t.current().http_server.is_some());
        let scheme = if https { "https" } else { "http" };
        self.servers.http_addr.map(|a| format!("{scheme}://{a}"))
    }

    /// The ledger that counts this node's tasks, threads and connections.
    pub fn ledger(&self) -> &Ledger {
        &self.core.ledger
    }

    /// The node's RPC figures, for a program's own services to count their requests in.
    pub fn rpc_metrics(&self) -> Arc<crate::metrics::RpcMetrics> {
        self.core.rpc_metrics.clone()
    }

    /// Re-reads the token file (and, with TLS, the certificates); what was in force stays
    /// when a file does not parse. The binary calls it on SIGHUP; the node also reloads by
    /// itself when a file changes. Logged, and counted in `raftnode_security_reloads_total`.
    pub fn reload_security(
        &self,
    ) -> Result<crate::node::security::ReloadReport, crate::node::security::ReloadError> {
        crate::node::security::reload(&self.core, "asked")
    }

    /// The groups running here.
    pub fn groups(&self) -> Vec<GroupId> {
        self.core.registry.all().iter().map(|g| g.id).collect()
    }

    /// The leader of `group` as this node knows it, if the group runs here.
    pub fn leader(&self, group: GroupId) -> Option<NodeId> {
        use openraft::async_runtime::WatchReceiver;
        let g = self.core.registry.get(group)?;
        let leader = g.raft.metrics().borrow_watched().current_leader;
        leader
    }

    /// Whether the node serves: started and not stopping.
    pub fn is_ready(&self) -> bool {
        self.core.lifecycle.is_ready()
    }

    /// Starts group `id` here. If this node is the group's preferred leader (members take turns
    /// by group id) and the group has no state yet, it initialises the group with every configured peer; the other members must start
    /// it too. Returns `false` when it was already running.
    pub async fn add_group(&self, id: GroupId) -> Result<bool, GroupOpError> {
        self.core.start_group(id, true, AfterPurge::Ask).await
    }

    /// [`Self::add_group`] for a group whose data this node purged: `after` says whether the
    /// group is created anew on every member or this replica rejoins it.
    pub async fn add_group_after_purge(
        &self,
        id: GroupId,
        after: AfterPurge,
    ) -> Result<bool, GroupOpError> {
        self.core.start_group(id, true, after).await
    }

    /// Stops group `id` here, after handing its leadership over if this node leads it; the
    /// other groups and the shared server keep serving. `purge` also removes its data.
    pub async fn remove_group(&self, id: GroupId, purge: bool) -> Result<(), GroupOpError> {
        self.core.stop_group(id, purge).await
    }

    /// Proposes `command` to `group` through whichever member leads it, and waits until it is
    /// committed and applied here. Retries while the group has no leader, until the request
    /// timeout; a proposal that fails with [`RequestError::NoLeader`] may still have applied.
    pub async fn propose(
        &self,
        group: GroupId,
        command: S::Command,
    ) -> Result<Applied<S::Response>, RequestError> {
        let bytes = codec::encode(&command).map_err(RequestError::Codec)?;
        let (index, reply) = self.core.propose(group, bytes).await?;
        let response = codec::decode(&reply.0)
            .map_err(|e| RequestError::Codec(format!("undecodable response: {e}")))?;
        Ok(Applied { index, response })
    }

    /// Reads `group`'s state here, as fresh as `mode` asks, with `f`: it gets the state
    /// machine and a [`Reader`] of the group's keys.
    pub async fn read<T>(
        &self,
        group: GroupId,
        mode: ReadMode,
        f: impl FnOnce(&S, &Reader<'_>) -> T,
    ) -> Result<T, RequestError> {
        let g = self.core.read_barrier(group, mode).await?;
        g.sm.read(|m, state| match m.as_any().downcast_ref::<S>() {
            Some(sm) => Ok(f(sm, state)),
            None => Err(RequestError::Codec(format!(
                "group {group} does not run a {}",
                std::any::type_name::<S>()
            ))),
        })
    }
}
