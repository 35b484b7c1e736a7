//! The soak command against real processes: 500 group start/stop cycles (and shared RPC server
//! restarts) on a live node, 30 SIGTERM and 30 SIGKILL restarts of one node of a 3-node cluster,
//! and a run with an injected leak that must fail.

mod common;
use common::*;
use serde_json::json;
use std::process::Command;

fn metric(node: &Node, name: &str) -> f64 {
    let scrape = node.scrape();
    assert!(scrape.has(name, &[]), "{name} not in the scrape");
    scrape.sum(name, &[])
}

fn single_node() -> (tempfile::TempDir, Node) {
    let (tmp, node) = common::single_node(&["--leak-deadline-ms", "500"]);
    node.put_ok(1, "k", "v");
    (tmp, node)
}

fn soak(args: &[&str]) -> std::process::Output {
    soak_with(args, &[])
}

/// `raftnode soak groups` against `node`, with the credentials it needs in the suite's secure
/// mode.
fn soak_groups(node: &Node, args: &[&str]) -> std::process::Output {
    let mut extra = Vec::new();
    if let Some(m) = node.secured() {
        extra.extend([
            "--ca-file".to_string(),
            m.ca_file().display().to_string(),
            "--token-file".to_string(),
            m.dir.join("admin.token").display().to_string(),
        ]);
    }
    let addr = node.http_addr();
    let mut all = vec!["groups", "--http-addrs", &addr];
    all.extend_from_slice(args);
    soak_with(&all, &extra)
}

fn soak_with(args: &[&str], extra: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_raftnode"))
        .arg("soak")
        .args(args)
        .args(extra)
        .arg("--quiet")
        .output()
        .expect("run raftnode soak")
}

fn show(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn five_hundred_group_cycles_and_rpc_restarts_leave_nothing_behind() {
    let (tmp, node) = single_node();
    let before = [
        "process_threads",
        "process_open_fds",
        "raftnode_unowned_tasks",
    ]
    .map(|m| metric(&node, m));
    let csv = tmp.path().join("soak.csv");
    let svg = tmp.path().join("soak.svg");
    let out = soak_groups(
        &node,
        &[
            "--cycles",
            "500",
            "--rpc-cycles",
            "20",
            "--settle-secs",
            "10",
            "--csv",
            csv.to_str().unwrap(),
            "--svg",
            svg.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "soak reported growth or failed: {}",
        show(&out)
    );
    let rows = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(
        rows.lines().count(),
        1 + 1 + 500 + 20,
        "one CSV row per cycle plus baseline"
    );
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<polyline"));
    let after = [
        "process_threads",
        "process_open_fds",
        "raftnode_unowned_tasks",
    ]
    .map(|m| metric(&node, m));
    println!("soak groups: threads/fds/unowned before {before:?} after {after:?}");
    assert!(
        after[0] <= before[0] && after[1] <= before[1] && after[2] <= before[2],
        "before {before:?} after {after:?}"
    );
    for kind in ["group", "rpc_server"] {
        for m in ["tasks", "threads", "connections"] {
            let text = node.get_path("/metrics").text();
            let line = format!("raftnode_leaked_{m}_total{{owner_kind=\"{kind}\"}} 0");
            assert!(text.contains(&line), "missing {line}");
        }
    }
    let text = node.get_path("/metrics").text();
    assert!(
        !text.contains("owner=\"1000\""),
        "series of the soaked group remain"
    );
}

#[test]
fn an_injected_leak_fails_the_soak() {
    let (_tmp, node) = single_node();
    // One leak for the warm-up stop, one for the first measured cycle.
    for _ in 0..2 {
        let r = node.post_json(
            "/v1/debug/leaks",
            &json!({"target": "group", "kind": "thread"}),
        );
        assert_eq!(r.status, 200, "{r}");
    }
    let out = soak_groups(&node, &["--cycles", "3", "--settle-secs", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("GROWTH") && err.contains("threads grew"),
        "{}",
        show(&out)
    );
}

#[test]
fn thirty_sigterm_and_thirty_sigkill_restarts_leave_survivors_flat() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("process.csv");
    let out = soak(&[
        "process",
        "--nodes",
        "3",
        "--signal",
        "both",
        "--cycles",
        "60",
        "--settle-secs",
        "10",
        "--dir",
        tmp.path().to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "process soak reported growth or failed: {}",
        show(&out)
    );
    let rows = std::fs::read_to_string(&csv).unwrap();
    // Survivors hold one outbound connection per peer at the end, as at the baseline.
    let last: Vec<&str> = rows.lines().rev().take(3).collect();
    let first: Vec<&str> = rows.lines().skip(1).take(3).collect();
    println!("process soak: baseline {first:?}\nlast {last:?}");
}
