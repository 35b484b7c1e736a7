//! raftnode: many Raft groups behind one shared gRPC server, where every task, thread and
//! connection has an owner that must account for it when it stops.
//!
//! As a library, it hosts groups of a [`StateMachine`] that the embedding program defines:
//! build a [`Node`] with [`Node::builder`], then [`Node::propose`] commands and [`Node::read`]
//! the state, on any member; [`Node::stop`] stops everything in order and reports leaks. The
//! consensus is openraft's; raftnode adds the multi-group node around it: the shared server
//! and peer channels, one storage engine for every group, the snapshots, the ordered shutdown
//! and the resource ledger (`ledger`).
//!
//! The `raftnode` binary (feature `cli`, on by default) serves a replicated key-value store
//! (`kv`) this way. Without default features the crate builds as a library alone:
//! `cargo build --lib --no-default-features`.
//!
//! The design, and the reasons for it, are in `docs/ARCHITECTURE.md`.
#![warn(missing_docs)]

#[cfg(feature = "cli")]
pub mod allocator;
pub mod auth;
#[cfg(feature = "cli")]
pub mod client;
#[cfg(feature = "cli")]
pub mod config;
#[cfg(feature = "cli")]
pub mod fd_limit;
pub(crate) mod group;
#[cfg(feature = "cli")]
pub mod harness;
pub mod http;
pub mod ids;
pub mod kv;
#[cfg(feature = "leak-injection")]
pub mod leak_injection;
pub mod ledger;
pub mod metrics;
pub(crate) mod net;
pub mod node;
pub mod otel;
pub(crate) mod raft;
pub(crate) mod rpc;
#[cfg(feature = "cli")]
pub mod soak;
mod state;
pub mod state_machine;
pub(crate) mod storage;
#[cfg(feature = "cli")]
pub mod telemetry;
pub(crate) mod threads;
pub mod tls;

pub use ids::{GroupId, NodeId};
pub use ledger::Ledger;
pub use node::{
    AfterPurge, Applied, GroupOpError, Node, NodeBuilder, NodeConfig, NodeError, ReadMode,
    RequestError, StopReport,
};
pub use state_machine::{Batch, Committed, Reader, StateMachine};

pub use metrics::REVISION;
