//! Security benchmark: what mutual TLS between the nodes, TLS for clients and bearer tokens
//! cost. A local 3-node cluster of the optimised binary takes puts of 256-byte values from 16
//! and 256 concurrent clients, in three configurations, round by round on a fresh cluster
//! each, alternating their order: `plain` (no TLS, no tokens), `mtls+tokens` (peers on mutual
//! TLS, clients on plain HTTP with tokens) and `full` (the same, plus HTTPS for clients). It
//! prints each one's puts/s and the CPU per put of the nodes and of the load generator (which
//! shares the cores), and their ratios to `plain` with the spread.
//!
//! `cargo bench --bench security` (needs openssl, for scripts/dev-certs). `BENCH_SECS` (default
//! 5) and `BENCH_ROUNDS` (default 3) as in the cluster bench; `BENCH_DIR` puts the data dirs
//! elsewhere; `BENCH_ONLY=full` (or `plain`, `mtls+tokens`) runs one configuration alone, to
//! profile it.

mod common;
use common::*;
use raftnode::harness::process::ServeArgs;
use std::path::Path;
use std::time::Duration;

const CLIENTS: [usize; 2] = [16, 256];

#[derive(Clone, Copy, PartialEq)]
enum Setup {
    Plain,
    MtlsTokens,
    Full,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Plain => "plain",
            Setup::MtlsTokens => "mtls+tokens",
            Setup::Full => "full",
        }
    }
}

/// puts/s, node CPU µs per put and load-generator CPU µs per put, per client count.
type Round = Vec<(f64, f64, f64)>;

fn flags(setup: Setup, certs: &Path, id: usize) -> Vec<String> {
    let f = |n: &str| certs.join(n).display().to_string();
    let mut v = Vec::new();
    if setup != Setup::Plain {
        v.extend(ServeArgs::peer_tls_flags(certs, id as u64));
        v.extend(["--auth-token-file".into(), f("tokens")]);
    }
    if setup == Setup::Full {
        v.extend([
            "--client-cert-file".into(),
            f("server.pem"),
            "--client-key-file".into(),
            f("server-key.pem"),
        ]);
    }
    v
}

fn client(setup: Setup, certs: &Path) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .timeout(Duration::from_secs(10));
    if setup != Setup::Plain {
        let token = std::fs::read_to_string(certs.join("write.token")).expect("write.token");
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", token.trim()).parse().expect("header"),
        );
        b = b.default_headers(h);
    }
    if setup == Setup::Full {
        let ca = std::fs::read(certs.join("ca.pem")).expect("ca.pem");
        b = b
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA"));
    }
    b.build().expect("http client")
}

async fn round(setup: Setup, certs: &Path, secs: u64) -> Round {
    let dir = match std::env::var_os("BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("temp dir");
    let binary = this_binary();
    // Each node gets its own certificate: start them one by one with their flags.
    let mut nodes = start_cluster_per_node(&binary, dir.path(), "1", |id| flags(setup, certs, id));
    if setup == Setup::Full {
        for n in &mut nodes {
            let port = n.http.rsplit(':').next().unwrap_or_default().to_string();
            n.http = format!("https://localhost:{port}");
        }
    }
    let client = client(setup, certs);
    let leader = leader_of(&client, &nodes, 1).await;
    let target = vec![(nodes[leader].http.clone(), 1u64)];
    let mut out = Vec::new();
    for clients in CLIENTS {
        let (before, own_before) = (cpu(&client, &nodes).await, own_cpu());
        let r = load(&client, &target, clients, secs).await;
        let own = own_cpu() - own_before;
        let used = cpu(&client, &nodes).await - before;
        let ok = r.ok.max(1) as f64;
        out.push((r.per_sec(), used * 1e6 / ok, own * 1e6 / ok));
    }
    out
}

async fn cpu(client: &reqwest::Client, nodes: &[Node]) -> f64 {
    let mut total = 0.0;
    for n in nodes {
        total += metric(client, n, "process_cpu_seconds_total").await;
    }
    total
}

/// CPU seconds this process (the load generator, whose TLS client shares the machine's cores
/// with the nodes) has used.
fn own_cpu() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("security bench: skipped (run it with `cargo bench --bench security`)");
        return;
    }
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let certs = tempfile::tempdir().expect("temp dir");
    let made = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/dev-certs"))
        .arg(certs.path())
        .arg("3")
        .output()
        .expect("run scripts/dev-certs");
    assert!(made.status.success(), "dev-certs: {made:?}");
    println!(
        "raftnode security bench: 3 nodes on loopback, 256-byte values, {secs}s per run, {rounds} rounds"
    );
    let only = std::env::var("BENCH_ONLY").ok();
    if let Some(name) = &only {
        let setup = [Setup::Plain, Setup::MtlsTokens, Setup::Full]
            .into_iter()
            .find(|s| s.name() == name)
            .unwrap_or_else(|| panic!("BENCH_ONLY={name}: plain, mtls+tokens or full"));
        for _ in 0..rounds {
            let r = round(setup, certs.path(), secs).await;
            for (c, clients) in CLIENTS.iter().enumerate() {
                println!(
                    "{} {clients:>4} clients: {:.0} puts/s, node cpu {:.1} µs/put, load generator cpu {:.1} µs/put",
                    setup.name(),
                    r[c].0,
                    r[c].1,
                    r[c].2
                );
            }
        }
        return;
    }
    let setups = [Setup::Plain, Setup::MtlsTokens, Setup::Full];
    let mut results: Vec<Vec<Round>> = vec![Vec::new(); setups.len()];
    for r in 0..rounds {
        // Rotate the order, so that no configuration always runs on a warmer machine.
        for k in 0..setups.len() {
            let i = (k + r) % setups.len();
            results[i].push(round(setups[i], certs.path(), secs).await);
        }
    }
    for (i, setup) in setups.iter().enumerate() {
        println!("{}:", setup.name());
        for (c, clients) in CLIENTS.iter().enumerate() {
            let puts: Vec<f64> = results[i].iter().map(|r| r[c].0).collect();
            let each: Vec<String> = puts.iter().map(|p| format!("{p:.0}")).collect();
            println!(
                "{clients:>6} clients: puts/s {} (median {:.0}), node cpu µs/put median {:.1}, load generator cpu µs/put median {:.1}",
                each.join(" "),
                median(puts.clone()),
                median(results[i].iter().map(|r| r[c].1).collect()),
                median(results[i].iter().map(|r| r[c].2).collect()),
            );
        }
    }
    println!("ratio to plain, per round (median, range):");
    for (i, setup) in setups.iter().enumerate().skip(1) {
        for (c, clients) in CLIENTS.iter().enumerate() {
            for (what, pick) in [("puts/s", 0usize), ("node cpu/put", 1), ("gen cpu/put", 2)] {
                let field = |r: &(f64, f64, f64)| match pick {
                    0 => r.0,
                    1 => r.1,
                    _ => r.2,
                };
                let ratios: Vec<f64> = results[i]
                    .iter()
                    .zip(&results[0])
                    .map(|(s, p)| field(&s[c]) / field(&p[c]))
                    .collect();
                let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = ratios.iter().copied().fold(0.0, f64::max);
                println!(
                    "{:>12} {clients:>4} clients {what:>12}: {:.3} ({lo:.3}..{hi:.3})",
                    setup.name(),
                    median(ratios.clone())
                );
            }
        }
    }
}
