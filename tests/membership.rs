//! Membership change under write traffic: a 4th node that knows all peers but does not bootstrap
//! joins group 1 as a learner, is promoted to voter, and node 3 is removed: voters end as [1,2,4].

mod common;
use common::*;
use std::time::Duration;

/// Sends a membership request to the leader of `group`, following `not_leader` answers and
/// retrying 503s, within `RETRY_TIMEOUT`.
fn to_leader(cluster: &Cluster, group: u64, ids: &[u64], send: impl Fn(&Node) -> Resp) -> Resp {
    let mut leader = cluster.leader_among(group, ids);
    retry(RETRY_TIMEOUT, || {
        let r = send(cluster.node(leader));
        if r.status == 409 && r.code().as_deref() == Some("not_leader") {
            leader = r
                .json()
                .get("leader")
                .and_then(Value::as_u64)
                .unwrap_or(leader);
            // Make `retry` go again, now at the leader it named.
            return Resp {
                status: 503,
                body: r.body,
            };
        }
        if r.status == 0 {
            leader = cluster.try_leader_among(group, ids).unwrap_or(leader);
        }
        r
    })
}

#[test]
fn learner_joins_is_promoted_and_a_voter_leaves_under_traffic() {
    let g = 1;
    let mut cluster = Cluster::start(3, &[g]);
    cluster.leader_of(g);

    cluster.add_node(4, &[g]);
    let n4 = cluster.node(4);
    n4.start();
    n4.wait_healthy(READY_TIMEOUT);
    // Node 4 is not the lowest id: it must wait to be added, never form a group of its own.
    std::thread::sleep(Duration::from_secs(3)); // > 2 election timeouts
    let s4 = n4.group_status(g);
    assert!(
        s4.as_ref()
            .is_none_or(|s| !s.is_leader() && s.leader != Some(4)),
        "node 4 bootstrapped group {g} by itself: {s4:?}"
    );
    let leader = cluster.leader_among(g, &[1, 2, 3]);

    // Membership requests sent to a follower are refused, naming the leader.
    let follower = [1, 2, 3]
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    let add = json!({"node_id": 4, "addr": cluster.node(4).grpc_addr()});
    let r = cluster
        .node(follower)
        .post_json(&format!("/v1/groups/{g}/learners"), &add);
    assert_error(&r, 409, "not_leader");
    println!("membership: follower {follower} answered {r}");

    let load = Load::start(g, "mb", 2, cluster.http_urls(&[1, 2]));
    load.expect_progress(20, "before membership changes");
    let voters_ids = [1, 2, 3];

    // 1. Node 4 joins as learner and catches up.
    let r = to_leader(&cluster, g, &voters_ids, |n| {
        n.post_json(&format!("/v1/groups/{g}/learners"), &add)
    });
    assert_eq!(r.status, 200, "add learner: {r}");
    let leader = cluster.leader_among(g, &voters_ids);
    let ok = wait_until(Duration::from_secs(20), || {
        let target = cluster
            .node(leader)
            .group_status(g)
            .map(|s| s.commit_index)
            .unwrap_or(u64::MAX);
        cluster
            .node(4)
            .group_status(g)
            .is_some_and(|s| s.applied_index >= target)
    });
    assert!(ok, "learner 4 never caught up\n{}", cluster.describe());
    let learners = cluster.node(leader).group_status(g).map(|s| s.learners);
    assert_eq!(
        learners,
        Some(vec![4]),
        "learners after add\n{}",
        cluster.describe()
    );
    assert_eq!(
        cluster.node(4).group_status(g).map(|s| s.role),
        Some("Learner".to_string())
    );

    // 2. Promote node 4.
    let r = to_leader(&cluster, g, &voters_ids, |n| {
        n.post_json(&format!("/v1/groups/{g}/voters"), &json!({"node_id": 4}))
    });
    assert_eq!(r.status, 200, "promote 4: {r}");
    let all = [1, 2, 3, 4];
    let ok = wait_until(Duration::from_secs(20), || {
        let l = cluster.try_leader_among(g, &all);
        l.and_then(|l| cluster.node(l).group_status(g))
            .is_some_and(|s| s.voters == [1, 2, 3, 4])
    });
    assert!(ok, "voters never became [1,2,3,4]\n{}", cluster.describe());

    // 3. Remove node 3 (possibly the leader: the request then goes to it and it steps down).
    let r = to_leader(&cluster, g, &all, |n| {
        n.request(
            reqwest::Method::DELETE,
            &format!("/v1/groups/{g}/voters/3"),
            None,
            None,
        )
    });
    assert_eq!(r.status, 200, "remove voter 3: {r}");
    let remaining = [1, 2, 4];
    for &id in &remaining {
        let ok = wait_until(Duration::from_secs(20), || {
            cluster
                .node(id)
                .group_status(g)
                .is_some_and(|s| s.voters == remaining)
        });
        assert!(
            ok,
            "node {id} never saw voters [1,2,4]\n{}",
            cluster.describe()
        );
    }
    let leader = cluster.leader_among(g, &remaining);
    assert_ne!(leader, 3);
    println!(
        "membership: leader {leader}, status {:?}",
        cluster.node(leader).group_status(g)
    );

    load.expect_progress(20, "after membership changes");
    let stats = load.stop();
    println!("membership: {}", stats.summary());
    assert!(
        stats.hard_failures.is_empty(),
        "failed writes: {}",
        stats.summary()
    );
    let checked = verify_acked(cluster.node(4), g, &stats.acked);
    println!("membership: all {checked} acknowledged keys readable through node 4");
}
