//! Everything that crosses the network between nodes: the one shared tonic server, the one
//! channel per peer address with its batching queue, the table of node-to-node methods, the
//! typed call over it, and openraft's network adapter on top of those.

pub mod accept;
pub mod batcher;
pub mod client;
pub mod cluster;
pub mod codec;
pub mod messages;
pub mod methods;
pub mod network;
pub mod peer_gate;
pub mod peers;
pub mod router;
pub mod server;
pub mod snapshot_stream;

/// Code generated from `proto/raftnode.proto`.
#[allow(missing_docs)]
pub mod pb {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("raftnode.v1");
}
