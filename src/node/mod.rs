//! The node: a value that owns the storage, the peer channels, the shared RPC server, the HTTP
//! server and the groups of one raftnode process, built with [`Node::builder`] and stopped with
//! [`Node::stop`]. Its start and stop order is in `lifecycle.rs`; what its servers share is in
//! `shared.rs`; its policies (the shutdown plan, request routing, the successor choice, where leadership
//! lives) are plain functions in `plan.rs`, `route.rs`, `handover.rs` and `placement.rs`.
//!
//! ```no_run
//! # use raftnode::{Batch, Node, ReadMode, StateMachine, Committed};
//! # use std::io;
//! # #[derive(Default)] struct Counter(u64);
//! # impl StateMachine for Counter {
//! #     type Command = u64; type Response = u64;
//! #     fn apply(&mut self, b: Vec<Committed<u64>>, s: &mut Batch<'_>) -> io::Result<Vec<u64>> {
//! #         let r = b.into_iter().map(|c| { self.0 += c.command; self.0 }).collect();
//! #         s.put(*b"n", self.0.to_le_bytes()); Ok(r) }
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
//! let value = node.read(1, ReadMode::Linearizable, |c: &Counter, _| c.0).await?;
//! assert!(value >= applied.response);
//! let report = node.stop().await?;
//! assert_eq!(report.leaks, 0);
//! # Ok(()) }
//! ```

mod api;
mod balancer;
mod builder;
mod cluster_id;
mod collector;
pub mod config;
mod data_dir;
pub mod error;
mod handle;
pub mod handover;
mod incarnation;
mod lifecycle;
mod liveness;
mod meet;
mod pacing;
mod periodic;
pub mod placement;
pub mod plan;
mod quiescer;
mod registry;
pub mod route;
pub mod security;
mod shared;
mod types;

pub use builder::NodeBuilder;
pub use config::NodeConfig;
pub use error::{GroupOpError, NodeError, RequestError};
pub use handle::Node;
pub use types::{AfterPurge, Applied, ReadMode, StopReport};
