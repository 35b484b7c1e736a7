//! A replica whose data was erased (an operator's purge, then the group added again) comes
//! back under the same node id with an empty log. Had it voted at once, it could elect a
//! member that misses writes acknowledged with the help of its erased copy, and those writes
//! would be lost. It now votes for nobody until it has caught up with a leader.

mod common;
use common::*;
use reqwest::Method;
use std::time::{Duration, Instant};

const G: u64 = 1;

#[test]
fn a_purged_replica_cannot_elect_a_stale_member_and_votes_again_once_caught_up() {
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

    // `eraser` loses its copy of the group, and runs it again, empty.
    let e = cluster.node(eraser);
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

    // With only the stale member and the erased one running, nobody may be elected: the
    // stale member would lead without the acknowledged writes.
    cluster.node(stale).start();
    cluster.node(stale).wait_ready(READY_TIMEOUT);
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
    for (k, v) in &acked {
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
