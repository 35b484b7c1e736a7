//! raftnode embedded in a program of its own: a counter replicated by one Raft group across
//! three nodes, all in this process on loopback ports. It applies 1,000 increments, sent
//! through different nodes, checks that all three agree, stops them in order, and prints
//! `counter=1000 leaks=0`.
//!
//! `cargo run --release --example counter`

use raftnode::ReadMode;

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/counter.rs"]
mod counter;
use counter::Counter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let nodes = cluster::start_three(dir.path(), &[1]).await?;

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
