//! Everything that crosses the network between nodes: the one shared tonic server, the one
//! channel per peer address, the table of node-to-node methods, and the typed call over it.
//! openraft's network adapter (`crate::raft::network`) sits on top of these.

pub mod client;
pub mod codec;
pub mod methods;
pub mod peers;
pub mod router;
pub mod server;

/// Code generated from `proto/raftnode.proto`.
#[allow(missing_docs)]
pub mod pb {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("raftnode.v1");
}
