//! The node: a value that owns the storage, the peer channels, the shared RPC server, the HTTP
//! server and the groups of one raftnode process, built with [`Node::builder`] and stopped with
//! [`Node::stop`]. Its start and stop order is in `lifecycle.rs`; what its servers share is in
//! `shared.rs`; its policies (the shutdown plan, request routing, the successor choice) are plain
//! functions in `plan.rs`, `route.rs` and `handover.rs`.
//!
//! ```no_run
//! # use raftnode::{Node, ReadMode, StateMachine, Committed};
//! # use std::io::{self, Read, Write};
//! # #[derive(Default)] struct Counter(u64);
//! # impl StateMachine for Counter {
//! #     type Command = u64; type Response = u64; type Snapshot = u64;
//! #     fn apply(&mut self, b: Vec<Committed<u64>>) -> io::Result<Vec<u64>> { Ok(b.into_iter().map(|c| { self.0 += c.command; self.0 }).collect()) }
//! #     fn snapshot(&self) -> u64 { self.0 }
//! #     fn write_snapshot(v: u64, out: &mut dyn Write) -> io::Result<()> { out.write_all(&v.to_le_bytes()) }
//! #     fn restore(&mut self, r: &mut dyn Read) -> io::Result<()> { let mut b = [0; 8]; r.read_exact(&mut b)?; self.0 = u64::from_le_bytes(b); Ok(()) }
//! # }
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let node = Node::builder()
//!     .id(1)
//!     .peers([(1, "127.0.0.1:7071"), (2, "127.0.0.1:7072"), (3, "127.0.0.1:7073")])
//!     .grpc_addr("127.0.0.1:7071".parse()?)
//!     .data_dir("data-1")
//!     .groups([1])
//!     .state_machine(|_group| Counter::default())
//!     .start()
//!     .await?;
//! let applied = node.propose(1, 5).await?;
//! let value = node.read(1, ReadMode::Linearizable, |c: &Counter| c.0).await?;
//! assert!(value >= applied.response);
//! let report = node.stop().await?;
//! assert_eq!(report.leaks, 0);
//! # Ok(()) }
//! ```

mod api;
mod builder;
mod collector;
pub mod config;
mod data_dir;
pub mod error;
pub mod handover;
mod lifecycle;
pub mod plan;
mod registry;
pub mod route;
mod shared;

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use builder::NodeBuilder;
pub use config::NodeConfig;
pub use error::{GroupOpError, NodeError, RequestError};

use crate::ledger::Ledger;
use crate::raft::types::{GroupId, NodeId};
use crate::state_machine::{codec, StateMachine};
use shared::NodeCore;

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// Reflects every write acknowledged before the read began, on any member: the leader
    /// confirms its leadership with a quorum (ReadIndex) and the reader applies that far.
    Linearizable,
    /// Like `Linearizable`, with leadership confirmed by the leader's lease instead of a round
    /// trip: faster, and correct as long as clocks do not drift beyond the lease's margin.
    Lease,
    /// This member's state as it is, without asking anyone: may be stale.
    Local,
}

impl ReadMode {
    /// Parses `linearizable`, `lease` or `local`.
    pub fn parse(s: &str) -> Option<ReadMode> {
        match s {
            "linearizable" => Some(ReadMode::Linearizable),
            "lease" => Some(ReadMode::Lease),
            "local" => Some(ReadMode::Local),
            _ => None,
        }
    }
}

/// A proposal's outcome: the log index it was applied at, and the state machine's response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied<R> {
    /// The command's log index.
    pub index: u64,
    /// What the state machine answered.
    pub response: R,
}

/// What a stop found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StopReport {
    /// Leak verdicts of this node's ledger over its whole life: tasks, threads and connections
    /// that an owner still held when its deadline passed. 0 is the only good figure.
    pub leaks: u64,
    /// How long the stop took.
    pub took: Duration,
}

/// A running node hosting groups of state machine `S`. Clones share the node.
pub struct Node<S: StateMachine> {
    core: Arc<NodeCore>,
    servers: Arc<lifecycle::Servers>,
    _sm: PhantomData<fn() -> S>,
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
    /// A builder with the defaults of [`NodeConfig`].
    pub fn builder() -> NodeBuilder<S> {
        NodeBuilder::new()
    }

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

    /// The ledger that counts this node's tasks, threads and connections.
    pub fn ledger(&self) -> &Ledger {
        &self.core.ledger
    }

    /// The node's RPC figures, for a program's own services to count their requests in.
    pub fn rpc_metrics(&self) -> Arc<crate::metrics::RpcMetrics> {
        self.core.rpc_metrics.clone()
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

    /// Starts group `id` here. If this is the group's lowest member and the group has no state
    /// yet, it initialises the group with every configured peer; the other members must start
    /// it too. Returns `false` when it was already running.
    pub async fn add_group(&self, id: GroupId) -> Result<bool, GroupOpError> {
        self.core.start_group(id, true).await
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

    /// Reads `group`'s state machine here, as fresh as `mode` asks, with `f`.
    pub async fn read<T>(
        &self,
        group: GroupId,
        mode: ReadMode,
        f: impl FnOnce(&S) -> T,
    ) -> Result<T, RequestError> {
        let g = self.core.read_barrier(group, mode).await?;
        g.sm.read(|m| match m.as_any().downcast_ref::<S>() {
            Some(sm) => Ok(f(sm)),
            None => Err(RequestError::Codec(format!(
                "group {group} does not run a {}",
                std::any::type_name::<S>()
            ))),
        })
    }

    /// Stops the node in order: not ready, leadership handed over, groups, peer channels, the
    /// shared RPC server, storage, the HTTP server, and finally the node's own verdict, all
    /// within the shutdown grace. A second call returns at once.
    pub async fn stop(&self) -> Result<StopReport, NodeError> {
        lifecycle::stop(&self.core, &self.servers).await
    }
}
