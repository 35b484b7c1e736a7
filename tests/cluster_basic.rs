//! Three nodes, groups 1..=3: every group elects one leader that all nodes agree on, and every
//! node serves reads and writes of every group (writes through followers are forwarded).

mod common;
use common::*;

#[test]
fn three_nodes_serve_every_group_through_every_node() {
    let groups = [1, 2, 3];
    let cluster = Cluster::start(3, &groups);

    for &g in &groups {
        let leader = cluster.leader_of(g);
        let statuses = |c: &Cluster| -> Vec<GroupStatus> {
            c.nodes
                .iter()
                .map(|n| {
                    n.group_status(g)
                        .unwrap_or_else(|| panic!("node {} lacks group {g}", n.id))
                })
                .collect()
        };
        // A follower can know its leader a moment before it holds the log (it learns the vote
        // from the first append, which it may refuse for a missing prefix): every replica must
        // get the membership soon, not at once. The assertions below say what is missing.
        wait_until(RETRY_TIMEOUT, || {
            statuses(&cluster)
                .iter()
                .all(|s| s.voters == [1, 2, 3] && s.leader == Some(leader))
        });
        let statuses = statuses(&cluster);
        let leaders = statuses.iter().filter(|s| s.is_leader()).count();
        assert_eq!(
            leaders, 1,
            "group {g} needs exactly one Leader: {statuses:?}"
        );
        for s in &statuses {
            assert_eq!(s.voters, vec![1, 2, 3], "group {g} voters: {s:?}");
            assert_eq!(s.leader, Some(leader), "group {g} leader: {s:?}");
        }
    }

    // Write through every node (leader and followers), then read every key through every node.
    for &g in &groups {
        let leader = cluster.leader_of(g);
        for writer in &cluster.nodes {
            let key = format!("k-g{g}-via{}", writer.id);
            let r = writer.put_ok(g, &key, format!("v-{key}"));
            let index = r.json().get("index").and_then(Value::as_u64);
            assert!(
                index.is_some_and(|i| i > 0),
                "PUT answer lacks a positive index: {r}"
            );
            let commit = cluster.node(leader).group_status(g).map(|s| s.commit_index);
            assert!(
                commit >= index,
                "leader commit {commit:?} behind acked index {index:?}"
            );
        }
        for writer in &cluster.nodes {
            let key = format!("k-g{g}-via{}", writer.id);
            for reader in &cluster.nodes {
                // Default read mode is linearizable.
                let r = retry(RETRY_TIMEOUT, || reader.get(g, &key));
                assert_eq!(r.status, 200, "GET {key} via node {}: {r}", reader.id);
                assert_eq!(
                    r.text(),
                    format!("v-{key}"),
                    "GET {key} via node {}",
                    reader.id
                );
            }
        }
        let key = format!("k-g{g}-via1");
        let r = cluster.node(leader).get_retry(g, &key, "lease");
        assert_eq!(r.text(), format!("v-{key}"), "lease read on leader: {r}");
        for n in &cluster.nodes {
            let ok = wait_until(RETRY_TIMEOUT, || {
                n.get_mode(g, &key, "local").text() == format!("v-{key}")
            });
            assert!(ok, "local read of {key} on node {} never caught up", n.id);
        }
    }

    // Overwrite and delete through a follower; everybody sees it.
    let leader = cluster.leader_of(1);
    let follower = cluster
        .nodes
        .iter()
        .find(|n| n.id != leader)
        .expect("a follower");
    follower.put_ok(1, "k-g1-via1", "second");
    assert_eq!(
        cluster
            .node(leader)
            .get_retry(1, "k-g1-via1", "linearizable")
            .text(),
        "second"
    );
    let r = retry(RETRY_TIMEOUT, || follower.delete(1, "k-g1-via1"));
    assert_eq!(r.status, 200, "DELETE via follower: {r}");
    for n in &cluster.nodes {
        let r = n.get_retry(1, "k-g1-via1", "linearizable");
        assert_error(&r, 404, "key_not_found");
    }
    for n in &cluster.nodes {
        assert_eq!(n.get_path("/healthz").status, 200);
        assert_eq!(n.readyz(), 200);
    }
}
