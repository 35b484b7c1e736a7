//! A write whose outcome was lost is proposed again, and takes effect once. The leader applies
//! a forwarded delete and then loses its reply, or dies before sending it (an injected fault);
//! the forwarding node proposes the same request again, to the same leader or to the next one.
//! Applied twice, the delete would answer `existed: false` (and a put could take a key back to
//! an older value); with client sessions in the state machine the copy is answered with the
//! first reply.

mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

const G: u64 = 1;

fn delete_through(node: &Node, key: &str) -> Resp {
    node.delete(G, key)
}

fn arm(node: &Node, fault: &str) {
    let r = node.post_json("/v1/debug/faults", &json!({ "propose": fault }));
    assert_eq!(r.status, 200, "arming {fault}: {r}");
}

fn follower_of(cluster: &Cluster, leader: u64) -> u64 {
    cluster
        .live_ids()
        .into_iter()
        .find(|&id| id != leader)
        .unwrap_or(leader)
}

#[test]
fn a_delete_whose_reply_was_lost_is_applied_once() {
    let cluster = Cluster::start(3, &[G]);
    let leader = cluster.leader_of(G);
    let via = cluster.node(follower_of(&cluster, leader));
    via.put_ok(G, "k", "v");
    arm(cluster.node(leader), "lose_reply");
    let r = delete_through(via, "k");
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        r.json()["existed"],
        json!(true),
        "the retried delete was applied again: {r}"
    );
    let log = cluster.node(leader).run_stdout() + &cluster.node(leader).run_stderr();
    assert!(
        log.contains("injected fault: losing"),
        "the fault never fired, so nothing was retried\n{}",
        cluster.node(leader).log_tail(30)
    );
}

#[test]
fn a_delete_whose_leader_died_before_replying_is_applied_once() {
    let tuning = Tuning {
        election_timeout_ms: Some(1000),
        heartbeat_ms: Some(200),
        ..Tuning::default()
    };
    let cluster = Cluster::start_with(3, &[G], tuning);
    let leader = cluster.leader_of(G);
    let via_id = follower_of(&cluster, leader);
    let via = cluster.node(via_id);
    via.put_ok(G, "k", "v");
    via.put_ok(G, "j", "w");
    arm(cluster.node(leader), "exit");
    let r = delete_through(via, "k");
    let died = cluster.node(leader).wait_exit(Duration::from_secs(10));
    assert_eq!(
        died.and_then(|s| s.code()),
        Some(137),
        "the leader did not die at the fault\n{}",
        cluster.node(leader).log_tail(30)
    );
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        r.json()["existed"],
        json!(true),
        "the delete retried after its leader died was applied again: {r}"
    );
    // The survivors agree, and take writes.
    let next = cluster.new_leader(G, leader, Duration::from_secs(20));
    let n = cluster.node(next);
    assert_eq!(n.get_retry(G, "k", "linearizable").status, 404);
    assert_eq!(n.get_retry(G, "j", "linearizable").text(), "w");
    via.put_ok(G, "after", "x");
}
