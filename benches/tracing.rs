//! What tracing costs a writer: put throughput and latency on a 3-node cluster with tracing
//! off, on with every write sampled (exporting to a gRPC collector run by the bench), and on
//! with the collector down. Runs alternate between the three so that drift on a shared machine
//! spreads evenly; each figure is the median over rounds.
//!
//! `cargo bench --bench tracing`; `BENCH_SECS` (default 5) per run, `BENCH_ROUNDS` (default 3).

mod common;
#[path = "../tests/common/otlp.rs"]
#[allow(dead_code)]
mod otlp;

use common::*;
use std::time::Duration;

const CLIENTS: usize = 16;

struct Figures {
    puts_per_sec: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    exported: f64,
    dropped: f64,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("tracing bench: skipped (run it with `cargo bench --bench tracing`)");
        return;
    }
    // The collector runs on a runtime of its own, which must be dropped outside this one.
    let collector = otlp::Collector::grpc();
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(run(&collector));
}

async fn run(collector: &otlp::Collector) {
    let env_num = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let secs = env_num("BENCH_SECS", 5);
    let rounds = env_num("BENCH_ROUNDS", 3);
    let down = otlp::closed_endpoint();
    let configs: Vec<(&str, Vec<(String, String)>)> = vec![
        ("off", vec![]),
        (
            "on, sampled 1.0",
            vec![
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                    collector.endpoint.clone(),
                ),
                ("OTEL_TRACES_SAMPLER".into(), "always_on".into()),
            ],
        ),
        (
            "on, collector down",
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), down),
                ("OTEL_TRACES_SAMPLER".into(), "always_on".into()),
            ],
        ),
    ];
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    let mut figures: Vec<Figures> = configs
        .iter()
        .map(|_| Figures {
            puts_per_sec: vec![],
            p50: vec![],
            p99: vec![],
            exported: 0.0,
            dropped: 0.0,
        })
        .collect();
    for round in 0..rounds {
        for (i, (name, env)) in configs.iter().enumerate() {
            let dir = tempfile::tempdir().expect("temp dir");
            let nodes = start_cluster(dir.path(), "1", env);
            let leader = leader_of(&client, &nodes, 1).await;
            let target = vec![(nodes[leader].http.clone(), 1u64)];
            // Warm up connections and the leader's lease before measuring.
            load(&client, &target, CLIENTS, 1).await;
            let r = load(&client, &target, CLIENTS, secs).await;
            let f = &mut figures[i];
            f.puts_per_sec.push(r.ok as f64 / r.elapsed.as_secs_f64());
            f.p50.push(pct(&r.latencies, 0.50));
            f.p99.push(pct(&r.latencies, 0.99));
            for n in &nodes {
                f.exported += metric(&client, n, "raftnode_trace_spans_exported_total").await;
                f.dropped += metric(&client, n, "raftnode_trace_spans_dropped_total").await;
            }
            eprintln!(
                "round {round}: {name}: {:.0} puts/s",
                f.puts_per_sec[round as usize]
            );
        }
    }
    println!(
        "raftnode tracing bench: 3 nodes on loopback, {CLIENTS} clients on the leader, \
         256-byte values, {secs}s x {rounds} rounds, medians"
    );
    println!(
        "{:<22} {:>9} {:>8} {:>8} {:>10} {:>10} {:>8}",
        "tracing", "puts/s", "p50 ms", "p99 ms", "exported", "dropped", "vs off"
    );
    let base = median(&figures[0].puts_per_sec);
    for ((name, _), f) in configs.iter().zip(&figures) {
        let tput = median(&f.puts_per_sec);
        println!(
            "{:<22} {:>9.0} {:>8.2} {:>8.2} {:>10.0} {:>10.0} {:>+7.1}%",
            name,
            tput,
            median(&f.p50),
            median(&f.p99),
            f.exported,
            f.dropped,
            (tput / base - 1.0) * 100.0
        );
    }
    println!(
        "spans received by the bench's collector: {}",
        collector.spans().len()
    );
}
