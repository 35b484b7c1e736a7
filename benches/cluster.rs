//! Cluster benchmark: starts a local 3-node cluster of the optimised binary on loopback and
//! prints put throughput and latency at 1, 16 and 256 concurrent clients (256-byte values),
//! then fsyncs per acknowledged write while 8 groups take writes at once.
//!
//! `cargo bench --bench cluster`; `BENCH_SECS` sets the length of each run (default 5).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Node {
    child: Child,
    http: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

fn start_cluster(dir: &std::path::Path, groups: &str) -> Vec<Node> {
    let grpc: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peers: Vec<String> = grpc
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
        .collect();
    let peers = peers.join(",");
    (0..3)
        .map(|i| {
            let http = format!("127.0.0.1:{}", free_port());
            let log =
                std::fs::File::create(dir.join(format!("node{}.log", i + 1))).expect("log file");
            let child = Command::new(env!("CARGO_BIN_EXE_raftnode"))
                .args(["serve", "--node-id", &(i + 1).to_string()])
                .args(["--grpc-addr", &format!("127.0.0.1:{}", grpc[i])])
                .args(["--http-addr", &http])
                .arg("--data-dir")
                .arg(dir.join(format!("n{}", i + 1)))
                .args(["--peers", &peers, "--groups", groups])
                .args(["--election-timeout-ms", "500", "--heartbeat-ms", "100"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("cannot start raftnode");
            Node { child, http }
        })
        .collect()
}

async fn leader_of(client: &reqwest::Client, nodes: &[Node], group: u64) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for (i, n) in nodes.iter().enumerate() {
            let url = format!("http://{}/v1/status", n.http);
            if let Ok(r) = client.get(&url).send().await {
                if let Ok(v) = r.json::<serde_json::Value>().await {
                    let role = v["groups"]
                        .as_array()
                        .and_then(|gs| gs.iter().find(|g| g["id"] == group))
                        .map(|g| g["role"] == "Leader");
                    if role == Some(true) {
                        return i;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("group {group} elected no leader in 30s");
}

struct Run {
    ok: u64,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

/// `clients` loops writing to the given (address, group) targets round-robin until `secs` pass.
async fn load(
    client: &reqwest::Client,
    targets: &[(String, u64)],
    clients: usize,
    secs: u64,
) -> Run {
    let value = vec![b'x'; 256];
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let loops = (0..clients).map(|c| {
        let value = value.clone();
        async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while Instant::now() < until {
                let (addr, group) = &targets[(c + i as usize) % targets.len()];
                let url = format!("http://{addr}/v1/kv/{group}/c{c}-{i}");
                let t = Instant::now();
                let r = client.put(&url).body(value.clone()).send().await;
                if matches!(r, Ok(ref r) if r.status().is_success()) {
                    lat.push(t.elapsed());
                }
                i += 1;
            }
            lat
        }
    });
    let mut latencies: Vec<Duration> = futures::future::join_all(loops)
        .await
        .into_iter()
        .flatten()
        .collect();
    latencies.sort_unstable();
    Run {
        ok: latencies.len() as u64,
        latencies,
        elapsed: start.elapsed(),
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn fsyncs(client: &reqwest::Client, node: &Node) -> f64 {
    let text = client
        .get(format!("http://{}/metrics", node.http))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("scrape body");
    text.lines()
        .find_map(|l| l.strip_prefix("raftnode_storage_fsync_duration_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

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
    let nodes = start_cluster(dir.path(), "1,2,3,4,5,6,7,8");
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
