//! Storage benchmark: loads a data set larger than the node's caches into a local 3-node
//! cluster of the optimised binary, then prints what an operator sizes a node by: put
//! throughput while loading, the resident memory of each node (peak and at the end), the time
//! a node killed with SIGKILL takes to serve again, and the time (and MB/s) for a replica whose
//! data was erased to be added back and catch up by snapshot, with each node's peak resident
//! memory through those two.
//!
//! `cargo bench --bench storage`. `BENCH_GIB` sets the data loaded per value size (default 4),
//! `BENCH_VALUES` the value sizes in bytes (default `1024,262144`), `BENCH_GROUPS` the number
//! of groups the data is spread over (default 8), `BENCH_CLIENTS` the concurrent writers
//! (default 64), `BENCH_DIR` where the data dirs go.

mod common;
use common::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Samples each node's resident memory into `peaks`, for ever.
async fn sample_rss(client: reqwest::Client, https: Vec<String>, peaks: Arc<Vec<AtomicU64>>) {
    loop {
        for (i, http) in https.iter().enumerate() {
            if let Some(rss) = rss_of(&client, http).await {
                peaks[i].fetch_max(rss as u64, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn rss_of(client: &reqwest::Client, http: &str) -> Option<f64> {
    let text = get_text(client, http, "/metrics").await?;
    Some(raftnode::harness::prom::Scrape::parse(&text).sum("process_resident_memory_bytes", &[]))
}

async fn ready(client: &reqwest::Client, http: &str) -> bool {
    let url = format!("http://{http}/readyz");
    matches!(client.get(&url).send().await, Ok(r) if r.status().is_success())
}

/// (applied index, commit index) of `group` on the node behind `http`.
async fn indexes(client: &reqwest::Client, http: &str, group: u64) -> Option<(u64, u64)> {
    let v: serde_json::Value =
        serde_json::from_str(&get_text(client, http, "/v1/status").await?).ok()?;
    let g = v["groups"].as_array()?.iter().find(|g| g["id"] == group)?;
    Some((g["applied_index"].as_u64()?, g["commit_index"].as_u64()?))
}

/// Sends a group admin request and insists that it succeeds.
async fn group_op(request: reqwest::RequestBuilder) {
    let r = request.send().await.expect("group admin request");
    assert!(r.status().is_success(), "{}: {}", r.url(), r.status());
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// Writes `total` bytes of `size`-byte values round-robin over `groups`, with `clients`
/// writers, through each group's leader (a follower forwards, should leadership move).
async fn load(
    client: &reqwest::Client,
    targets: &[(String, u64)],
    size: usize,
    total: u64,
    clients: usize,
) -> (u64, Duration) {
    let count = total / size as u64;
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let value = vec![b'v'; size];
    let started = Instant::now();
    let writers = (0..clients).map(|_| {
        let (next, done, value) = (next.clone(), done.clone(), value.clone());
        async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let (http, group) = &targets[i as usize % targets.len()];
                let url = format!("http://{http}/v1/kv/{group}/k{i:012}");
                for _ in 0..20 {
                    match client.put(&url).body(value.clone()).send().await {
                        Ok(r) if r.status().is_success() => {
                            done.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }
        }
    });
    let progress = async {
        loop {
            tokio::time::sleep(Duration::from_secs(30)).await;
            let d = done.load(Ordering::Relaxed);
            eprintln!(
                "  ... {d} of {count} puts, {:.0} puts/s",
                d as f64 / started.elapsed().as_secs_f64()
            );
        }
    };
    tokio::select! {
        _ = futures::future::join_all(writers) => {}
        _ = progress => {}
    }
    (done.load(Ordering::Relaxed), started.elapsed())
}

async fn run(size: usize, gib: f64, groups: u64, clients: usize, client: &reqwest::Client) {
    let dir = match std::env::var_os("BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("temp dir");
    let list: Vec<String> = (1..=groups).map(|g| g.to_string()).collect();
    // Snapshots every 1,000 entries, so that a group of large values has compacted its log
    // too, and the erased replica below must catch up by snapshot whatever the value size.
    let extra = vec![
        "--max-value-bytes".to_string(),
        (1u64 << 20).max(size as u64 * 2).to_string(),
        "--snapshot-logs".to_string(),
        "1000".to_string(),
    ];
    let mut nodes = start_cluster_with(&this_binary(), dir.path(), &list.join(","), &[], &extra);
    let https: Vec<String> = nodes.iter().map(|n| n.http.clone()).collect();
    let peaks = Arc::new((0..3).map(|_| AtomicU64::new(0)).collect::<Vec<_>>());
    let sampler = sample_rss(client.clone(), https.clone(), peaks.clone());
    tokio::select! {
        _ = sampler => {}
        _ = measure(&mut nodes, &https, &peaks, size, gib, groups, clients, client) => {}
    }
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    nodes: &mut [Node],
    https: &[String],
    peaks: &[AtomicU64],
    size: usize,
    gib: f64,
    groups: u64,
    clients: usize,
    client: &reqwest::Client,
) {
    let mut targets = Vec::new();
    for g in 1..=groups {
        let l = leader_of(client, nodes, g).await;
        targets.push((nodes[l].http.clone(), g));
    }

    let total = (gib * (1u64 << 30) as f64) as u64;
    println!(
        "\n== {size}-byte values: {:.2} GiB into {groups} groups, {clients} writers",
        gib
    );
    let (ok, took) = load(client, &targets, size, total, clients).await;
    let bytes = ok * size as u64;
    println!(
        "load:     {ok} puts in {:.1} s: {:.0} puts/s, {:.1} MiB/s",
        took.as_secs_f64(),
        ok as f64 / took.as_secs_f64(),
        mib(bytes) / took.as_secs_f64()
    );
    let mut loaded_rss = Vec::new();
    for http in https {
        loaded_rss.push(rss_of(client, http).await.unwrap_or(0.0));
    }
    for (i, p) in peaks.iter().enumerate() {
        println!(
            "rss:      node {} peak {:.0} MiB while loading, {:.0} MiB loaded",
            i + 1,
            mib(p.load(Ordering::Relaxed)),
            loaded_rss[i] / (1u64 << 20) as f64
        );
        // From here on the peaks are those of the restart and the catch-up.
        p.store(0, Ordering::Relaxed);
    }

    // A node killed and started again on its data: time until it serves.
    let victim = 2;
    let killed = Instant::now();
    nodes[victim].restart();
    while !ready(client, &nodes[victim].http).await {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if killed.elapsed() > Duration::from_secs(600) {
            panic!(
                "node {} did not serve within 600 s of a restart",
                victim + 1
            );
        }
    }
    println!(
        "restart:  node {} serves {:.2} s after SIGKILL, with {:.2} GiB stored",
        victim + 1,
        killed.elapsed().as_secs_f64(),
        gib
    );

    // A replica erased and added back: it catches up by snapshot.
    let g = 1;
    let leader = leader_of(client, nodes, g).await;
    let erased = (leader + 1) % 3;
    let http = nodes[erased].http.clone();
    group_op(client.delete(format!("http://{http}/v1/groups/{g}?purge=true"))).await;
    let target = indexes(client, &nodes[leader].http, g)
        .await
        .map(|(_, c)| c)
        .unwrap_or(0);
    let started = Instant::now();
    group_op(client.put(format!("http://{http}/v1/groups/{g}?rejoin=true"))).await;
    loop {
        if let Some((applied, _)) = indexes(client, &http, g).await {
            if applied >= target {
                break;
            }
        }
        if started.elapsed() > Duration::from_secs(1200) {
            panic!("the erased replica did not catch up within 1200 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed().as_secs_f64();
    let group_bytes = bytes / groups;
    println!(
        "catch-up: node {} erased in group {g} ({:.0} MiB) caught up in {took:.1} s: {:.1} MB/s",
        erased + 1,
        mib(group_bytes),
        group_bytes as f64 / 1e6 / took
    );
    let mut end = Vec::new();
    for http in https {
        end.push(format!(
            "{:.0}",
            rss_of(client, http).await.unwrap_or(0.0) / (1u64 << 20) as f64
        ));
    }
    let after: Vec<String> = peaks
        .iter()
        .map(|p| format!("{:.0}", mib(p.load(Ordering::Relaxed))))
        .collect();
    println!(
        "rss:      peak {} MiB through the restart and the catch-up, {} MiB at the end",
        after.join(" / "),
        end.join(" / ")
    );
}

fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`: loading gigabytes is
    // for `cargo bench` only.
    if !std::env::args().any(|a| a == "--bench") {
        println!("storage bench: skipped (run it with `cargo bench --bench storage`)");
        return;
    }
    let gib: f64 = env("BENCH_GIB", 4.0);
    let groups: u64 = env("BENCH_GROUPS", 8);
    let clients: usize = env("BENCH_CLIENTS", 64);
    let sizes: Vec<usize> = std::env::var("BENCH_VALUES")
        .unwrap_or_else(|_| "1024,262144".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(clients)
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        for size in sizes {
            run(size, gib, groups, clients, &client).await;
        }
    });
}
