//! End-to-end checks of the compose stack (deploy/docker-compose.yml with the CI override), run
//! by `scripts/container-e2e` once the stack is up: `cargo test` alone skips them (ignored),
//! since they need the images and the running stack.
//!
//! Each check prints what it measured. Node HTTP APIs are on localhost:8081..8083 (HTTPS with
//! the stack's development CA, and an admin token: `RAFTNODE_TEST_CA_FILE`,
//! `RAFTNODE_TEST_TOKEN`), Prometheus on 9090 and the webhook sink on 9095 (the compose file's
//! published ports).

mod common;
use common::*;
use reqwest::Method;
use std::process::Command;
use std::time::{Duration, Instant};

const GROUPS: [u64; 3] = [1, 2, 3];
const PROMETHEUS: &str = "http://127.0.0.1:9090";
const SINK: &str = "http://127.0.0.1:9095";
/// The node's shutdown grace in the compose file.
const GRACE: Duration = Duration::from_secs(10);

fn project() -> String {
    std::env::var("RAFTNODE_E2E_PROJECT").unwrap_or_else(|_| "raftnode-e2e".into())
}

/// Node `node`'s HTTP API. The stack serves HTTPS with certificates for `localhost`;
/// scripts/container-e2e passes the CA and a token (see `http_client`).
fn url(node: u64) -> String {
    format!("{}://localhost:{}", node_scheme(), 8080 + node)
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("docker {args:?}: {e}"));
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The container of compose service `service`.
fn container(service: &str) -> String {
    let out = Command::new("docker-compose")
        .args([
            "-p",
            &project(),
            "-f",
            "deploy/docker-compose.yml",
            "-f",
            "deploy/docker-compose.ci.yml",
            "ps",
            "-q",
            service,
        ])
        .output()
        .expect("docker-compose ps");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!id.is_empty(), "no container for service {service}");
    id
}

fn node_container(node: u64) -> String {
    container(&format!("node{node}"))
}

struct Http(reqwest::blocking::Client);

impl Http {
    fn new() -> Http {
        Http(http_client(Duration::from_secs(10)))
    }
    fn get(&self, url: &str) -> Resp {
        send(&self.0, Method::GET, url, None, None)
    }
    fn put(&self, url: &str, body: &str) -> Resp {
        send(
            &self.0,
            Method::PUT,
            url,
            Some(body.as_bytes().to_vec()),
            None,
        )
    }
    fn post_json(&self, url: &str, v: &Value) -> Resp {
        send(
            &self.0,
            Method::POST,
            url,
            Some(v.to_string().into_bytes()),
            Some("application/json"),
        )
    }
    fn ready(&self, node: u64) -> bool {
        self.get(&format!("{}/readyz", url(node))).status == 200
    }
    /// The leader of `group` as `node` sees it.
    fn leader_seen_by(&self, node: u64, group: u64) -> Option<u64> {
        let s = self.get(&format!("{}/v1/status", url(node)));
        (s.status == 200)
            .then(|| s.json())?
            .get("groups")?
            .as_array()?
            .iter()
            .filter_map(GroupStatus::from_json)
            .find(|g| g.id == group)?
            .leader
    }
    /// A leader every node in `among` agrees on.
    fn agreed_leader(&self, group: u64, among: &[u64]) -> Option<u64> {
        let seen: Vec<Option<u64>> = among
            .iter()
            .map(|&n| self.leader_seen_by(n, group))
            .collect();
        let first = seen[0]?;
        (among.contains(&first) && seen.iter().all(|l| *l == Some(first))).then_some(first)
    }
    fn wait_cluster(&self, among: &[u64], timeout: Duration) {
        let ok = wait_until(timeout, || {
            among.iter().all(|&n| self.ready(n))
                && GROUPS
                    .iter()
                    .all(|&g| self.agreed_leader(g, among).is_some())
        });
        assert!(
            ok,
            "nodes {among:?} not ready with leaders within {timeout:?}"
        );
    }
    fn read(&self, node: u64, group: u64, key: &str, mode: &str) -> Resp {
        retry(RETRY_TIMEOUT, || {
            self.get(&format!(
                "{}/v1/kv/{group}/{}?read={mode}",
                url(node),
                enc(key)
            ))
        })
    }
}

fn verify(http: &Http, node: u64, group: u64, acked: &[(String, String)]) {
    let bad: Vec<String> = acked
        .iter()
        .filter_map(|(k, v)| {
            let r = http.read(node, group, k, "linearizable");
            (r.status != 200 || r.body != v.as_bytes()).then(|| format!("{k}: {r}"))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} acknowledged writes lost; first {:?}",
        bad.len(),
        acked.len(),
        &bad[..bad.len().min(5)]
    );
}

fn prometheus(http: &Http, path: &str) -> Value {
    let r = http.get(&format!("{PROMETHEUS}{path}"));
    assert_eq!(r.status, 200, "Prometheus {path}: {r}");
    r.json()
}

/// Leak alerts pending or firing in Prometheus.
fn leak_alerts(http: &Http) -> Vec<String> {
    prometheus(http, "/api/v1/alerts")["data"]["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_string))
        .filter(|n| n.contains("Leak") || n.contains("Growing") || n.contains("TooMany"))
        .collect()
}

#[test]
#[ignore = "needs the compose stack; run scripts/container-e2e"]
fn compose_stack_end_to_end() {
    let http = Http::new();
    let all = [1, 2, 3];
    let t = Instant::now();
    http.wait_cluster(&all, Duration::from_secs(120));
    println!(
        "e2e: cluster formed with leaders for {GROUPS:?} in {:?}",
        t.elapsed()
    );

    // The health check (`raftnode health`, over HTTPS as the compose file sets it) works inside
    // the container.
    let healthy = wait_until(Duration::from_secs(90), || {
        all.iter().all(|&n| {
            docker(&[
                "inspect",
                "-f",
                "{{.State.Health.Status}}",
                &node_container(n),
            ]) == "healthy"
        })
    });
    assert!(healthy, "node containers not healthy by their health check");
    println!(
        "e2e: every node container healthy by its health check (HTTPS) after {:?}",
        t.elapsed()
    );

    // ---- Writes and reads through every node. ----
    for &node in &all {
        for &g in &GROUPS {
            let key = format!("via-{node}-g{g}");
            let r = retry(RETRY_TIMEOUT, || {
                http.put(&format!("{}/v1/kv/{g}/{key}", url(node)), "v")
            });
            assert_eq!(r.status, 200, "put {key} through node {node}: {r}");
            for &reader in &all {
                let r = http.read(reader, g, &key, "linearizable");
                assert_eq!(r.body, b"v", "read {key} through node {reader}: {r}");
            }
        }
    }
    println!("e2e: writes and linearizable reads through every node: ok");

    // ---- 10 rolling docker restarts under load. ----
    let targets: Vec<String> = all.iter().map(|&n| url(n)).collect();
    let load = Load::start(1, "restart", 4, targets.clone());
    load.expect_progress(20, "before the restarts");
    for i in 0..10u64 {
        let node = i % 3 + 1;
        let t = Instant::now();
        docker(&["restart", "-t", "30", &node_container(node)]);
        http.wait_cluster(&all, Duration::from_secs(60));
        load.expect_progress(5, &format!("after restart {i} of node {node}"));
        println!(
            "e2e: restart {i}: node {node} back with leaders in {:?}",
            t.elapsed()
        );
    }
    let restarts = load.stop();
    verify(&http, 1, 1, &restarts.acked);
    println!(
        "e2e: 10 rolling restarts: {} acknowledged writes all readable ({} retries)",
        restarts.acked.len(),
        restarts.retries
    );

    // ---- 10 SIGKILLs under load: failover time of the killed node's groups. ----
    let load = Load::start(1, "kill", 4, targets.clone());
    load.expect_progress(20, "before the kills");
    let mut failovers = Vec::new();
    for i in 0..10u64 {
        let victim = http.agreed_leader(1, &all).unwrap_or(i % 3 + 1);
        let others: Vec<u64> = all.iter().copied().filter(|&n| n != victim).collect();
        let t = Instant::now();
        docker(&["kill", "-s", "KILL", &node_container(victim)]);
        let elected = wait_until(Duration::from_secs(30), || {
            http.agreed_leader(1, &others).is_some()
        });
        assert!(
            elected,
            "kill {i}: no new leader of group 1 among {others:?}"
        );
        let failover = t.elapsed();
        failovers.push(failover);
        docker(&["start", &node_container(victim)]);
        http.wait_cluster(&all, Duration::from_secs(60));
        load.expect_progress(5, &format!("after kill {i} of node {victim}"));
        println!("e2e: kill {i}: node {victim} (leader of group 1) replaced in {failover:?}");
    }
    let kills = load.stop();
    verify(&http, 2, 1, &kills.acked);
    failovers.sort();
    println!(
        "e2e: 10 SIGKILLs of the leader: {} acknowledged writes all readable; failover min {:?} median {:?} max {:?}",
        kills.acked.len(),
        failovers[0],
        failovers[failovers.len() / 2],
        failovers[failovers.len() - 1]
    );
    // Give Prometheus a few evaluations of the last scrape, then: no leak alert.
    std::thread::sleep(Duration::from_secs(5));
    let leaks = leak_alerts(&http);
    assert!(
        leaks.is_empty(),
        "leak alerts after restarts and kills: {leaks:?}"
    );
    println!("e2e: no leak alert pending or firing after 10 restarts and 10 kills");

    // ---- docker stop exits 0 within the grace period. ----
    let c = node_container(3);
    let t = Instant::now();
    docker(&["stop", "-t", "30", &c]);
    let took = t.elapsed();
    let code = docker(&["inspect", "-f", "{{.State.ExitCode}}", &c]);
    println!("e2e: docker stop of node 3: exit code {code} after {took:?}");
    assert_eq!(code, "0", "graceful stop exits 0");
    assert!(
        took < GRACE,
        "docker stop took {took:?}, beyond the node's {GRACE:?} grace"
    );
    docker(&["start", &c]);
    http.wait_cluster(&all, Duration::from_secs(60));

    // ---- A network partition of group 1's leader. ----
    let leader = http.agreed_leader(1, &all).expect("a leader of group 1");
    let others: Vec<u64> = all.iter().copied().filter(|&n| n != leader).collect();
    let c = node_container(leader);
    let network = docker(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}",
        &c,
    ]);
    let t = Instant::now();
    docker(&["network", "disconnect", &network, &c]);
    let elected = wait_until(Duration::from_secs(30), || {
        http.agreed_leader(1, &others).is_some_and(|l| l != leader)
    });
    assert!(
        elected,
        "no new leader among {others:?} after partitioning node {leader}"
    );
    let failover = t.elapsed();
    let r = retry(RETRY_TIMEOUT, || {
        http.put(&format!("{}/v1/kv/1/during-partition", url(others[0])), "p")
    });
    assert_eq!(r.status, 200, "write while node {leader} is cut off: {r}");
    println!("e2e: partition of node {leader} (leader of group 1): new leader in {failover:?}, writes go on");
    docker(&[
        "network",
        "connect",
        "--alias",
        &format!("node{leader}"),
        &network,
        &c,
    ]);
    let t = Instant::now();
    let caught_up = wait_until(Duration::from_secs(60), || {
        http.get(&format!(
            "{}/v1/kv/1/during-partition?read=local",
            url(leader)
        ))
        .body
            == b"p"
    });
    assert!(
        caught_up,
        "node {leader} did not catch up after reconnecting"
    );
    println!(
        "e2e: node {leader} rejoined and caught up in {:?}",
        t.elapsed()
    );
    http.wait_cluster(&all, Duration::from_secs(60));

    // ---- Every target up in Prometheus. ----
    let up = wait_until(Duration::from_secs(60), || {
        let targets = prometheus(&http, "/api/v1/targets");
        let active = targets["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        active.len() == 3 && active.iter().all(|t| t["health"] == "up")
    });
    assert!(
        up,
        "Prometheus targets: {}",
        prometheus(&http, "/api/v1/targets")
    );
    println!("e2e: Prometheus sees all 3 targets up");

    // ---- An injected leak reaches the on-call webhook. ----
    let r = http.post_json(
        &format!("{}/v1/debug/leaks", url(1)),
        &json!({"target": "group", "kind": "task"}),
    );
    assert_eq!(r.status, 200, "arming a leak: {r}");
    let t = Instant::now();
    let r = send(
        &http.0,
        Method::DELETE,
        &format!("{}/v1/groups/3", url(1)),
        None,
        None,
    );
    assert_eq!(r.status, 200, "stopping group 3 on node 1: {r}");
    let delivered = eventually(
        Duration::from_secs(120),
        "the leak alert at the sink",
        || {
            let alerts = http.get(&format!("{SINK}/alerts")).json();
            alerts
                .as_array()?
                .iter()
                .find(|a| a["alertname"] == "RaftNodeTaskLeak" && a["status"] == "firing")
                .cloned()
        },
    );
    println!(
        "e2e: injected task leak delivered to the webhook in {:?}: {delivered}",
        t.elapsed()
    );
    assert_eq!(delivered["severity"], "warning");
    assert_eq!(delivered["receiver"], "ticket");
    assert!(delivered["runbook_url"]
        .as_str()
        .is_some_and(|u| u.contains("RUNBOOK.md#raftnodetaskleak")));
    let r = send(
        &http.0,
        Method::PUT,
        &format!("{}/v1/groups/3", url(1)),
        None,
        None,
    );
    assert!(
        r.status == 200 || r.status == 201,
        "restarting group 3: {r}"
    );
}
