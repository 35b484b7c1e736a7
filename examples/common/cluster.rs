//! Three nodes of the counter in this process, on loopback ports, started together: a node on
//! a new data dir asks its peers whether they knew it before its groups run (a wiped volume
//! must not vote), so the nodes of one process must not wait for each other's start in turn.

use std::io;
use std::path::Path;

use raftnode::{GroupId, Node};

use crate::counter::Counter;

/// Starts nodes 1–3 with `groups`, their data dirs under `dir`.
pub async fn start_three(
    dir: &Path,
    groups: &[GroupId],
) -> Result<Vec<Node<Counter>>, Box<dyn std::error::Error>> {
    // Bind every node's port first, so that each knows all the members' addresses.
    let listeners = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()?;
    let mut peers = Vec::new();
    for (i, l) in listeners.iter().enumerate() {
        peers.push((i as u64 + 1, l.local_addr()?.to_string()));
    }
    let starts = listeners.into_iter().enumerate().map(|(i, listener)| {
        let id = i as u64 + 1;
        Node::builder()
            .id(id)
            .peers(peers.clone())
            .grpc_listener(listener)
            .data_dir(dir.join(format!("node-{id}")))
            .groups(groups.iter().copied())
            .state_machine(|_group| Counter::default())
            .start()
    });
    Ok(futures::future::try_join_all(starts).await?)
}
