//! The cluster id: every member of a cluster holds the same one, and a node-to-node call of
//! another cluster is refused, counted, and logged once, while the cluster keeps serving. The
//! realistic case: a member restarted on another cluster's volume (same node id, wrong data).

mod common;
use common::*;
use std::time::Duration;

fn cluster_id(node: &Node) -> String {
    eventually(
        Duration::from_secs(20),
        "a cluster id in /v1/status",
        || {
            node.status()
                .and_then(|s| s["cluster_id"].as_str().map(String::from))
        },
    )
}

fn refused(node: &Node) -> f64 {
    auth_failures(node, "cluster_id")
}

/// One raw node-to-node call to `node`, carrying `cluster` if any.
fn raw_call(node: &Node, cluster: Option<&str>) -> tonic::Code {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async { raft_call(grpc_channel(&node.grpc_addr()).await, 9, cluster).await })
}

/// Every member holds the same id, in `/v1/status` and in the data dir.
fn agreed_id(a: &Cluster) -> String {
    let id = cluster_id(a.node(1));
    for n in [2, 3] {
        assert_eq!(
            cluster_id(a.node(n)),
            id,
            "node {n} holds another cluster id"
        );
    }
    let data = std::fs::read_to_string(a.node(1).data_dir.join("CLUSTER_ID")).unwrap();
    assert_eq!(data.trim(), id);
    id
}

#[test]
fn raw_calls_with_another_or_no_cluster_id_are_refused() {
    // Plain text: the raw calls below must reach the cluster-id check, which peer TLS would
    // otherwise stop first (a test client holds no node certificate); tests/tls.rs covers that.
    let a = Cluster::start_plain(3, &[1]);
    a.leader_of(1);
    agreed_id(&a);
    // A wrong id and a missing one are refused before any group sees them.
    let target = a.node(1);
    let before = refused(target);
    assert_eq!(
        raw_call(target, Some("another-cluster")),
        tonic::Code::FailedPrecondition
    );
    assert_eq!(raw_call(target, None), tonic::Code::FailedPrecondition);
    assert!(refused(target) >= before + 2.0);
}

/// Runs secured in the suite's secure mode: both clusters' certificates come from one CA, so
/// only the cluster id tells them apart.
#[test]
fn a_member_on_another_clusters_volume_is_refused_and_the_cluster_keeps_serving() {
    let a = Cluster::start(3, &[1]);
    let leader = a.leader_of(1);
    let id = agreed_id(&a);

    // Another cluster's node 3: its volume, mounted by mistake under our node 3, holds its
    // cluster id. Our members' calls reach it and are refused.
    let scratch = tempfile::tempdir().unwrap();
    let volume = wrong_volume(scratch.path());
    let other = std::fs::read_to_string(volume.join("CLUSTER_ID")).unwrap();
    assert_ne!(other.trim(), id, "two clusters derived one id");
    let victim = a.node(3);
    victim.sigterm();
    std::fs::remove_dir_all(&victim.data_dir).unwrap();
    copy_dir(&volume, &victim.data_dir);
    victim.restart();
    assert!(
        wait_until(Duration::from_secs(30), || victim.is_running()
            && victim.status().is_some()),
        "the node on the wrong volume did not come up"
    );
    assert!(
        wait_until(Duration::from_secs(30), || refused(victim) >= 1.0),
        "calls of our cluster to the node on the wrong volume were not refused"
    );
    let log = victim.run_stderr() + &victim.run_stdout();
    assert!(
        log.contains("refused a node-to-node call from another cluster"),
        "no log line names the refusal"
    );
    // Our cluster still has a majority, and serves.
    let writer = if leader == 3 { 1 } else { leader };
    a.node(writer).put_ok(1, "still", "serving");
    assert_eq!(
        a.node(writer).get_retry(1, "still", "linearizable").text(),
        "serving"
    );
}

/// A data dir of node 3 of another (one-node) cluster: made by starting one and stopping it.
fn wrong_volume(scratch: &std::path::Path) -> std::path::PathBuf {
    let mut n = Node::new(
        3,
        scratch.join("n3"),
        String::new(),
        &[1],
        Tuning::default(),
    );
    n.peers = format!("3={}", n.grpc_addr());
    n.start();
    n.wait_ready(READY_TIMEOUT);
    n.put_ok(1, "theirs", "x");
    n.sigterm();
    n.data_dir.clone()
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
