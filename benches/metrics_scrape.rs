//! `/metrics` at scale: one node of the optimised binary hosting 1,000 groups; prints the time
//! and size of a scrape, with per-group labels and with aggregates.
//!
//! `cargo bench --bench metrics_scrape`; `BENCH_GROUPS` changes the group count.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use raftnode::harness::process::{self, ServeArgs};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    process::free_port().expect("no free loopback port")
}

fn run(groups: u64, labels: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (grpc, http) = (free_port(), free_port());
    let serve = ServeArgs {
        id: 1,
        grpc_port: grpc,
        http_port: http,
        data_dir: dir.path().join("data"),
        peers: ServeArgs::peers_of(&[grpc]),
        groups: (1..=groups).collect(),
        extra: vec!["--metrics-group-labels".into(), labels.to_string()],
    };
    let started = Instant::now();
    let _node = Proc(
        process::spawn(
            Path::new(env!("CARGO_BIN_EXE_raftnode")),
            &serve.to_args(),
            &[],
            dir.path(),
            Some("warn"),
        )
        .expect("cannot start raftnode"),
    );
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client");
    let url = format!("http://127.0.0.1:{http}/metrics");
    let leaders = format!("raftnode_raft_is_leader {groups}");
    let until = Instant::now() + Duration::from_secs(300);
    loop {
        let text = client
            .get(&url)
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default();
        let all_led = if labels {
            text.lines()
                .filter(|l| l.starts_with("raftnode_raft_is_leader{") && l.ends_with(" 1"))
                .count() as u64
                == groups
        } else {
            text.lines().any(|l| l == leaders)
        };
        if all_led {
            break;
        }
        assert!(
            Instant::now() < until,
            "{groups} groups did not all elect within 300s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let ready = started.elapsed();
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..20 {
        let t = Instant::now();
        let text = client
            .get(&url)
            .send()
            .and_then(|r| r.text())
            .expect("scrape");
        times.push(t.elapsed());
        size = text.len();
    }
    times.sort_unstable();
    println!(
        "{groups} groups, group labels {labels}: ready in {:.1}s; scrape p50 {:.1} ms, max {:.1} ms, {} KiB",
        ready.as_secs_f64(),
        times[times.len() / 2].as_secs_f64() * 1000.0,
        times[times.len() - 1].as_secs_f64() * 1000.0,
        size / 1024
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "metrics_scrape bench: skipped (run it with `cargo bench --bench metrics_scrape`)"
        );
        return;
    }
    let groups = std::env::var("BENCH_GROUPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    run(groups, true);
    run(groups, false);
}
