//! kill -9 of a group leader under write load: a new leader takes over, no acknowledged write is
//! lost, and the killed node catches up after its restart.

mod common;
use common::*;
use std::time::{Duration, Instant};

#[test]
fn leader_kill_loses_no_acknowledged_write_and_node_catches_up() {
    let g = 1;
    let cluster = Cluster::start(3, &[g]);
    let old = cluster.leader_of(g);

    let load = Load::start(g, "fo", 3, cluster.http_urls(&cluster.ids()));
    load.expect_progress(50, "before the kill");

    let killed_at = Instant::now();
    cluster.node(old).sigkill();
    let new = cluster.new_leader(g, old, LEADER_TIMEOUT);
    let elected_after = killed_at.elapsed();
    let first_ok = eventually(
        Duration::from_secs(30),
        "a successful write after the kill",
        || load.with_stats(|s| s.first_ok_sent_after(killed_at)),
    );
    load.expect_progress(50, "after failover");
    let stats = load.stop();
    println!(
        "failover: node {old} killed; node {new} leader after {} ms; first acked write after {} ms; {}",
        elected_after.as_millis(),
        first_ok.duration_since(killed_at).as_millis(),
        stats.summary()
    );
    assert!(
        stats.hard_failures.is_empty(),
        "non-retryable write failures: {}",
        stats.summary()
    );
    assert!(!stats.acked.is_empty());

    let reader = cluster.node(new);
    let checked = verify_acked(reader, g, &stats.acked);
    println!("failover: all {checked} acknowledged keys readable after failover");

    // The killed node restarts, catches up, and serves the latest value locally.
    let node = cluster.node(old);
    node.restart();
    node.wait_ready(READY_TIMEOUT);
    let leader = cluster.leader_of(g);
    cluster.node(leader).put_ok(g, "latest", "v-final");
    let target = cluster
        .node(leader)
        .group_status(g)
        .map(|s| s.commit_index)
        .unwrap_or(0);
    let caught_up = wait_until(Duration::from_secs(30), || {
        node.group_status(g)
            .is_some_and(|s| s.applied_index >= target)
    });
    assert!(
        caught_up,
        "node {old} applied index never reached {target}\n{}",
        cluster.describe()
    );
    let fresh = wait_until(Duration::from_secs(10), || {
        let r = node.get_mode(g, "latest", "local");
        r.status == 200 && r.text() == "v-final"
    });
    assert!(
        fresh,
        "local read on restarted node {old}: {}",
        node.get_mode(g, "latest", "local")
    );
    let (last_key, last_value) = stats.acked.last().expect("acked");
    assert_eq!(
        node.get_mode(g, last_key, "local").text(),
        *last_value,
        "restarted node lacks {last_key}"
    );
}
