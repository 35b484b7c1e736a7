//! raftnode: many Raft groups behind one shared gRPC server, serving a replicated KV store,
//! where every task, thread and connection has an owner that must account for it at stop.

pub mod client;
pub mod config;
pub mod context;
pub mod group;
pub mod http;
pub mod kv;
#[cfg(feature = "leak-injection")]
pub mod leak_injection;
pub mod ledger;
pub mod metrics;
pub mod node;
pub mod otel;
pub mod raft;
pub mod registry;
pub mod rpc;
pub mod shutdown;
pub mod soak;
pub mod storage;
pub mod telemetry;
pub mod threads;

/// The source revision this binary was built from, when the build knew it.
pub const REVISION: &str = match option_env!("RAFTNODE_REVISION") {
    Some(r) => r,
    None => "unknown",
};
