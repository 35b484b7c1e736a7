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
    let snapshot_index = |id: u64| {
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
    };
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
