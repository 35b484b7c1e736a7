//! Cluster benchmark: starts a local 3-node cluster of the optimised binary on loopback and
//! prints put throughput and latency at 1, 16 and 256 concurrent clients (256-byte values),
//! then fsyncs per acknowledged write while 8 groups take writes at once.
//!
//! `cargo bench --bench cluster`; `BENCH_SECS` sets the length of each run (default 5).

mod common;
use common::*;
use std::time::Duration;

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`; the cluster run is for
    // `cargo bench` only.
    if !std::env::args().any(|a| a == "--bench") {
        println!("cluster bench: skipped (run it with `cargo bench --bench cluster`)");
        return;
    }
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().expect("temp dir");
    let nodes = start_cluster(dir.path(), "1,2,3,4,5,6,7,8", &[]);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    let leader = leader_of(&client, &nodes, 1).await;
    println!("raftnode cluster bench: 3 nodes on loopback, 256-byte values, {secs}s per run");
    println!(
        "{:>8} {:>10} {:>9} {:>9}",
        "clients", "puts/s", "p50 ms", "p99 ms"
    );
    let target = vec![(nodes[leader].http.clone(), 1u64)];
    for clients in [1usize, 16, 256] {
        let r = load(&client, &target, clients, secs).await;
        println!(
            "{:>8} {:>10.0} {:>9.2} {:>9.2}",
            clients,
            r.ok as f64 / r.elapsed.as_secs_f64(),
            pct(&r.latencies, 0.50),
            pct(&r.latencies, 0.99)
        );
    }
    let mut targets = Vec::new();
    for g in 1..=8u64 {
        let l = leader_of(&client, &nodes, g).await;
        targets.push((nodes[l].http.clone(), g));
    }
    let mut before = Vec::new();
    for n in &nodes {
        before.push(fsyncs(&client, n).await);
    }
    let r = load(&client, &targets, 64, secs).await;
    println!(
        "8 groups, 64 clients: {:.0} puts/s acknowledged",
        r.ok as f64 / r.elapsed.as_secs_f64()
    );
    for (i, n) in nodes.iter().enumerate() {
        let d = fsyncs(&client, n).await - before[i];
        println!(
            "  node {}: {:.0} fsyncs, {:.3} fsyncs per acknowledged write",
            i + 1,
            d,
            d / r.ok.max(1) as f64
        );
    }
}
