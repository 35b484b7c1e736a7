//! A follower that falls behind while large values are written catches up by log. openraft
//! bounds a replication message only by its count of entries (300): with 256 KiB values that is
//! about 75 MB, which never arrived within the append timeout, so the follower stayed behind
//! forever. Messages are now bounded by bytes, and their timeout grows with their size.

mod common;
use common::*;
use std::time::{Duration, Instant};

const G: u64 = 1;
const VALUE_BYTES: usize = 256 << 10;
/// More than one count-bounded message's worth.
const VALUES: usize = 320;

#[test]
fn a_follower_behind_by_80_mb_of_large_values_catches_up_by_log() {
    let tuning = Tuning {
        // No snapshot: the follower must catch up from the log itself.
        snapshot_logs: Some(1_000_000),
        ..Tuning::default()
    };
    let cluster = Cluster::start_with(3, &[G], tuning);
    let leader = cluster.leader_of(G);
    let lagging = cluster
        .ids()
        .into_iter()
        .find(|&id| id != leader)
        .unwrap_or(leader);
    let status = cluster.node(lagging).sigterm();
    assert!(status.success(), "node {lagging} exited with {status}");

    let value: Vec<u8> = (0..VALUE_BYTES).map(|i| (i % 251) as u8).collect();
    let node = cluster.node(leader);
    for i in 0..VALUES {
        node.put_ok(G, &format!("big-{i}"), &value);
    }
    let target = node
        .group_status(G)
        .map(|s| s.commit_index)
        .unwrap_or_default();

    let restarted = Instant::now();
    let back = cluster.node(lagging);
    back.start();
    back.wait_ready(Duration::from_secs(60));
    let caught_up = wait_until(Duration::from_secs(90), || {
        back.group_status(G)
            .is_some_and(|s| s.applied_index >= target)
    });
    let applied = back.group_status(G).map(|s| s.applied_index);
    assert!(
        caught_up,
        "node {lagging} applied {applied:?} of {target} after {:?}\n{}",
        restarted.elapsed(),
        back.log_tail(30)
    );
    println!(
        "node {lagging} caught up {} MiB ({VALUES} values) in {:.1} s",
        (VALUES * VALUE_BYTES) >> 20,
        restarted.elapsed().as_secs_f64()
    );
    // What it applied is what was written: a local read on the caught-up follower.
    let r = back.get_mode(G, &format!("big-{}", VALUES - 1), "local");
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body, value, "the last value read on node {lagging}");
}
