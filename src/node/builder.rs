//! How a node is put together before it starts: its settings, its state machine, and what the
//! embedding program adds (its own gRPC services and HTTP routes, its metrics, a shared ledger).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use prometheus::core::Collector;
use tonic::service::Routes;

use crate::ledger::Ledger;
use crate::node::config::NodeConfig;
use crate::node::handle::Node;
use crate::node::shared::MachineFactory;
use crate::raft::types::{GroupId, NodeId};
use crate::state_machine::{StateMachine, Typed};

/// Adds the program's routes, given the node they serve.
pub(crate) type RoutesFn<S, R> = Box<dyn FnOnce(Node<S>) -> R + Send>;

/// Builds a [`Node`]: `Node::builder()`, the settings, `.state_machine(..)`, then `.start()`.
pub struct NodeBuilder<S: StateMachine> {
    pub(crate) config: NodeConfig,
    pub(crate) factory: Option<MachineFactory>,
    pub(crate) grpc_listener: Option<std::net::TcpListener>,
    pub(crate) http_listener: Option<std::net::TcpListener>,
    pub(crate) ledger: Option<Ledger>,
    pub(crate) grpc_services: Option<RoutesFn<S, Routes>>,
    pub(crate) http_routes: Option<RoutesFn<S, axum::Router>>,
    pub(crate) collectors: Vec<Box<dyn Collector>>,
}

impl<S: StateMachine> Default for NodeBuilder<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: StateMachine> NodeBuilder<S> {
    /// A builder with the defaults of [`NodeConfig`].
    pub fn new() -> Self {
        NodeBuilder {
            config: NodeConfig::default(),
            factory: None,
            grpc_listener: None,
            http_listener: None,
            ledger: None,
            grpc_services: None,
            http_routes: None,
            collectors: Vec::new(),
        }
    }

    /// Every setting at once (the `raftnode` binary's way).
    pub fn config(mut self, config: NodeConfig) -> Self {
        self.config = config;
        self
    }

    /// This node's id.
    pub fn id(mut self, id: NodeId) -> Self {
        self.config.node_id = id;
        self
    }

    /// Every member's gRPC address, this node included.
    pub fn peers<A: Into<String>>(mut self, peers: impl IntoIterator<Item = (NodeId, A)>) -> Self {
        self.config.peers = peers.into_iter().map(|(id, a)| (id, a.into())).collect();
        self
    }

    /// Where the shared gRPC server listens.
    pub fn grpc_addr(mut self, addr: SocketAddr) -> Self {
        self.config.grpc_addr = addr;
        self
    }

    /// Serves gRPC on a listener already bound (so that its address is known before start).
    pub fn grpc_listener(mut self, listener: std::net::TcpListener) -> Self {
        if let Ok(addr) = listener.local_addr() {
            self.config.grpc_addr = addr;
        }
        self.grpc_listener = Some(listener);
        self
    }

    /// Where the HTTP server listens (none by default).
    pub fn http_addr(mut self, addr: SocketAddr) -> Self {
        self.config.http_addr = Some(addr);
        self
    }

    /// Serves HTTP on a listener already bound.
    pub fn http_listener(mut self, listener: std::net::TcpListener) -> Self {
        if let Ok(addr) = listener.local_addr() {
            self.config.http_addr = Some(addr);
        }
        self.http_listener = Some(listener);
        self
    }

    /// The data dir.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.data_dir = dir.into();
        self
    }

    /// Groups started with the node.
    pub fn groups(mut self, groups: impl IntoIterator<Item = GroupId>) -> Self {
        self.config.groups = groups.into_iter().collect();
        self
    }

    /// Makes each group's state machine, given the group's id.
    pub fn state_machine(mut self, factory: impl Fn(GroupId) -> S + Send + Sync + 'static) -> Self {
        self.factory = Some(Arc::new(move |g| Box::new(Typed(factory(g)))));
        self
    }

    /// Counts the node's resources in `ledger` (shared with other components of the program)
    /// instead of a ledger of its own.
    pub fn ledger(mut self, ledger: Ledger) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// Adds the program's gRPC services to the shared server.
    pub fn grpc_services(mut self, f: impl FnOnce(Node<S>) -> Routes + Send + 'static) -> Self {
        self.grpc_services = Some(Box::new(f));
        self
    }

    /// Adds the program's HTTP routes to the node's HTTP server.
    pub fn http_routes(mut self, f: impl FnOnce(Node<S>) -> axum::Router + Send + 'static) -> Self {
        self.http_routes = Some(Box::new(f));
        self
    }

    /// Adds `collector`'s families to `/metrics`.
    pub fn register_metrics(mut self, collector: Box<dyn Collector>) -> Self {
        self.collectors.push(collector);
        self
    }
}

impl<S: StateMachine> Node<S> {
    /// A builder with the defaults of [`NodeConfig`].
    pub fn builder() -> NodeBuilder<S> {
        NodeBuilder::new()
    }
}
