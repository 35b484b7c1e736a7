//! `/metrics` of a live cluster: it passes `promtool check metrics`, carries every metric name
//! DESIGN.md §5 makes a contract, drops a removed group's series, and can aggregate away the
//! per-group label.

mod common;
use common::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

const CONTRACT: &[&str] = &[
    "raftnode_owner_tasks",
    "raftnode_owner_threads",
    "raftnode_owner_connections",
    "raftnode_owner_starts_total",
    "raftnode_owner_stops_total",
    "raftnode_leaked_tasks_total",
    "raftnode_leaked_threads_total",
    "raftnode_leaked_connections_total",
    "raftnode_unowned_tasks",
    "raftnode_groups",
    "raftnode_groups_led",
    "raftnode_groups_quiesced",
    "raftnode_raft_group_wakes_total",
    "raftnode_raft_leader_moves_total",
    "raftnode_peers_live",
    "raftnode_storage_failed",
    "raftnode_storage_log_cache_bytes",
    "raftnode_storage_state_bytes",
    "raftnode_threads_by_name",
    "process_threads",
    "process_open_fds",
    "process_max_fds",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "raftnode_runtime_workers",
    "raftnode_raft_has_leader",
    "raftnode_raft_is_leader",
    "raftnode_raft_term",
    "raftnode_raft_leader_changes_seen_total",
    "raftnode_raft_commit_index",
    "raftnode_raft_applied_index",
    "raftnode_raft_proposals_committed_total",
    "raftnode_raft_proposals_failed_total",
    "raftnode_raft_proposals_pending",
    "raftnode_storage_fsync_duration_seconds",
    "raftnode_peer_round_trip_time_seconds",
    "raftnode_peer_batch_messages",
    "raftnode_rpc_requests_total",
    "raftnode_trace_spans_exported_total",
    "raftnode_trace_spans_dropped_total",
    "raftnode_build_info",
];

/// Names of every sample in a scrape (histogram suffixes folded into the family name).
fn families(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|n| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .filter(|base| text.contains(&format!("# TYPE {base} histogram")))
                .unwrap_or(n)
                .to_string()
        })
        .collect()
}

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool not found: install Debian's prometheus package (scripts/test-all does)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn scrape(node: &Node) -> String {
    let r = node.get_path("/metrics");
    assert_eq!(r.status, 200, "{r}");
    r.text()
}

#[test]
fn scrape_passes_promtool_and_holds_the_contract() {
    let cluster = Cluster::start(3, &[1, 2]);
    let leader = cluster.leader_of(1);
    let follower = cluster.ids().into_iter().find(|i| *i != leader).unwrap();
    // Through a follower, so the leader's shared server counts forwarded KV calls too.
    for i in 0..10 {
        cluster.node(follower).put_ok(1, &format!("m{i}"), "v");
    }
    for id in cluster.ids() {
        assert_eq!(
            cluster
                .node(id)
                .request(reqwest::Method::PUT, "/v1/groups/9", None, None)
                .status,
            201
        );
    }
    cluster.leader_of(9);
    let text = scrape(cluster.node(leader));
    promtool_check(&text);
    let names = families(&text);
    let missing: Vec<_> = CONTRACT.iter().filter(|n| !names.contains(**n)).collect();
    assert!(
        missing.is_empty(),
        "contract metrics missing from the scrape: {missing:?}"
    );
    assert!(
        text.contains("raftnode_raft_term{group=\"9\"}"),
        "group 9 has no series"
    );

    for id in cluster.ids() {
        let r = cluster
            .node(id)
            .request(reqwest::Method::DELETE, "/v1/groups/9", None, None);
        assert_eq!(r.status, 200, "{r}");
    }
    let gone = wait_until(Duration::from_secs(10), || {
        !scrape(cluster.node(leader)).contains("group=\"9\"")
    });
    let text = scrape(cluster.node(leader));
    let left: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("group=\"9\"") || l.contains("owner=\"9\""))
        .collect();
    assert!(
        gone && left.is_empty(),
        "series of removed group 9 remain: {left:?}"
    );
    promtool_check(&text);
}

#[test]
fn group_labels_can_be_switched_off() {
    let (_tmp, node) = single_node_of(&[1, 2, 3], &["--metrics-group-labels", "false"], &[]);
    let ok = wait_until(Duration::from_secs(20), || {
        scrape(&node).contains("raftnode_raft_is_leader 3")
    });
    let text = scrape(&node);
    assert!(
        ok,
        "no aggregate raftnode_raft_is_leader 3 in:\n{}",
        text.lines()
            .filter(|l| l.contains("raft_"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        !text.contains("group=\""),
        "per-group labels remain with --metrics-group-labels false"
    );
    let group_owners: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("raftnode_owner_tasks{") && l.contains("owner_kind=\"group\""))
        .collect();
    assert!(
        group_owners.len() == 1 && group_owners[0].contains("owner=\"all\""),
        "group owners are not folded into one series: {group_owners:?}"
    );
    promtool_check(&text);
}
