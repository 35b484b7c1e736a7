//! Everything that crosses the network between nodes: the one shared tonic server, the one
//! channel per peer address, and openraft's network adapter on top of those channels.

pub mod codec;
pub mod network;
pub mod peers;
pub mod server;

/// Code generated from `proto/raftnode.proto`.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("raftnode.v1");
}

/// gRPC metadata key marking a KV call as already forwarded once, so that two nodes with
/// different views of the leader cannot bounce a request between them.
pub const FORWARDED_HEADER: &str = "x-raftnode-forwarded";
