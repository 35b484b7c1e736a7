//! Quiescence of idle groups, on real processes: idle groups stop heartbeating on every member,
//! work wakes them at once, and sleeping groups still get new leaders when their leader's node
//! dies (SIGKILL), freezes (SIGSTOP), or stops hosting the group, with every acknowledged write
//! kept.

mod common;
use common::*;
use std::time::{Duration, Instant};

const GROUPS: u64 = 12;

fn groups() -> Vec<u64> {
    (1..=GROUPS).collect()
}

fn quiesced(node: &Node) -> f64 {
    node.scrape().sum("raftnode_groups_quiesced", &[])
}

fn appends_served(node: &Node) -> f64 {
    node.scrape().sum(
        "raftnode_rpc_requests_total",
        &[("method", "append_entries")],
    )
}

/// Waits until every running node reports every group it hosts asleep.
fn wait_all_quiesced(cluster: &Cluster, hosted: u64) {
    for id in cluster.live_ids() {
        let node = cluster.node(id);
        let ok = wait_until(Duration::from_secs(40), || quiesced(node) == hosted as f64);
        assert!(
            ok,
            "node {id}: {} of {hosted} groups quiesced\n{}",
            quiesced(node),
            cluster.describe()
        );
    }
}

/// One acknowledged key per group, written through `via`.
fn write_each(node: &Node, tag: &str) -> Vec<(u64, String, String)> {
    groups()
        .into_iter()
        .map(|g| {
            let (k, v) = (format!("{tag}-{g}"), format!("v-{tag}-{g}"));
            node.put_ok(g, &k, &v);
            (g, k, v)
        })
        .collect()
}

fn assert_readable(node: &Node, acked: &[(u64, String, String)]) {
    for (g, k, v) in acked {
        let r = node.get_retry(*g, k, "linearizable");
        assert_eq!(
            r.status, 200,
            "group {g} key {k} through node {}: {r}",
            node.id
        );
        assert_eq!(r.text(), *v, "group {g} key {k} through node {}", node.id);
    }
}

/// Waits until the live nodes agree on a leader of every group among `among`; returns when.
fn wait_all_led(cluster: &Cluster, among: &[u64], started: Instant) -> Duration {
    // Only the nodes in `among` are asked: a frozen node would hold an HTTP request.
    let ok = wait_until(Duration::from_secs(40), || {
        let views: Vec<Vec<GroupStatus>> = among
            .iter()
            .filter_map(|id| cluster.node(*id).group_statuses())
            .collect();
        views.len() == among.len()
            && groups().into_iter().all(|g| {
                let leaders: Vec<Option<u64>> = views
                    .iter()
                    .map(|v| v.iter().find(|s| s.id == g).and_then(|s| s.leader))
                    .collect();
                let Some(Some(l)) = leaders.first().copied() else {
                    return false;
                };
                let led_by = |id: u64| {
                    among
                        .iter()
                        .position(|a| *a == id)
                        .and_then(|i| views[i].iter().find(|s| s.id == g))
                        .is_some_and(|s| s.is_leader())
                };
                among.contains(&l) && leaders.iter().all(|x| *x == Some(l)) && led_by(l)
            })
    });
    assert!(
        ok,
        "not every group has a leader among {among:?}\n{}",
        cluster.describe()
    );
    started.elapsed()
}

/// SIGTERM to every node: each exits 0 (no leak verdict).
fn stop_all(cluster: &Cluster) {
    for id in cluster.ids() {
        let s = cluster.node(id).sigterm();
        assert!(s.success(), "node {id} exited with {s} after SIGTERM");
    }
}

/// The node that leads the most groups.
fn busiest(cluster: &Cluster) -> u64 {
    let ids = cluster.live_ids();
    *ids.iter()
        .max_by_key(|id| cluster.node(**id).scrape().sum("raftnode_groups_led", &[]) as u64)
        .expect("a node")
}

#[test]
fn idle_groups_sleep_wake_on_work_and_elect_when_their_leader_dies() {
    let cluster = Cluster::start(3, &groups());
    for g in groups() {
        cluster.leader_of(g);
    }
    let first = write_each(cluster.node(1), "a");
    wait_all_quiesced(&cluster, GROUPS);

    // Asleep means silent: no appends (heartbeats included) reach a node for a while.
    let node2 = cluster.node(2);
    let before = appends_served(node2);
    std::thread::sleep(Duration::from_secs(3));
    let after = appends_served(node2);
    assert_eq!(
        before, after,
        "a node of a fully quiesced cluster kept receiving appends"
    );

    // Work wakes a group at once: the first write after the sleep succeeds at the first try.
    let wakes = cluster
        .node(1)
        .scrape()
        .sum("raftnode_raft_group_wakes_total", &[]);
    let t = Instant::now();
    let r = cluster.node(1).put(1, "wake", "up");
    assert_eq!(r.status, 200, "first write to a sleeping group: {r}");
    println!(
        "quiescence: first write to a sleeping group took {} ms",
        t.elapsed().as_millis()
    );
    assert!(
        cluster
            .node(1)
            .scrape()
            .sum("raftnode_raft_group_wakes_total", &[])
            > wakes,
        "the write did not count a wake"
    );
    wait_all_quiesced(&cluster, GROUPS);

    // A leader's node that stops hosting a group (and stays alive) wakes the other members.
    let g = 2;
    let leader = cluster.leader_of(g);
    let r = cluster.node(leader).request(
        reqwest::Method::DELETE,
        &format!("/v1/groups/{g}"),
        None,
        None,
    );
    assert_eq!(r.status, 200, "{r}");
    let others: Vec<u64> = cluster.ids().into_iter().filter(|i| *i != leader).collect();
    let t = Instant::now();
    let new = eventually(
        Duration::from_secs(30),
        "a new leader of the removed group",
        || {
            cluster
                .try_leader_among(g, &others)
                .filter(|l| *l != leader)
        },
    );
    println!(
        "quiescence: group {g} removed from its leader {leader}: node {new} leads after {} ms",
        t.elapsed().as_millis()
    );
    let r =
        cluster
            .node(leader)
            .request(reqwest::Method::PUT, &format!("/v1/groups/{g}"), None, None);
    assert!(matches!(r.status, 200 | 201), "{r}");
    for g in groups() {
        cluster.leader_of(g);
    }
    // The balancer hands the group back (a term change of its own) once the node leads fewer
    // than its share: let it finish before terms are compared.
    eventually(Duration::from_secs(30), "leaders balanced again", || {
        cluster
            .ids()
            .iter()
            .all(|id| {
                cluster.node(*id).scrape().sum("raftnode_groups_led", &[]) == (GROUPS / 3) as f64
            })
            .then_some(())
    });
    wait_all_quiesced(&cluster, GROUPS);
    // Writes through a node that follows most groups wake only their leaders: no replica
    // campaigns, so no term moves.
    let terms = |n: &Node| -> Vec<(u64, u64)> {
        let mut t: Vec<(u64, u64)> = n
            .group_statuses()
            .expect("status")
            .iter()
            .map(|s| (s.id, s.term))
            .collect();
        t.sort_unstable();
        t
    };
    let before = terms(cluster.node(1));
    let second = write_each(cluster.node(2), "b");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        before,
        terms(cluster.node(1)),
        "writes to sleeping groups started elections"
    );
    wait_all_quiesced(&cluster, GROUPS);

    // SIGKILL of the node that leads the most sleeping groups.
    let victim = busiest(&cluster);
    let survivors: Vec<u64> = cluster.ids().into_iter().filter(|i| *i != victim).collect();
    let killed = Instant::now();
    cluster.node(victim).sigkill();
    let took = wait_all_led(&cluster, &survivors, killed);
    println!(
        "quiescence: node {victim} SIGKILLed with every group asleep; all {GROUPS} groups led by {survivors:?} after {} ms",
        took.as_millis()
    );
    let reader = cluster.node(survivors[0]);
    assert_readable(reader, &first);
    assert_readable(reader, &second);
    let third = write_each(reader, "c");

    cluster.node(victim).restart();
    cluster.node(victim).wait_ready(READY_TIMEOUT);
    wait_all_quiesced(&cluster, GROUPS);
    assert_readable(cluster.node(victim), &third);
    stop_all(&cluster);
}

#[test]
fn a_frozen_leader_node_loses_its_sleeping_groups_and_rejoins() {
    let cluster = Cluster::start(3, &groups());
    for g in groups() {
        cluster.leader_of(g);
    }
    let first = write_each(cluster.node(1), "a");
    wait_all_quiesced(&cluster, GROUPS);

    // SIGSTOP: the node holds its connections but answers nothing, not even the probe.
    let victim = busiest(&cluster);
    let survivors: Vec<u64> = cluster.ids().into_iter().filter(|i| *i != victim).collect();
    let pid = cluster.node(victim).pid().expect("running");
    let frozen = Instant::now();
    signal(pid, libc::SIGSTOP);
    let took = wait_all_led(&cluster, &survivors, frozen);
    println!(
        "quiescence: node {victim} frozen with every group asleep; all {GROUPS} groups led by {survivors:?} after {} ms",
        took.as_millis()
    );
    let reader = cluster.node(survivors[0]);
    assert_readable(reader, &first);
    let second = write_each(reader, "b");

    // Thawed, it learns of the new terms and serves reads of what was written meanwhile.
    signal(pid, libc::SIGCONT);
    for g in groups() {
        cluster.leader_of(g);
    }
    assert_readable(cluster.node(victim), &second);
    wait_all_quiesced(&cluster, GROUPS);
    stop_all(&cluster);
}
