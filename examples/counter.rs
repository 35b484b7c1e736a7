//! raftnode embedded in a program of its own: a counter replicated by one Raft group across
//! three nodes, all in this process on loopback ports. It applies 1,000 increments, sent
//! through different nodes, checks that all three agree, stops them in order, and prints
//! `counter=1000 leaks=0`.
//!
//! `cargo run --release --example counter`

use std::io;

use raftnode::{Node, ReadMode};

#[path = "common/counter.rs"]
mod counter;
use counter::Counter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    // Bind every node's port first, so that each knows all the members' addresses.
    let listeners = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()?;
    let mut peers = Vec::new();
    for (i, l) in listeners.iter().enumerate() {
        peers.push((i as u64 + 1, l.local_addr()?.to_string()));
    }
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let node = Node::builder()
            .id(id)
            .peers(peers.clone())
            .grpc_listener(listener)
            .data_dir(dir.path().join(format!("node-{id}")))
            .groups([1])
            .state_machine(|_group| Counter::default())
            .start()
            .await?;
        nodes.push(node);
    }

    // Every node takes proposals: a follower hands them to the leader.
    for i in 0..1000 {
        nodes[i % nodes.len()].propose(1, 1).await?;
    }
    let mut values = Vec::new();
    for node in &nodes {
        values.push(
            node.read(1, ReadMode::Linearizable, |c: &Counter, _| c.0)
                .await?,
        );
    }
    if values.iter().any(|v| *v != values[0]) {
        return Err(format!("the nodes disagree: {values:?}").into());
    }

    let mut leaks = 0;
    for node in &nodes {
        leaks += node.stop().await?.leaks;
    }
    println!("counter={} leaks={leaks}", values[0]);
    if values[0] != 1000 || leaks != 0 {
        std::process::exit(1);
    }
    Ok(())
}
