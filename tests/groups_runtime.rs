//! Starting and stopping a group at runtime (PUT/DELETE /v1/groups/{id}) while another group
//! takes writes: the new group elects a leader and serves, and the busy group never fails a write.

mod common;
use common::*;
use reqwest::Method;
use std::time::{Duration, Instant};

#[test]
fn group_added_and_removed_at_runtime_under_traffic() {
    let cluster = Cluster::start(3, &[1]);
    cluster.leader_of(1);
    let load = Load::start(1, "rt", 2, cluster.http_urls(&cluster.ids()));
    let began = Instant::now();
    load.expect_progress(20, "at start");

    // Start group 7 on every node (node 1, the lowest id, initialises it).
    for n in &cluster.nodes {
        let r = n.request(Method::PUT, "/v1/groups/7", None, None);
        assert_eq!(r.status, 201, "PUT /v1/groups/7 on node {}: {r}", n.id);
    }
    let again = cluster
        .node(1)
        .request(Method::PUT, "/v1/groups/7", None, None);
    assert_eq!(
        again.status, 200,
        "second PUT /v1/groups/7 (already running): {again}"
    );

    let leader = cluster.leader_of(7);
    let voters = cluster.node(leader).group_status(7).map(|s| s.voters);
    assert_eq!(voters, Some(vec![1, 2, 3]), "group 7 membership");
    for n in &cluster.nodes {
        let key = format!("seven-{}", n.id);
        n.put_ok(7, &key, "7");
        for reader in &cluster.nodes {
            assert_eq!(
                reader.get_retry(7, &key, "linearizable").text(),
                "7",
                "via node {}",
                reader.id
            );
        }
    }
    load.expect_progress(20, "while group 7 ran");

    // Stop group 7 everywhere; node 3 also purges its data.
    for n in &cluster.nodes {
        let path = if n.id == 3 {
            "/v1/groups/7?purge=true"
        } else {
            "/v1/groups/7"
        };
        let r = n.request(Method::DELETE, path, None, None);
        assert_eq!(r.status, 200, "DELETE {path} on node {}: {r}", n.id);
    }
    for n in &cluster.nodes {
        let gone = wait_until(Duration::from_secs(10), || {
            n.group_statuses()
                .is_some_and(|gs| gs.iter().all(|g| g.id != 7))
        });
        assert!(gone, "node {} still lists group 7: {:?}", n.id, n.status());
        assert_error(&n.get(7, "seven-1"), 404, "group_not_found");
    }

    load.expect_progress(20, "after group 7 stopped");
    let stats = load.stop();
    let window = stats.max_gap(began, Instant::now());
    println!(
        "groups_runtime: group 1 {}; longest gap between acked writes {} ms",
        stats.summary(),
        window.as_millis()
    );
    assert!(
        stats.hard_failures.is_empty(),
        "group 1 had failed writes: {}",
        stats.summary()
    );
    assert!(
        window < Duration::from_secs(5),
        "group 1 stalled for {window:?}"
    );
    let reader = cluster.node(cluster.leader_of(1));
    verify_acked(reader, 1, &stats.acked);
}
