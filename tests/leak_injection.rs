//! Injected leaks (the `leak-injection` feature) are caught: each kind left behind by a group's
//! stop, and an inbound connection left by the shared RPC server's stop, increments the right
//! `raftnode_leaked_*_total{owner_kind}` counter and is named in an error log line.

mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

fn counter(node: &Node, name: &str, kind: &str) -> u64 {
    let scrape = node.scrape();
    assert!(
        scrape.has(name, &[("owner_kind", kind)]),
        "{name} for {kind} not in the scrape"
    );
    scrape.sum(name, &[("owner_kind", kind)]) as u64
}

fn single_node() -> (tempfile::TempDir, Node) {
    let (tmp, node) = common::single_node(&["--leak-deadline-ms", "300"]);
    (tmp, node)
}

#[test]
fn each_injected_leak_gets_its_verdict_and_a_named_log_line() {
    let (_tmp, node) = single_node();
    let cases = [
        ("task", "raftnode_leaked_tasks_total", "injected-leak-task"),
        (
            "thread",
            "raftnode_leaked_threads_total",
            "rn-injected-leak",
        ),
        (
            "connection",
            "raftnode_leaked_connections_total",
            "(injected)",
        ),
    ];
    for (i, (kind, metric, name)) in cases.iter().enumerate() {
        let group = 10 + i as u64;
        let r = node.request(
            reqwest::Method::PUT,
            &format!("/v1/groups/{group}"),
            None,
            None,
        );
        assert_eq!(r.status, 201, "{r}");
        let before = counter(&node, metric, "group");
        let r = node.post_json("/v1/debug/leaks", &json!({"target": "group", "kind": kind}));
        assert_eq!(r.status, 200, "{r}");
        let r = node.request(
            reqwest::Method::DELETE,
            &format!("/v1/groups/{group}"),
            None,
            None,
        );
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(
            counter(&node, metric, "group"),
            before + 1,
            "{kind} leak not counted"
        );
        let logged = wait_until(Duration::from_secs(5), || {
            node.run_stderr().lines().any(|l| {
                l.contains("ERROR")
                    && l.contains("leak")
                    && l.contains(name)
                    && l.contains(&format!("owner={group}"))
            })
        });
        assert!(
            logged,
            "no error log line names the leaked {kind} ({name}) of group {group}:\n{}",
            node.log_tail(20)
        );
        for other in [
            "raftnode_leaked_tasks_total",
            "raftnode_leaked_threads_total",
            "raftnode_leaked_connections_total",
        ] {
            assert_eq!(counter(&node, other, "rpc_server"), 0);
        }
    }

    let r = node.post_json(
        "/v1/debug/leaks",
        &json!({"target": "rpc_server", "kind": "connection"}),
    );
    assert_eq!(r.status, 200, "{r}");
    let r = node.post_json("/v1/admin/rpc-server/restart", &json!({}));
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        counter(&node, "raftnode_leaked_connections_total", "rpc_server"),
        1
    );
    assert!(
        node.run_stderr()
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("injected inbound connection")),
        "no error log line names the RPC server's leaked connection"
    );
    // The node still serves after its RPC server restarted.
    node.put_ok(1, "after", "restart");
}

#[test]
fn clean_stops_leave_no_verdict() {
    let (_tmp, node) = single_node();
    for cycle in 0..5 {
        let r = node.request(reqwest::Method::PUT, "/v1/groups/5", None, None);
        assert_eq!(r.status, 201, "cycle {cycle}: {r}");
        node.put_ok(5, "k", "v");
        let r = node.request(
            reqwest::Method::DELETE,
            "/v1/groups/5?purge=true",
            None,
            None,
        );
        assert_eq!(r.status, 200, "cycle {cycle}: {r}");
        let r = node.post_json("/v1/admin/rpc-server/restart", &json!({}));
        assert_eq!(r.status, 200, "cycle {cycle}: {r}");
    }
    for kind in ["group", "rpc_server", "peer", "storage", "node"] {
        for m in [
            "raftnode_leaked_tasks_total",
            "raftnode_leaked_threads_total",
            "raftnode_leaked_connections_total",
        ] {
            assert_eq!(counter(&node, m, kind), 0, "{m} for {kind}");
        }
    }
}
