//! Cluster benchmark: starts a local 3-node cluster of the optimised binary on loopback and
//! prints put throughput and latency at 1, 16 and 256 concurrent clients (256-byte values),
//! then fsyncs per acknowledged write while 8 groups take writes at once.
//!
//! `cargo bench --bench cluster`. `BENCH_SECS` sets the length of each run (default 5).
//! `BENCH_BASELINE=/path/to/another/raftnode` runs that build too, alternating with this one
//! round by round on a fresh cluster each time (`BENCH_ROUNDS`, default 3), and prints each
//! build's figures and their ratio with its spread: on a shared, noisy machine only figures
//! taken side by side compare. `BENCH_DIR` puts the nodes' data dirs elsewhere (a tmpfs such as
//! `/dev/shm` takes the disk's fsync out of the figures, to compare CPU costs alone).

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

const CLIENTS: [usize; 3] = [1, 16, 256];

/// One round of one build, per client count: puts/s, p50 and p99 (ms), and the CPU the three
/// nodes spent per acknowledged put (µs): a figure that scheduling noise moves far less than
/// throughput, and on a saturated machine the one throughput follows.
type Round = Vec<(f64, f64, f64, f64)>;

/// CPU seconds the nodes have used so far.
async fn cpu(client: &reqwest::Client, nodes: &[Node]) -> f64 {
    let mut total = 0.0;
    for n in nodes {
        total += metric(client, n, "process_cpu_seconds_total").await;
    }
    total
}

async fn round(binary: &Path, secs: u64, client: &reqwest::Client, fsync: bool) -> Round {
    let dir = match std::env::var_os("BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("temp dir");
    let nodes = start_cluster_of(binary, dir.path(), "1,2,3,4,5,6,7,8", &[]);
    let leader = leader_of(client, &nodes, 1).await;
    let target = vec![(nodes[leader].http.clone(), 1u64)];
    let mut out = Vec::new();
    for clients in CLIENTS {
        let before = cpu(client, &nodes).await;
        let r = load(client, &target, clients, secs).await;
        let used = cpu(client, &nodes).await - before;
        out.push((
            r.per_sec(),
            pct(&r.latencies, 0.50),
            pct(&r.latencies, 0.99),
            used * 1e6 / r.ok.max(1) as f64,
        ));
    }
    if fsync {
        let mut targets = Vec::new();
        for g in 1..=8u64 {
            let l = leader_of(client, &nodes, g).await;
            targets.push((nodes[l].http.clone(), g));
        }
        let mut before = Vec::new();
        for n in &nodes {
            before.push(fsyncs(client, n).await);
        }
        let r = load(client, &targets, 64, secs).await;
        println!(
            "8 groups, 64 clients: {:.0} puts/s acknowledged",
            r.per_sec()
        );
        for (i, n) in nodes.iter().enumerate() {
            let d = fsyncs(client, n).await - before[i];
            println!(
                "  node {}: {:.0} fsyncs, {:.3} fsyncs per acknowledged write",
                i + 1,
                d,
                d / r.ok.max(1) as f64
            );
        }
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn print_rounds(name: &str, rounds: &[Round]) {
    println!("{name}:");
    println!(
        "{:>8} {:>28} {:>10} {:>9} {:>9} {:>14}",
        "clients", "puts/s per round", "median", "p50 ms", "p99 ms", "cpu µs/put"
    );
    for (i, clients) in CLIENTS.iter().enumerate() {
        let puts: Vec<f64> = rounds.iter().map(|r| r[i].0).collect();
        let each: Vec<String> = puts.iter().map(|p| format!("{p:.0}")).collect();
        println!(
            "{:>8} {:>28} {:>10.0} {:>9.2} {:>9.2} {:>14.1}",
            clients,
            each.join(" "),
            median(puts.clone()),
            median(rounds.iter().map(|r| r[i].1).collect()),
            median(rounds.iter().map(|r| r[i].2).collect()),
            median(rounds.iter().map(|r| r[i].3).collect()),
        );
    }
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
    let baseline = std::env::var_os("BENCH_BASELINE").map(PathBuf::from);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if baseline.is_some() { 3 } else { 1 });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    println!("raftnode cluster bench: 3 nodes on loopback, 256-byte values, {secs}s per run");
    let this = this_binary();
    let Some(baseline) = baseline else {
        let mut all = Vec::new();
        for _ in 0..rounds {
            all.push(round(&this, secs, &client, all.is_empty()).await);
        }
        print_rounds("this build", &all);
        return;
    };
    println!(
        "alternating with {} over {rounds} rounds",
        baseline.display()
    );
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        // Alternate which build goes first, so that neither always runs on a warmer machine.
        if r % 2 == 0 {
            ours.push(round(&this, secs, &client, false).await);
            theirs.push(round(&baseline, secs, &client, false).await);
        } else {
            theirs.push(round(&baseline, secs, &client, false).await);
            ours.push(round(&this, secs, &client, false).await);
        }
    }
    print_rounds("this build", &ours);
    print_rounds("baseline", &theirs);
    println!("this build / baseline, puts/s (median of the rounds' ratios, and their range):");
    for (i, clients) in CLIENTS.iter().enumerate() {
        let ratios: Vec<f64> = ours
            .iter()
            .zip(&theirs)
            .map(|(o, t)| o[i].0 / t[i].0)
            .collect();
        let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().copied().fold(0.0, f64::max);
        println!(
            "{:>8} clients: {:.3} ({:.3}..{:.3}), medians {:.0} vs {:.0}",
            clients,
            median(ratios.clone()),
            lo,
            hi,
            median(ours.iter().map(|r| r[i].0).collect()),
            median(theirs.iter().map(|r| r[i].0).collect()),
        );
    }
    println!("this build / baseline, node CPU per acknowledged put (the same way):");
    for (i, clients) in CLIENTS.iter().enumerate() {
        let ratios: Vec<f64> = ours
            .iter()
            .zip(&theirs)
            .map(|(o, t)| o[i].3 / t[i].3)
            .collect();
        let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().copied().fold(0.0, f64::max);
        println!(
            "{:>8} clients: {:.3} ({:.3}..{:.3}), medians {:.1} vs {:.1} µs",
            clients,
            median(ratios.clone()),
            lo,
            hi,
            median(ours.iter().map(|r| r[i].3).collect()),
            median(theirs.iter().map(|r| r[i].3).collect()),
        );
    }
}
