//! A follower that was down while the log moved past a snapshot (with no log kept behind it)
//! catches up by receiving the snapshot, then serves every key written while it was away.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn lagging_follower_receives_a_snapshot() {
    let g = 1;
    let tuning = Tuning {
        snapshot_logs: Some(20),
        snapshot_keep_logs: Some(0),
        ..Tuning::default()
    };
    let cluster = Cluster::start_with(3, &[g], tuning);
    let leader = cluster.leader_of(g);
    let lagging = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    cluster.node(leader).put_ok(g, "before", "1");
    cluster.node(lagging).sigkill();

    for i in 0..150 {
        cluster
            .node(leader)
            .put_ok(g, &format!("k{i}"), format!("v{i}"));
    }
    let snapshot_index = |id: u64| snapshot_index(&cluster, id, g);
    assert!(
        wait_until(Duration::from_secs(20), || snapshot_index(leader) >= 100),
        "the leader built no snapshot past index 100"
    );

    let node = cluster.node(lagging);
    node.restart();
    node.wait_ready(READY_TIMEOUT);
    let target = cluster
        .node(leader)
        .group_status(g)
        .map(|s| s.commit_index)
        .unwrap_or(0);
    assert!(
        wait_until(Duration::from_secs(30), || node
            .group_status(g)
            .is_some_and(|s| s.applied_index >= target)),
        "restarted follower did not catch up to {target}: {:?}",
        node.group_status(g)
    );
    assert!(
        snapshot_index(lagging) >= 100,
        "the follower caught up without installing a snapshot (snapshot_index {})",
        snapshot_index(lagging)
    );
    for i in [0, 75, 149] {
        let r = node.get_mode(g, &format!("k{i}"), "local");
        assert_eq!(r.status, 200, "k{i} on the caught-up follower: {r}");
        assert_eq!(r.text(), format!("v{i}"));
    }
    println!(
        "snapshot catch-up: follower {lagging} installed snapshot at index {}",
        snapshot_index(lagging)
    );
}

/// A snapshot larger than the largest message (256 MiB) reaches a lagging follower: it
/// travels as a stream of checksummed pieces instead of one message, which it could never
/// fit, so the follower stayed behind for ever.
#[test]
fn a_snapshot_larger_than_any_message_streams_to_a_lagging_follower() {
    const G: u64 = 1;
    const VALUE_BYTES: usize = 2 << 20;
    const VALUES: usize = 140;
    let tuning = Tuning {
        snapshot_logs: Some(20),
        snapshot_keep_logs: Some(0),
        max_value_bytes: Some(VALUE_BYTES as u64),
        ..Tuning::default()
    };
    let cluster = Cluster::start_with(3, &[G], tuning);
    let leader = cluster.leader_of(G);
    let lagging = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    cluster.node(lagging).sigkill();

    let node = cluster.node(leader);
    let value = |i: usize| -> Vec<u8> { (0..VALUE_BYTES).map(|j| ((i + j) % 251) as u8).collect() };
    for i in 0..VALUES {
        node.put_ok(G, &format!("big-{i}"), value(i));
    }
    // The leader's snapshot is its engine's state, made durable; the log behind it is gone.
    let last = (VALUES as u64).saturating_sub(20);
    assert!(
        wait_until(Duration::from_secs(60), || snapshot_index(
            &cluster, leader, G
        ) >= last),
        "the leader built no snapshot past index {last}"
    );
    let target = node.group_status(G).map(|s| s.commit_index).unwrap_or(0);
    let theirs = || {
        std::fs::metadata(
            cluster
                .node(lagging)
                .data_dir
                .join("snapshots")
                .join(format!("{G}.snap")),
        )
        .map(|m| m.len())
        .unwrap_or(0)
    };

    let back = cluster.node(lagging);
    let started = std::time::Instant::now();
    back.restart();
    back.wait_ready(READY_TIMEOUT);
    let caught_up = wait_until(Duration::from_secs(180), || {
        back.group_status(G)
            .is_some_and(|s| s.applied_index >= target)
    });
    assert!(
        caught_up,
        "node {lagging} applied {:?} of {target} after {:?}\n{}",
        back.group_status(G).map(|s| s.applied_index),
        started.elapsed(),
        back.log_tail(30)
    );
    println!(
        "snapshot stream: a {} MiB snapshot reached node {lagging} in {:.1} s",
        theirs() >> 20,
        started.elapsed().as_secs_f64()
    );
    for i in [0, VALUES / 2, VALUES - 1] {
        let r = back.get_mode(G, &format!("big-{i}"), "local");
        assert_eq!(r.status, 200, "big-{i} on node {lagging}: {r}");
        assert!(r.body == value(i), "big-{i} differs on node {lagging}");
    }
    // It came by snapshot: the follower holds the large file itself, until a snapshot of
    // its own makes the installed state durable in its engine.
    let theirs = theirs();
    assert!(
        theirs > 256 << 20,
        "node {lagging}'s snapshot is {theirs} bytes"
    );
    // No partial or temporary file is left on the follower.
    let leftovers: Vec<_> = std::fs::read_dir(back.data_dir.join("snapshots"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// The last log index group `g`'s snapshot on node `id` covers, from its status.
fn snapshot_index(cluster: &Cluster, id: u64, g: u64) -> u64 {
    cluster
        .node(id)
        .status()
        .and_then(|s| {
            s["groups"]
                .as_array()?
                .iter()
                .find(|x| x["id"] == g)?
                .get("snapshot_index")?
                .as_u64()
        })
        .unwrap_or(0)
}
