//! A node holds more data than its caches and restarts on it (issue 11, scenario 8): log
//! entries past the log cache are read back from the WAL, the state lives in the state
//! engine, and a node killed with SIGKILL serves every acknowledged write again, from disk.

mod common;
use common::*;
use std::time::Duration;

const GROUPS: [u64; 2] = [1, 2];
const VALUE_BYTES: usize = 32 << 10;
const PER_GROUP: usize = 320;
const CACHE_BYTES: u64 = 1 << 20;

/// Bytes that do not compress (a xorshift stream per key), so that what the engine holds on
/// disk is what was stored.
fn value(g: u64, i: usize) -> Vec<u8> {
    let mut x = (g << 32) ^ (i as u64) ^ 0x9e37_79b9_7f4a_7c15;
    (0..VALUE_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn a_node_killed_with_twenty_times_its_caches_in_data_serves_all_of_it_again() {
    let tuning = Tuning {
        log_cache_bytes: Some(CACHE_BYTES),
        state_cache_bytes: Some(CACHE_BYTES),
        // Snapshots (engine syncs) now and then, so that part of the state is behind one and
        // part is still only in the log.
        snapshot_logs: Some(200),
        max_value_bytes: Some(VALUE_BYTES as u64),
        ..Tuning::default()
    };
    let cluster = Cluster::start_with(3, &GROUPS, tuning);
    for g in GROUPS {
        let leader = cluster.node(cluster.leader_of(g));
        for i in 0..PER_GROUP {
            leader.put_ok(g, &format!("k{i}"), value(g, i));
        }
    }
    let stored = (GROUPS.len() * PER_GROUP * VALUE_BYTES) as u64;
    assert!(stored >= 20 * CACHE_BYTES, "{stored} bytes");

    // A member that leads nothing, so that its kill costs no election.
    let victim = cluster
        .ids()
        .into_iter()
        .find(|&id| GROUPS.iter().all(|&g| cluster.leader_of(g) != id))
        .unwrap_or(1);
    let node = cluster.node(victim);
    let targets: Vec<u64> = GROUPS
        .iter()
        .map(|&g| {
            let leader = cluster.node(cluster.leader_of(g));
            leader.group_status(g).map(|s| s.commit_index).unwrap_or(0)
        })
        .collect();
    let applied_all = |within: u64| {
        wait_until(Duration::from_secs(within), || {
            GROUPS
                .iter()
                .zip(&targets)
                .all(|(&g, &t)| node.group_status(g).is_some_and(|s| s.applied_index >= t))
        })
    };
    assert!(
        applied_all(30),
        "node {victim} did not apply everything before the kill"
    );
    node.sigkill();
    node.restart();
    node.wait_ready(READY_TIMEOUT);
    assert!(
        applied_all(60),
        "node {victim} did not apply its log again after the restart"
    );

    // Every value, read from this node's own state (a local read), as it was written.
    for g in GROUPS {
        for i in 0..PER_GROUP {
            let r = node.get_mode(g, &format!("k{i}"), "local");
            assert_eq!(r.status, 200, "k{i} of group {g} on node {victim}: {r}");
            assert!(
                r.body == value(g, i),
                "k{i} of group {g} differs on node {victim}"
            );
        }
    }
    // The caches stayed within their bounds; the data is on disk.
    let scrape = node.scrape();
    let cached = scrape.sum("raftnode_storage_log_cache_bytes", &[]) as u64;
    assert!(
        cached <= CACHE_BYTES + VALUE_BYTES as u64 * 2,
        "{cached} bytes of log cached with a {CACHE_BYTES}-byte cache"
    );
    let on_disk = scrape.sum("raftnode_storage_state_bytes", &[]) as u64;
    assert!(
        on_disk >= stored / 2,
        "the state engine holds {on_disk} bytes on disk of {stored} stored"
    );
    println!(
        "larger than memory: node {victim} served {stored} bytes again after SIGKILL with \
         {CACHE_BYTES}-byte caches ({cached} bytes of log cached, {on_disk} bytes of state on disk)"
    );
}
