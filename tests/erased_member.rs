//! A replica whose data was erased (an operator's purge, then the group added again) comes
//! back under the same node id with an empty log. Had it voted at once, it could elect a
//! member that misses writes acknowledged with the help of its erased copy, and those writes
//! would be lost. It now votes for nobody until it has caught up with a leader.

mod common;
use common::*;
use reqwest::Method;
use std::time::{Duration, Instant};

const G: u64 = 1;

/// A group whose leader and `eraser` acknowledged writes that `stale` misses, with the leader
/// and `stale` stopped: what is left to erase `eraser`'s copy and try to elect `stale`.
struct Stage {
    cluster: Cluster,
    leader: u64,
    stale: u64,
    eraser: u64,
    acked: Vec<(String, String)>,
}

fn stage() -> Stage {
    let tuning = Tuning {
        snapshot_logs: Some(1_000_000),
        ..Tuning::default()
    };
    let cluster = Cluster::start_with(3, &[G], tuning);
    let leader = cluster.leader_of(G);
    let others: Vec<u64> = cluster.ids().into_iter().filter(|&i| i != leader).collect();
    let (stale, eraser) = (others[0], others[1]);

    // `stale` has the group's start, and misses the writes after it; they are acknowledged by
    // the leader and `eraser`.
    cluster.node(leader).put_ok(G, "before", "x");
    let target = cluster.node(leader).group_status(G).map(|s| s.commit_index);
    let has_start = wait_until(Duration::from_secs(10), || {
        cluster.node(stale).group_status(G).map(|s| s.applied_index) >= target
    });
    assert!(
        has_start,
        "node {stale} did not catch up\n{}",
        cluster.describe()
    );
    assert!(cluster.node(stale).sigterm().success());
    let acked: Vec<(String, String)> = (0..20)
        .map(|i| {
            let (k, v) = (format!("k{i}"), format!("v{i}"));
            cluster.node(leader).put_ok(G, &k, &v);
            (k, v)
        })
        .collect();
    assert!(cluster.node(leader).sigterm().success());
    Stage {
        cluster,
        leader,
        stale,
        eraser,
        acked,
    }
}

/// With `stale` started beside the erased replica, nobody is elected: `stale` would lead
/// without the acknowledged writes. Then the member with the data comes back, every
/// acknowledged write is there, and the erased replica votes again, for good.
fn nobody_stale_is_elected_until_the_data_returns(s: &Stage) {
    let (cluster, e) = (&s.cluster, s.cluster.node(s.eraser));
    let (stale, eraser, leader) = (s.stale, s.eraser, s.leader);
    // The stale member wakes once it finds the leader's node gone, then campaigns: watch
    // until the erased replica has refused it, and a few election timeouts more.
    let refused = || {
        let log = e.run_stdout() + &e.run_stderr();
        log.contains("refusing a vote")
    };
    let started = Instant::now();
    let mut refused_at = None;
    while refused_at.is_none_or(|t: Instant| t.elapsed() < Duration::from_secs(4)) {
        let elected = cluster.try_leader_among(G, &[stale, eraser]);
        assert_eq!(
            elected,
            None,
            "node {stale}, missing acknowledged writes, was elected with the erased replica's vote\n{}",
            cluster.describe()
        );
        if refused_at.is_none() && refused() {
            refused_at = Some(Instant::now());
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the erased replica was never asked to vote\n{}",
            e.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The member with the data comes back: it is elected, the erased replica catches up,
    // and every acknowledged write is there.
    cluster.node(leader).start();
    let now = cluster.leader_among(G, &cluster.ids());
    println!("node {now} leads after the member with the data came back");
    for (k, v) in &s.acked {
        for id in [stale, eraser] {
            let r = cluster.node(id).get_retry(G, k, "linearizable");
            assert_eq!((r.status, r.text()), (200, v.clone()), "{k} on node {id}");
        }
    }
    let caught_up = wait_until(Duration::from_secs(30), || {
        let log = e.run_stdout() + &e.run_stderr();
        log.contains("it votes again")
    });
    assert!(
        caught_up,
        "the erased replica never caught up\n{}",
        e.log_tail(30)
    );
    // It still knows after a restart.
    assert!(e.sigterm().success());
    e.start();
    e.wait_ready(READY_TIMEOUT);
    let log = e.run_stdout() + &e.run_stderr();
    assert!(
        !log.contains("data was erased"),
        "the erased mark outlived the catch-up\n{}",
        e.log_tail(30)
    );
}

#[test]
fn a_purged_replica_cannot_elect_a_stale_member_and_votes_again_once_caught_up() {
    let s = stage();
    // `eraser` loses its copy of the group, and runs it again, empty.
    let e = s.cluster.node(s.eraser);
    let r = e.request(Method::DELETE, "/v1/groups/1?purge=true", None, None);
    assert_eq!(r.status, 200, "purge: {r}");
    assert!(r.text().contains("votes for nobody"), "purge: {r}");
    // Added again without saying how, it is refused with an error that says what to do.
    let r = e.request(Method::PUT, "/v1/groups/1", None, None);
    assert_error(&r, 409, "purged");
    assert!(r.text().contains("?rejoin=true"), "{r}");
    let r = e.request(Method::PUT, "/v1/groups/1?rejoin=true", None, None);
    assert!(r.status == 200 || r.status == 201, "add again: {r}");
    assert_eq!(
        r.json()["erased"],
        serde_json::json!(true),
        "add again: {r}"
    );
    let stale = s.cluster.node(s.stale);
    stale.start();
    stale.wait_ready(READY_TIMEOUT);
    nobody_stale_is_elected_until_the_data_returns(&s);
}

/// The same, when `eraser`'s whole volume is lost: killed, its data dir deleted, restarted
/// under the same id on an empty one. Its peers knew it by its old data dir, so it learns
/// that its data was wiped before any of its groups runs.
#[test]
fn a_node_restarted_on_a_wiped_volume_cannot_elect_a_stale_member() {
    let s = stage();
    let e = s.cluster.node(s.eraser);
    e.sigkill();
    std::fs::remove_dir_all(&e.data_dir).expect("wipe the data dir");
    e.start();
    // With both of its peers down, it cannot tell a wiped volume from a new one: it waits.
    std::thread::sleep(Duration::from_secs(3));
    assert_ne!(
        e.readyz(),
        200,
        "ready before any peer answered\n{}",
        e.log_tail(20)
    );
    let stale = s.cluster.node(s.stale);
    stale.start();
    stale.wait_ready(READY_TIMEOUT);
    e.wait_ready(READY_TIMEOUT);
    let log = e.run_stdout() + &e.run_stderr();
    assert!(
        log.contains(&format!(
            "node {} knew this node by another data dir",
            s.stale
        )),
        "the wiped node did not learn it was wiped\n{}",
        e.log_tail(30)
    );
    nobody_stale_is_elected_until_the_data_returns(&s);
}

/// A replica erased and added back to an idle group catches up at once, by snapshot: its
/// leader knew it to hold everything, and would have sent nothing until the group's next
/// write, so the replica stayed empty for as long as the group was idle.
#[test]
fn an_erased_replica_of_an_idle_group_catches_up_without_a_write() {
    let tuning = Tuning {
        snapshot_logs: Some(20),
        snapshot_keep_logs: Some(0),
        ..Tuning::default()
    };
    let cluster = Cluster::start_with(3, &[G], tuning);
    let leader = cluster.leader_of(G);
    for i in 0..50 {
        cluster
            .node(leader)
            .put_ok(G, &format!("k{i}"), format!("v{i}"));
    }
    let target = cluster
        .node(leader)
        .group_status(G)
        .map(|s| s.commit_index)
        .unwrap_or(0);
    let erased = cluster.ids().into_iter().find(|&i| i != leader).unwrap();
    let e = cluster.node(erased);
    let r = e.request(Method::DELETE, "/v1/groups/1?purge=true", None, None);
    assert_eq!(r.status, 200, "purge: {r}");
    let r = e.request(Method::PUT, "/v1/groups/1?rejoin=true", None, None);
    assert!(r.status == 200 || r.status == 201, "add again: {r}");
    let caught_up = wait_until(Duration::from_secs(30), || {
        e.group_status(G).is_some_and(|s| s.applied_index >= target)
    });
    assert!(
        caught_up,
        "the erased replica applied {:?} of {target} with no write to the group\n{}",
        e.group_status(G).map(|s| s.applied_index),
        e.log_tail(30)
    );
    for i in [0, 25, 49] {
        let r = e.get_mode(G, &format!("k{i}"), "local");
        assert_eq!(
            (r.status, r.text()),
            (200, format!("v{i}")),
            "k{i} on node {erased}"
        );
    }
}
