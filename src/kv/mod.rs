//! The replicated key-value store that the `raftnode` binary serves: one implementation of
//! [`StateMachine`](crate::StateMachine), with its client APIs on top of the node (HTTP routes and a gRPC service).
//! It uses the library as any embedding program would.
//!
//! Keys are UTF-8 (they come from URL paths); values are bytes. The state lives in memory;
//! durability comes from the Raft log and the snapshots raftnode keeps for it.

pub mod grpc;
pub mod http;
mod ops;
mod store;

pub use ops::{Kv, KvConfig, KvError};
pub use store::{KvCommand, KvResponse, KvStore};

use crate::node::{Node, NodeBuilder};

/// A node builder that serves the KV store: its state machine in every group, its gRPC service
/// on the shared server and its routes on the HTTP server.
pub fn node_builder(config: KvConfig) -> NodeBuilder<KvStore> {
    Node::builder()
        .state_machine(|_group| KvStore)
        .grpc_services(move |node| {
            let metrics = node.rpc_metrics();
            let kv = Kv::new(node, config);
            tonic::service::Routes::new(grpc::service(kv, metrics, config.max_message_bytes()))
        })
        .http_routes(move |node| http::routes(Kv::new(node, config)))
}
