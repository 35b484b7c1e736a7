//! Multi-raft benchmark: what a node costs as a function of the number of groups it hosts, on
//! a local 3-node cluster of the optimised binary (metrics in aggregate mode). It prints:
//! - per group count (`BENCH_GROUPS`, default `1,1000`): the time until every group has a
//!   leader, leaders per node, then with no client traffic for `BENCH_IDLE_SECS` (default 10)
//!   the CPU the three nodes use together (% of one core), and per node OS threads, tokio tasks,
//!   RSS (and RSS per group above the one-group figure), and a `/metrics` scrape's time (the
//!   median of five, the slowest node's) and size;
//! - with 64 groups and 256 clients: put throughput, p50 and p99 when 1, 8 and 64 groups take
//!   the writes (`BENCH_ACTIVE`), fsyncs per acknowledged write, the nodes' CPU, and their RSS
//!   before and after the loads;
//! - the time until every group led by a SIGKILLed node has a new leader (the node that leads
//!   the most groups of the largest count is killed), then, after it restarts, the time until
//!   every node leads within 10% of an even share, and the leaders per node;
//! - the median time to start a group on all three nodes (until it has a leader) and stop it.
//!
//! `cargo bench --bench groups`. `BENCH_BASELINE=/path/to/another/raftnode` runs that build
//! too, each scenario alternating between the two on fresh clusters; `BENCH_SECS` sets each
//! load's length (default 5); `BENCH_DIR` puts the data dirs elsewhere and `BENCH_KEEP=1` keeps them (with the nodes' logs); `BENCH_ONLY` runs only
//! the named sections (`idle,active,failover,cycle`, the default being all).

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use raftnode::harness::prom::Scrape;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn list(name: &str, default: &str) -> Vec<u64> {
    env_or(name, default)
        .split(',')
        .map(|s| s.trim().parse().expect("a list of numbers"))
        .collect()
}

fn temp_dir() -> tempfile::TempDir {
    let mut dir = match std::env::var_os("BENCH_DIR") {
        Some(d) => tempfile::Builder::new().tempdir_in(d),
        None => tempfile::Builder::new().tempdir(),
    }
    .expect("temp dir");
    if std::env::var_os("BENCH_KEEP").is_some() {
        dir.disable_cleanup(true);
        println!("(data and logs kept in {})", dir.path().display());
    }
    dir
}

fn group_list(n: u64) -> String {
    (1..=n).map(|g| g.to_string()).collect::<Vec<_>>().join(",")
}

fn aggregate() -> Vec<(String, String)> {
    vec![(
        "RAFTNODE_METRICS_GROUP_LABELS".to_string(),
        "false".to_string(),
    )]
}

async fn scrape(client: &reqwest::Client, node: &Node) -> Option<(Scrape, Duration, usize)> {
    let t = Instant::now();
    let text = get_text(client, &node.http, "/metrics").await?;
    Some((Scrape::parse(&text), t.elapsed(), text.len()))
}

/// Groups each node leads (openraft's view, summed; in aggregate mode `is_leader` is a count).
async fn leaders(client: &reqwest::Client, nodes: &[&Node]) -> Vec<u64> {
    let mut out = Vec::new();
    for n in nodes {
        let led = match scrape(client, n).await {
            Some((s, _, _)) => s.sum("raftnode_raft_is_leader", &[]) as u64,
            None => 0,
        };
        out.push(led);
    }
    out
}

/// Waits until the nodes together lead `groups` groups; the time it took, or `None` after
/// `limit`.
async fn until_all_led(
    client: &reqwest::Client,
    nodes: &[&Node],
    groups: u64,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if leaders(client, nodes).await.iter().sum::<u64>() >= groups {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn wait_ready(client: &reqwest::Client, nodes: &[Node], limit: Duration) {
    let start = Instant::now();
    for n in nodes {
        while start.elapsed() < limit {
            let r = client.get(format!("http://{}/readyz", n.http)).send().await;
            if matches!(r, Ok(ref r) if r.status().is_success()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

struct Idle {
    elect: Option<Duration>,
    leaders: Vec<u64>,
    cpu_pct: f64,
    threads: Vec<f64>,
    tasks: Vec<f64>,
    rss_mib: Vec<f64>,
    scrape_ms: f64,
    scrape_kb: f64,
}

async fn idle(binary: &Path, groups: u64, idle_secs: u64, client: &reqwest::Client) -> Idle {
    let dir = temp_dir();
    let start = Instant::now();
    let nodes = start_cluster_of(binary, dir.path(), &group_list(groups), &aggregate());
    let limit = Duration::from_secs(120);
    wait_ready(client, &nodes, limit).await;
    let refs: Vec<&Node> = nodes.iter().collect();
    let elect = until_all_led(client, &refs, groups, limit.saturating_sub(start.elapsed()))
        .await
        .map(|_| start.elapsed());
    // Let the balancer (where there is one) and the start-up settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let leaders = leaders(client, &refs).await;
    let cpu0 = cpu(&nodes);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let cpu_pct = (cpu(&nodes) - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    let (mut threads, mut tasks, mut rss_mib) = (Vec::new(), Vec::new(), Vec::new());
    let (mut scrape_ms, mut scrape_kb) = (0.0f64, 0.0f64);
    for n in &nodes {
        // The median of five scrapes: one alone is at the mercy of a busy moment.
        let mut took_ms = Vec::new();
        for _ in 0..5 {
            if let Some((s, took, bytes)) = scrape(client, n).await {
                if took_ms.is_empty() {
                    threads.push(s.sum("process_threads", &[]));
                    tasks.push(s.sum("raftnode_runtime_alive_tasks", &[]));
                    rss_mib.push(s.sum("process_resident_memory_bytes", &[]) / (1 << 20) as f64);
                }
                took_ms.push(took.as_secs_f64() * 1000.0);
                scrape_kb = scrape_kb.max(bytes as f64 / 1024.0);
            }
        }
        took_ms.sort_by(f64::total_cmp);
        if let Some(m) = took_ms.get(took_ms.len() / 2) {
            scrape_ms = scrape_ms.max(*m);
        }
    }
    Idle {
        elect,
        leaders,
        cpu_pct,
        threads,
        tasks,
        rss_mib,
        scrape_ms,
        scrape_kb,
    }
}

/// CPU seconds the nodes used so far, from `/proc/<pid>/stat` (utime + stime, in clock
/// ticks): the exported `process_cpu_seconds_total` counts whole seconds, too coarse for a
/// node that idles at a few percent.
fn cpu(nodes: &[Node]) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    nodes
        .iter()
        .filter_map(|n| std::fs::read_to_string(format!("/proc/{}/stat", n.child.id())).ok())
        .map(|stat| {
            // The fields after the command name, which is in parentheses and may hold spaces.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<f64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0.0))
                .collect();
            // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
            (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / hz
        })
        .sum()
}

fn fmt_list(v: &[f64], digits: usize) -> String {
    v.iter()
        .map(|x| format!("{x:.digits$}"))
        .collect::<Vec<_>>()
        .join("/")
}

struct Active {
    rows: Vec<(u64, f64, f64, f64, f64)>,
    /// RSS per node (MiB) before the first load and after the last: what writing costs a
    /// group in memory that it keeps.
    rss_before: Vec<f64>,
    rss_after: Vec<f64>,
    /// Node CPU (% of one core, the three together) over each load.
    cpu: Vec<f64>,
}

async fn rss_mib(client: &reqwest::Client, nodes: &[Node]) -> Vec<f64> {
    let mut out = Vec::new();
    for n in nodes {
        if let Some((s, _, _)) = scrape(client, n).await {
            out.push(s.sum("process_resident_memory_bytes", &[]) / (1 << 20) as f64);
        }
    }
    out
}

/// 64 groups; `clients` closed-loop clients write to the first `k` groups through their leaders.
async fn active(binary: &Path, ks: &[u64], secs: u64, client: &reqwest::Client) -> Active {
    let dir = temp_dir();
    let nodes = start_cluster_of(binary, dir.path(), &group_list(64), &aggregate());
    wait_ready(client, &nodes, Duration::from_secs(60)).await;
    let refs: Vec<&Node> = nodes.iter().collect();
    until_all_led(client, &refs, 64, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_before = rss_mib(client, &nodes).await;
    let mut cpu_pct = Vec::new();
    let mut rows = Vec::new();
    for &k in ks {
        let mut targets = Vec::new();
        for g in 1..=k {
            let l = leader_of(client, &nodes, g).await;
            targets.push((nodes[l].http.clone(), g));
        }
        let mut before = 0.0;
        for n in &nodes {
            before += fsyncs(client, n).await;
        }
        let (cpu0, t0) = (cpu(&nodes), Instant::now());
        let r = load(client, &targets, 256, secs).await;
        cpu_pct.push((cpu(&nodes) - cpu0) / t0.elapsed().as_secs_f64() * 100.0);
        let mut after = 0.0;
        for n in &nodes {
            after += fsyncs(client, n).await;
        }
        rows.push((
            k,
            r.per_sec(),
            pct(&r.latencies, 0.50),
            pct(&r.latencies, 0.99),
            (after - before) / r.ok.max(1) as f64,
        ));
    }
    Active {
        rows,
        rss_before,
        rss_after: rss_mib(client, &nodes).await,
        cpu: cpu_pct,
    }
}

/// SIGKILLs the node that leads the most of `groups` groups, measures until the two others
/// lead them all, restarts it, and measures until leadership is even again.
async fn failover(binary: &Path, groups: u64, client: &reqwest::Client) -> Failover {
    let dir = temp_dir();
    let mut nodes = start_cluster_of(binary, dir.path(), &group_list(groups), &aggregate());
    let limit = Duration::from_secs(120);
    wait_ready(client, &nodes, limit).await;
    {
        let refs: Vec<&Node> = nodes.iter().collect();
        until_all_led(client, &refs, groups, limit).await;
    }
    // Idle for a while, as a quiet cluster would be.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let led = {
        let refs: Vec<&Node> = nodes.iter().collect();
        leaders(client, &refs).await
    };
    let (victim, most) = led
        .iter()
        .enumerate()
        .max_by_key(|(_, l)| **l)
        .map(|(i, l)| (i, *l))
        .unwrap_or((0, 0));
    let _ = nodes[victim].child.kill();
    let _ = nodes[victim].child.wait();
    let t = Instant::now();
    let took = {
        let refs: Vec<&Node> = nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != victim)
            .map(|(_, n)| n)
            .collect();
        until_all_led(client, &refs, groups, limit)
            .await
            .map(|_| t.elapsed())
    };
    // The victim comes back: the balancer hands it its share again.
    nodes[victim].restart();
    let t = Instant::now();
    let refs: Vec<&Node> = nodes.iter().collect();
    let even = groups as f64 / refs.len() as f64;
    let mut after = leaders(client, &refs).await;
    let mut balanced = None;
    while t.elapsed() < limit {
        after = leaders(client, &refs).await;
        let within = after.iter().all(|l| (*l as f64 - even).abs() <= even * 0.1);
        if within && after.iter().sum::<u64>() >= groups {
            balanced = Some(t.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Failover {
        led: most,
        took,
        balanced,
        after,
    }
}

/// What the failover scenario measured.
struct Failover {
    /// Groups the killed node led.
    led: u64,
    /// Until every group had a leader among the survivors.
    took: Option<Duration>,
    /// From the victim's restart until every node led within 10% of an even share.
    balanced: Option<Duration>,
    /// Leaders per node at that time (or when the limit passed).
    after: Vec<u64>,
}

/// The median time to start a fresh group on all three nodes until it has a leader, and to
/// stop it again on all three.
async fn group_cycle(binary: &Path, client: &reqwest::Client) -> (f64, f64) {
    let dir = temp_dir();
    let nodes = start_cluster_of(binary, dir.path(), "1", &aggregate());
    wait_ready(client, &nodes, Duration::from_secs(60)).await;
    let (mut starts, mut stops) = (Vec::new(), Vec::new());
    for g in 100..120u64 {
        let t = Instant::now();
        let puts = nodes.iter().rev().map(|n| {
            client
                .put(format!("http://{}/v1/groups/{g}", n.http))
                .send()
        });
        futures::future::join_all(puts).await;
        leader_of(client, &nodes, g).await;
        starts.push(t.elapsed());
        let t = Instant::now();
        let dels = nodes.iter().map(|n| {
            client
                .delete(format!("http://{}/v1/groups/{g}", n.http))
                .send()
        });
        futures::future::join_all(dels).await;
        stops.push(t.elapsed());
    }
    starts.sort_unstable();
    stops.sort_unstable();
    (pct(&starts, 0.5), pct(&stops, 0.5))
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`: the cluster runs are for
    // `cargo bench` only.
    if !std::env::args().any(|a| a == "--bench") {
        println!("groups bench: skipped (run it with `cargo bench --bench groups`)");
        return;
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()
        .expect("http client");
    let mut builds: Vec<(&str, PathBuf)> = vec![("this", this_binary())];
    if let Some(b) = std::env::var_os("BENCH_BASELINE") {
        builds.push(("baseline", PathBuf::from(b)));
    }
    let counts = list("BENCH_GROUPS", "1,1000");
    let ks = list("BENCH_ACTIVE", "1,8,64");
    let idle_secs: u64 = env_or("BENCH_IDLE_SECS", "10").parse().expect("seconds");
    let secs: u64 = env_or("BENCH_SECS", "5").parse().expect("seconds");

    let only = env_or("BENCH_ONLY", "idle,active,failover,cycle");
    let run = |section: &str| only.split(',').any(|s| s.trim() == section);

    if run("idle") {
        println!("== idle cost per group count ({idle_secs} s idle, 3 nodes, aggregate metrics)");
        println!("build     groups  all-led(s)  leaders/node    cpu(%core,3 nodes)  threads/node  tasks/node        rss MiB/node      KiB/group  scrape ms/KiB");
        let mut one_rss = std::collections::HashMap::new();
        for &n in &counts {
            for (name, bin) in &builds {
                let r = idle(bin, n, idle_secs, &client).await;
                let rss = r.rss_mib.iter().sum::<f64>() / r.rss_mib.len().max(1) as f64;
                if n == 1 {
                    one_rss.insert(*name, rss);
                }
                let per_group = one_rss
                    .get(name)
                    .filter(|_| n > 1)
                    .map(|base| format!("{:.1}", (rss - base) * 1024.0 / n as f64))
                    .unwrap_or_else(|| "-".into());
                println!(
                "{name:9} {n:6}  {:>10}  {:14}  {:18.1}  {:12}  {:16}  {:16}  {:>9}  {:.1}/{:.0}",
                r.elect
                    .map(|d| format!("{:.1}", d.as_secs_f64()))
                    .unwrap_or_else(|| "never".into()),
                r.leaders
                    .iter()
                    .map(|l| l.to_string())
                    .collect::<Vec<_>>()
                    .join("/"),
                r.cpu_pct,
                fmt_list(&r.threads, 0),
                fmt_list(&r.tasks, 0),
                fmt_list(&r.rss_mib, 0),
                per_group,
                r.scrape_ms,
                r.scrape_kb,
            );
            }
        }
    }

    if run("active") {
        println!("\n== 64 groups, 256 clients, writes to the first k groups ({secs} s each)");
        println!(
            "build      k   puts/s     p50 ms   p99 ms   fsyncs/write  node cpu (%core, 3 nodes)"
        );
        for (name, bin) in &builds {
            let a = active(bin, &ks, secs, &client).await;
            for ((k, rate, p50, p99, f), cpu) in a.rows.into_iter().zip(a.cpu) {
                println!(
                    "{name:9} {k:3}  {rate:8.0}  {p50:8.1}  {p99:7.1}   {f:.3}         {cpu:.0}"
                );
            }
            println!(
                "{name:9} RSS MiB/node before the loads {}, after {}",
                fmt_list(&a.rss_before, 0),
                fmt_list(&a.rss_after, 0)
            );
        }
    }

    let largest = counts.iter().copied().max().unwrap_or(1);
    if run("failover") {
        println!("\n== SIGKILL of the node leading the most of {largest} groups (after 10 s idle)");
        for (name, bin) in &builds {
            let f = failover(bin, largest, &client).await;
            let secs = |d: Option<Duration>| {
                d.map(|d| format!("{:.1} s", d.as_secs_f64()))
                    .unwrap_or_else(|| "never (120 s)".into())
            };
            println!(
                "{name:9} it led {}; all led again after {}; restarted, leaders within 10% of even after {} ({})",
                f.led,
                secs(f.took),
                secs(f.balanced),
                f.after
                    .iter()
                    .map(|l| l.to_string())
                    .collect::<Vec<_>>()
                    .join("/"),
            );
        }
    }

    if run("cycle") {
        println!("\n== group start (until led) and stop on a live 3-node cluster, median of 20");
        for (name, bin) in &builds {
            let (start, stop) = group_cycle(bin, &client).await;
            println!("{name:9} start {start:.0} ms, stop {stop:.0} ms");
        }
    }
}
