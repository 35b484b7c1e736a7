//! A thousand groups on a 3-node cluster, as CI can afford it: every group elects a leader,
//! leadership is spread, the Raft messages of all groups to a peer share frames, writes to many
//! groups are acknowledged and read back, and SIGTERM stops every node with no leak verdict.
//! Metrics run in aggregate mode, as they would at this scale.

mod common;
use common::*;
use std::time::{Duration, Instant};

const GROUPS: u64 = 1000;

fn led(node: &Node) -> f64 {
    node.scrape().sum("raftnode_groups_led", &[])
}

/// Counts only: a status dump of a thousand groups would bury the failure.
fn summary(cluster: &Cluster) -> String {
    cluster
        .live_ids()
        .iter()
        .map(|id| {
            let s = cluster.node(*id).scrape();
            format!(
                "node {id}: groups {} led {} quiesced {}\n{}",
                s.sum("raftnode_groups", &[]),
                s.sum("raftnode_groups_led", &[]),
                s.sum("raftnode_groups_quiesced", &[]),
                cluster.node(*id).log_tail(15)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_thousand_groups_elect_take_writes_and_stop_without_leaks() {
    let groups: Vec<u64> = (1..=GROUPS).collect();
    // A thousand groups elect at once on two cores shared by three nodes built for debugging:
    // slower timers than the other tests use, so that the start is not an election storm.
    let tuning = Tuning {
        election_timeout_ms: Some(2500),
        heartbeat_ms: Some(500),
        ..Tuning::default()
    };
    let mut cluster = Cluster::new(3, &groups, tuning);
    for node in &mut cluster.nodes {
        node.envs
            .push(("RAFTNODE_METRICS_GROUP_LABELS".into(), "false".into()));
        // openraft logs every election and vote at info: a thousand groups' worth would be
        // most of the work.
        node.envs
            .push(("RUST_LOG".into(), "info,openraft=warn".into()));
    }
    let started = Instant::now();
    for node in &cluster.nodes {
        node.start();
    }
    for node in &cluster.nodes {
        node.wait_ready(Duration::from_secs(120));
    }

    // Every group led, by exactly one node: the leader counts add up to the number of groups.
    let ok = wait_until(Duration::from_secs(180), || {
        cluster
            .ids()
            .iter()
            .map(|id| led(cluster.node(*id)))
            .sum::<f64>()
            == GROUPS as f64
    });
    assert!(ok, "not every group got a leader\n{}", summary(&cluster));
    let per_node: Vec<f64> = cluster
        .ids()
        .iter()
        .map(|id| led(cluster.node(*id)))
        .collect();
    println!(
        "{GROUPS} groups led after {:.1} s; leaders per node {per_node:?}",
        started.elapsed().as_secs_f64()
    );
    // Taking turns at bootstrap spreads them; the balancer keeps them so.
    for n in &per_node {
        assert!(
            (*n - GROUPS as f64 / 3.0).abs() <= GROUPS as f64 / 3.0 * 0.2,
            "leaders per node {per_node:?} are not spread\n{}",
            summary(&cluster)
        );
    }

    // Writes to every tenth group, through one node (most are forwarded), then read back
    // through another.
    let acked: Vec<(u64, String)> = (1..=GROUPS)
        .step_by(10)
        .map(|g| {
            let v = format!("v{g}");
            cluster.node(1).put_ok(g, "k", &v);
            (g, v)
        })
        .collect();
    for (g, v) in &acked {
        let r = cluster.node(2).get_retry(*g, "k", "linearizable");
        assert_eq!(r.status, 200, "group {g}: {r}");
        assert_eq!(r.text(), *v, "group {g}");
    }

    // The messages of many groups travelled together.
    for id in cluster.ids() {
        let s = cluster.node(id).scrape();
        let (sum, count) = (
            s.sum("raftnode_peer_batch_messages_sum", &[]),
            s.sum("raftnode_peer_batch_messages_count", &[]),
        );
        assert!(count > 0.0, "node {id} sent no batch");
        println!(
            "node {id}: {count} batches, {:.1} messages per batch",
            sum / count
        );
        assert!(
            sum / count > 1.5,
            "node {id}: {sum} messages in {count} batches: groups do not share frames"
        );
        for m in ["tasks", "threads", "connections"] {
            let leaked = s.sum(&format!("raftnode_leaked_{m}_total"), &[]);
            assert_eq!(leaked, 0.0, "node {id} leaked {m}\n{}", summary(&cluster));
        }
    }

    for id in cluster.ids() {
        let node = cluster.node(id);
        let s = node.sigterm();
        assert!(s.success(), "node {id} exited with {s} after SIGTERM");
        let logs = format!("{}{}", node.run_stdout(), node.run_stderr());
        for verdict in ["leak: owner stopped", "leaked resources at exit"] {
            assert!(
                !logs.contains(verdict),
                "node {id} logged a leak verdict at shutdown:\n{}",
                node.log_tail(40)
            );
        }
    }
}
