//! Several Raft groups of one state machine on three nodes in this process: each group is a
//! counter of its own, all behind each node's one shared gRPC server and one storage engine.
//! It increments every group through every node, adds a group at runtime, removes one with its
//! data, checks that the members agree on every counter, stops the nodes, and prints
//! `groups=4 total=1200 leaks=0`.
//!
//! `cargo run --release --example counter_groups`

use raftnode::{GroupId, Node, ReadMode};

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/counter.rs"]
mod counter;
use counter::Counter;

async fn agreed(
    nodes: &[Node<Counter>],
    group: GroupId,
) -> Result<u64, Box<dyn std::error::Error>> {
    let mut values = Vec::new();
    for node in nodes {
        values.push(
            node.read(group, ReadMode::Linearizable, |c: &Counter, _| c.0)
                .await?,
        );
    }
    if values.iter().any(|v| *v != values[0]) {
        return Err(format!("group {group}: the nodes disagree: {values:?}").into());
    }
    Ok(values[0])
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let nodes = cluster::start_three(dir.path(), &[1, 2, 3, 4]).await?;

    // A fifth group, started at runtime on every member (the lowest id initialises it).
    for node in &nodes {
        node.add_group(5).await?;
    }
    // 100 increments per group through each node: 300 per group.
    for group in 1..=5 {
        for i in 0..300 {
            nodes[i % nodes.len()].propose(group, 1).await?;
        }
    }
    // Group 5 goes away again, with its data.
    for node in &nodes {
        node.remove_group(5, true).await?;
    }

    let mut total = 0;
    for group in 1..=4 {
        total += agreed(&nodes, group).await?;
    }
    let groups = nodes[0].groups().len();
    let mut leaks = 0;
    for node in &nodes {
        leaks += node.stop().await?.leaks;
    }
    println!("groups={groups} total={total} leaks={leaks}");
    if groups != 4 || total != 1200 || leaks != 0 {
        std::process::exit(1);
    }
    Ok(())
}
