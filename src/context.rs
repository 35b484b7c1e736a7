//! What every request handler of a node shares: settings, the ledger, the group registry and
//! the dependencies a group needs. Group start and stop at runtime live here, since both the
//! HTTP API and node startup use them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use openraft::BasicNode;

use crate::config::Settings;
use crate::group::{Group, GroupDeps, GroupError};
use crate::ledger::{Ledger, Owner, OwnerKind};
use crate::raft::types::{GroupId, NodeId};
use crate::registry::Registry;
use crate::rpc::server::RpcServer;

pub struct NodeContext {
    pub settings: Settings,
    pub ledger: Ledger,
    pub owner: Owner,
    pub registry: Registry,
    pub deps: GroupDeps,
    /// Whether the data dir had no state when this process started: only then may the
    /// configured groups be bootstrapped, so a restarted node never re-initialises.
    pub fresh: bool,
    pub ready: AtomicBool,
    pub draining: AtomicBool,
    /// Serialises group start and stop so that two API calls cannot race on one group id.
    group_ops: tokio::sync::Mutex<()>,
    /// The shared gRPC server; `None` only while it restarts or after shutdown took it.
    rpc: tokio::sync::Mutex<Option<RpcServer>>,
    #[cfg(feature = "leak-injection")]
    pub injected: crate::leak_injection::Armed,
}

#[derive(Debug, thiserror::Error)]
pub enum GroupOpError {
    #[error("group {0} is not running on this node")]
    NotFound(GroupId),
    #[error("node is shutting down")]
    Draining,
    #[error(transparent)]
    Start(#[from] GroupError),
    #[error("cannot restart the gRPC server on {addr}: {source}")]
    RpcRestart {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("group {group}: cannot purge its data: {reason}")]
    Purge { group: GroupId, reason: String },
}

impl NodeContext {
    pub fn new(
        settings: Settings,
        ledger: Ledger,
        owner: Owner,
        deps: GroupDeps,
        fresh: bool,
    ) -> Arc<Self> {
        Arc::new(NodeContext {
            settings,
            ledger,
            owner,
            registry: Registry::default(),
            deps,
            fresh,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            group_ops: tokio::sync::Mutex::new(()),
            rpc: tokio::sync::Mutex::new(None),
            #[cfg(feature = "leak-injection")]
            injected: Default::default(),
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.settings.node_id
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    fn members(&self) -> BTreeMap<NodeId, BasicNode> {
        self.settings
            .peers
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect()
    }

    /// Starts group `id` on this node. Returns `false` when it was already running. The lowest
    /// configured member bootstraps a group that has no state yet, at the first start of a fresh
    /// node or when an operator creates the group through the API (`explicit`).
    #[tracing::instrument(name = "group.start", skip_all, fields(group = id))]
    pub async fn start_group(&self, id: GroupId, explicit: bool) -> Result<bool, GroupOpError> {
        let _serial = self.group_ops.lock().await;
        if self.is_draining() {
            return Err(GroupOpError::Draining);
        }
        if self.registry.get(id).is_some() {
            return Ok(false);
        }
        let may_bootstrap = (self.fresh || explicit)
            && self.settings.is_bootstrapper()
            && !self.deps.storage.has_group(id);
        let bootstrap = may_bootstrap.then(|| self.members());
        let owner = self.owner.child(OwnerKind::Group, id.to_string());
        let group = Group::start(&self.deps, id, owner, bootstrap).await?;
        tracing::info!(group = id, "group started");
        self.registry.insert(Arc::new(group));
        Ok(true)
    }

    /// Stops group `id` on this node; the shared server and the other groups keep serving.
    #[tracing::instrument(name = "group.stop", skip_all, fields(group = id, purge))]
    pub async fn stop_group(&self, id: GroupId, purge: bool) -> Result<(), GroupOpError> {
        let _serial = self.group_ops.lock().await;
        let group = self.registry.get(id).ok_or(GroupOpError::NotFound(id))?;
        // The group stays routable while it hands over: the new leader's heartbeats must reach
        // it, or it never learns that leadership moved and waits out the deadline.
        crate::shutdown::hand_over_leadership(
            std::slice::from_ref(&group),
            self.settings.shutdown_grace / 4,
        )
        .await;
        self.registry.remove(id);
        #[cfg(feature = "leak-injection")]
        self.injected
            .before_group_stop(&group, self.settings.grpc_addr);
        group.stop(self.settings.leak_deadline).await;
        if purge {
            self.deps
                .storage
                .drop_group(id)
                .await
                .map_err(|e| GroupOpError::Purge {
                    group: id,
                    reason: e.to_string(),
                })?;
        }
        tracing::info!(group = id, purge, "group stopped");
        Ok(())
    }
}

impl NodeContext {
    /// Starts the shared gRPC server on `listener` under a fresh `rpc_server` owner.
    pub async fn start_rpc_server(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
    ) -> Result<std::net::SocketAddr, GroupOpError> {
        let owner = self.owner.child(OwnerKind::RpcServer, "main");
        let server = RpcServer::start(self.clone(), listener, owner).map_err(|source| {
            GroupOpError::RpcRestart {
                addr: self.settings.grpc_addr,
                source,
            }
        })?;
        let addr = server.local_addr;
        *self.rpc.lock().await = Some(server);
        Ok(addr)
    }

    /// Stops the shared gRPC server (drain, then the owner's leak verdict). Groups keep running;
    /// their peers see this node unreachable until it serves again.
    pub async fn stop_rpc_server(&self, drain: std::time::Duration) {
        let server = self.rpc.lock().await.take();
        if let Some(server) = server {
            #[cfg(feature = "leak-injection")]
            self.injected.before_rpc_stop(&server);
            server.stop(drain, self.settings.leak_deadline).await;
        }
    }

    /// Stops and restarts the shared gRPC server on the same address: the soak test's
    /// equivalent of JRaft users recreating their shared RPC server.
    pub async fn restart_rpc_server(self: &Arc<Self>) -> Result<(), GroupOpError> {
        if self.is_draining() {
            return Err(GroupOpError::Draining);
        }
        self.stop_rpc_server(self.settings.shutdown_grace / 4).await;
        let addr = self.settings.grpc_addr;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| GroupOpError::RpcRestart { addr, source })?;
        self.start_rpc_server(listener).await?;
        tracing::info!(%addr, "gRPC server restarted");
        Ok(())
    }
}
