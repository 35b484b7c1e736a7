//! Fail-stop on a storage error, with a real full disk: node 1's data dir is a small tmpfs that
//! its WAL fills. The first failed write stops all writing on that node: writes through it get
//! 503 `storage_failed`, `/readyz` answers 503, `raftnode_storage_failed` is 1, and its peers
//! elect a new leader and keep serving. After space is freed and the node restarts, every write
//! acknowledged before (through any node) is readable on it.
//!
//! Needs root (it mounts a tmpfs), as the rest of the suite's system checks do.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const G: u64 = 1;
/// Small enough to fill in seconds, large enough for the node's start and a few writes.
const FS_MIB: u64 = 24;
/// Freed after the failure, so that the restarted node has room again.
const FILLER_MIB: u64 = 6;

/// A tmpfs mounted at a directory, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, mib: u64) -> Tmpfs {
        std::fs::create_dir_all(at).expect("create mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a {mib} MiB tmpfs as a node's data dir and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_stops_writes_on_that_node_and_loses_nothing_acknowledged() {
    let tuning = Tuning {
        // Keep every entry in the WAL: the point is to fill it.
        snapshot_logs: Some(1_000_000),
        ..Tuning::default()
    };
    let mut cluster = Cluster::new(3, &[G], tuning);
    let node1_data = cluster.node(1).data_dir.clone();
    let fs = Tmpfs::mount(&node1_data, FS_MIB);
    let filler = node1_data.join("filler");
    std::fs::write(&filler, vec![7u8; (FILLER_MIB << 20) as usize]).expect("write filler");
    for n in &cluster.nodes {
        n.start();
    }
    for n in &cluster.nodes {
        n.wait_ready(READY_TIMEOUT);
    }
    cluster.leader_of(G);

    // Write 64 KiB values through node 1 until its disk is full.
    let value = vec![b'v'; 64 << 10];
    let mut acked = Vec::new();
    let mut refusal = None;
    for i in 0..2 * FS_MIB * 16 {
        let key = format!("k{i:05}");
        let r = cluster.node(1).put(G, &key, &value);
        match r.status {
            200 => acked.push(key),
            503 if r.code().as_deref() == Some("storage_failed") => {
                refusal = Some(r);
                break;
            }
            // The write whose fsync failed, or a retry racing the failure: not acknowledged.
            _ => {}
        }
    }
    let refusal = refusal.unwrap_or_else(|| {
        panic!(
            "node 1 never refused a write with storage_failed; {} acknowledged; its log:\n{}",
            acked.len(),
            cluster.node(1).log_tail(30)
        )
    });
    println!(
        "full disk: {} writes acknowledged, then {refusal}",
        acked.len()
    );
    assert!(!acked.is_empty(), "the disk filled before any write");

    let node1 = cluster.node(1);
    assert_eq!(node1.readyz(), 503, "/readyz on the failed node");
    assert_eq!(
        node1.scrape().sum("raftnode_storage_failed", &[]),
        1.0,
        "raftnode_storage_failed on the failed node"
    );
    assert!(
        node1.log_tail(200).contains("storage failed"),
        "the failure is logged by name:\n{}",
        node1.log_tail(30)
    );
    // Still refused later: fail-stop, not a retry once some space appears.
    assert_error(&node1.put(G, "after", "x"), 503, "storage_failed");

    // The others elect a leader among themselves and keep serving.
    // (Node 1 still shows its group's last state: its core stopped at the failure.)
    eventually(
        std::time::Duration::from_secs(30),
        "a leader among nodes 2 and 3",
        || cluster.try_leader_among(G, &[2, 3]),
    );
    cluster.node(2).put_ok(G, "after-failover", "yes");
    acked.push("after-failover".to_string());
    for n in [2, 3] {
        assert_eq!(
            cluster.node(n).scrape().sum("raftnode_storage_failed", &[]),
            0.0,
            "node {n} stays healthy"
        );
    }

    // Space is freed and the node restarts: it recovers, catches up and has every write.
    let status = node1.sigterm();
    assert_eq!(
        status.code(),
        Some(1),
        "a node that stopped after a storage failure exits with 1"
    );
    std::fs::remove_file(&filler).expect("remove filler");
    node1.start();
    node1.wait_ready(READY_TIMEOUT);
    assert_eq!(
        node1.scrape().sum("raftnode_storage_failed", &[]),
        0.0,
        "storage works again after the restart"
    );
    for key in &acked {
        let r = node1.get_retry(G, key, "linearizable");
        assert_eq!(r.status, 200, "acknowledged key {key} after restart: {r}");
    }
    // The cluster still takes writes through the restarted node.
    cluster.node(1).put_ok(G, "after-restart", "yes");
    for n in &mut cluster.nodes {
        n.sigterm();
    }
    drop(fs);
}
