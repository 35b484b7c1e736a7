//! What the cluster benchmarks share: a 3-node cluster of the optimised binary on loopback
//! (started through the library's harness, as the tests and the soak start theirs), a
//! closed-loop put load, percentiles and a /metrics reader.
#![allow(dead_code)] // each bench uses a different subset

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use raftnode::harness::process::{self, ServeArgs};
use raftnode::harness::prom::Scrape;

/// One node process; killed when dropped.
pub struct Node {
    pub child: Child,
    pub http: String,
    /// How it was started, to start it again on the same data dir.
    pub spawn: (PathBuf, Vec<String>, Vec<(String, String)>, PathBuf),
}

impl Node {
    /// Starts the node again (after a kill), with the same binary, arguments and data dir.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (binary, args, env, log_dir) = &self.spawn;
        self.child =
            process::spawn(binary, args, env, log_dir, None).expect("cannot restart raftnode");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    process::free_port().expect("no free loopback port")
}

/// The binary this bench was built with, or `BENCH_BINARY` when set (to profile another build
/// under the same load).
pub fn this_binary() -> PathBuf {
    std::env::var_os("BENCH_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_raftnode")))
}

/// Starts nodes 1..=3 of a cluster hosting `groups`, each with `env` added to its environment,
/// with the election timeout and heartbeat of `BENCH_ELECTION_MS` and `BENCH_HEARTBEAT_MS`
/// (default 1000 and 100 ms, the node's own defaults).
pub fn start_cluster(dir: &Path, groups: &str, env: &[(String, String)]) -> Vec<Node> {
    start_cluster_of(&this_binary(), dir, groups, env)
}

/// Like [`start_cluster`], with another build of the binary (to compare two side by side).
pub fn start_cluster_of(
    binary: &Path,
    dir: &Path,
    groups: &str,
    env: &[(String, String)],
) -> Vec<Node> {
    start_cluster_with(binary, dir, groups, env, &[])
}

/// Like [`start_cluster_of`], with `extra` flags for every node.
pub fn start_cluster_with(
    binary: &Path,
    dir: &Path,
    groups: &str,
    env: &[(String, String)],
    extra: &[String],
) -> Vec<Node> {
    start_cluster_custom(binary, dir, groups, env, |_| extra.to_vec())
}

/// Like [`start_cluster_of`], with the flags `extra(id)` for node `id` (its own certificate,
/// say).
pub fn start_cluster_per_node(
    binary: &Path,
    dir: &Path,
    groups: &str,
    extra: impl Fn(usize) -> Vec<String>,
) -> Vec<Node> {
    start_cluster_custom(binary, dir, groups, &[], extra)
}

fn start_cluster_custom(
    binary: &Path,
    dir: &Path,
    groups: &str,
    env: &[(String, String)],
    extra: impl Fn(usize) -> Vec<String>,
) -> Vec<Node> {
    let grpc: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peers = ServeArgs::peers_of(&grpc);
    let groups: Vec<u64> = groups
        .split(',')
        .map(|g| g.trim().parse().expect("group id"))
        .collect();
    (0..3)
        .map(|i| {
            let id = i as u64 + 1;
            let serve = ServeArgs {
                id,
                grpc_port: grpc[i],
                http_port: free_port(),
                data_dir: dir.join(format!("n{id}")),
                peers: peers.clone(),
                groups: groups.clone(),
                extra: vec![
                    "--election-timeout-ms".into(),
                    std::env::var("BENCH_ELECTION_MS").unwrap_or_else(|_| "1000".into()),
                    "--heartbeat-ms".into(),
                    std::env::var("BENCH_HEARTBEAT_MS").unwrap_or_else(|_| "100".into()),
                ]
                .into_iter()
                .chain(extra(i + 1))
                .collect(),
            };
            let log_dir = dir.join(format!("node{id}"));
            let args = serve.to_args();
            let child =
                process::spawn(binary, &args, env, &log_dir, None).expect("cannot start raftnode");
            Node {
                child,
                http: serve.http_addr(),
                spawn: (binary.to_path_buf(), args, env.to_vec(), log_dir),
            }
        })
        .collect()
}

/// The base URL of a node's HTTP address: `host:port` is plain HTTP; a node that serves HTTPS
/// is given as its full `https://...` URL.
pub fn base(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

pub async fn leader_of(client: &reqwest::Client, nodes: &[Node], group: u64) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for (i, n) in nodes.iter().enumerate() {
            let url = format!("{}/v1/status", base(&n.http));
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

pub struct Run {
    pub ok: u64,
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
}

impl Run {
    pub fn per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// `clients` loops writing to the given (address, group) targets round-robin until `secs` pass.
pub async fn load(
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
                let url = format!("{}/v1/kv/{group}/c{c}-{i}", base(addr));
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

pub fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

pub async fn fsyncs(client: &reqwest::Client, node: &Node) -> f64 {
    metric(
        client,
        node,
        "raftnode_storage_fsync_duration_seconds_count",
    )
    .await
}

/// Sum of every sample of `name` (all label sets) in one scrape of `node`.
pub async fn metric(client: &reqwest::Client, node: &Node, name: &str) -> f64 {
    let text = client
        .get(format!("{}/metrics", base(&node.http)))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("scrape body");
    Scrape::parse(&text).sum(name, &[])
}

/// The body of `GET http://<http><path>`, if the node answers.
pub async fn get_text(client: &reqwest::Client, http: &str, path: &str) -> Option<String> {
    client
        .get(format!("{}{path}", base(http)))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}
