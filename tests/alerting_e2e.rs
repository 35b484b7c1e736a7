//! The alert path for real: Debian's Prometheus and Alertmanager on loopback, scraping a 3-node
//! cluster every second with the bundled rules and the bundled routing (webhook URLs pointed at
//! a receiver in this test, timings shortened).
//!
//! (a) 100 clean group restart cycles and one SIGTERM process restart: no alert at all.
//! (b) Injected leaks (task, thread, connection): the matching alert reaches the webhook with
//!     its severity and runbook_url; the time from injection to delivery is printed.

mod common;
use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Alert notifications received by the webhook, with the time each arrived.
type Inbox = Arc<Mutex<Vec<(Instant, String, Value)>>>;

/// A minimal HTTP server that records every POST body (Alertmanager's webhook payload).
/// A test-side load generator, not part of the node, so it may own a bare thread.
#[allow(clippy::disallowed_methods)]
fn webhook() -> (u16, Inbox) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let inbox: Inbox = Arc::default();
    let sink = inbox.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                sink.lock().unwrap().push((Instant::now(), path, v));
            }
            let mut stream = reader.into_inner();
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, inbox)
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &str, args: &[String], log: &Path) -> Proc {
    let out = std::fs::File::create(log).unwrap();
    Proc(
        Command::new(cmd)
            .args(args)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd} not found ({e}): install Debian's prometheus and prometheus-alertmanager")),
    )
}

fn get_json(url: &str) -> Option<Value> {
    reqwest::blocking::get(url).ok()?.json().ok()
}

/// Prometheus's alerts that are pending or firing.
fn active_alerts(prom: &str) -> Vec<Value> {
    get_json(&format!("{prom}/api/v1/alerts"))
        .and_then(|v| v["data"]["alerts"].as_array().cloned())
        .unwrap_or_default()
}

struct Stack {
    _prom: Proc,
    _am: Proc,
    prom: String,
    inbox: Inbox,
}

fn start_stack(dir: &Path, targets: &[String]) -> Stack {
    let root = std::env::current_dir().unwrap();
    let (hook, inbox) = webhook();
    let (prom_port, am_port) = (free_port(), free_port());
    let am_cfg = std::fs::read_to_string(root.join("deploy/alertmanager/alertmanager.yml"))
        .unwrap()
        .replace(
            "http://oncall-webhook:9095",
            &format!("http://127.0.0.1:{hook}"),
        )
        .replace("group_wait: 30s", "group_wait: 1s")
        .replace("group_interval: 5m", "group_interval: 1s");
    std::fs::write(dir.join("alertmanager.yml"), am_cfg).unwrap();
    let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    // In the suite's secure mode the nodes serve HTTPS: scrape them as the shipped stack does,
    // trusting the CA (the metrics stay open without --metrics-auth).
    let tls = match common::secure::material() {
        Some(m) => format!(
            "    scheme: https\n    tls_config:\n      ca_file: {}\n",
            m.ca_file().display()
        ),
        None => String::new(),
    };
    let prom_cfg = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\nscrape_configs:\n  - job_name: raftnode\n{tls}    static_configs:\n      - targets: [{}]\n",
        root.join("alerts/raftnode.yaml").display(),
        targets.join(", ")
    );
    std::fs::write(dir.join("prometheus.yml"), prom_cfg).unwrap();
    let am = spawn(
        "prometheus-alertmanager",
        &[
            format!("--config.file={}", dir.join("alertmanager.yml").display()),
            format!("--storage.path={}", dir.join("am-data").display()),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            "--cluster.listen-address=".into(),
        ],
        &dir.join("alertmanager.log"),
    );
    let prom = spawn(
        "prometheus",
        &[
            format!("--config.file={}", dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.join("prom-data").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
        &dir.join("prometheus.log"),
    );
    let prom_url = format!("http://127.0.0.1:{prom_port}");
    let up = eventually(
        Duration::from_secs(60),
        "Prometheus scraping every node",
        || {
            let v = get_json(&format!(
                "{prom_url}/api/v1/query?query=sum(up%7Bjob%3D%22raftnode%22%7D)"
            ))?;
            let n: f64 = v["data"]["result"][0]["value"][1].as_str()?.parse().ok()?;
            (n as usize == targets.len()).then_some(n)
        },
    );
    assert_eq!(up as usize, targets.len());
    eventually(Duration::from_secs(30), "Alertmanager ready", || {
        reqwest::blocking::get(format!("http://127.0.0.1:{am_port}/-/ready"))
            .ok()
            .filter(|r| r.status().is_success())
    });
    Stack {
        _prom: prom,
        _am: am,
        prom: prom_url,
        inbox,
    }
}

fn group_op(node: &Node, method: reqwest::Method, group: u64) -> u16 {
    node.request(method, &format!("/v1/groups/{group}"), None, None)
        .status
}

#[test]
fn clean_restarts_raise_no_alert_and_injected_leaks_reach_the_webhook() {
    let cluster = Cluster::start(3, &[1]);
    cluster.leader_of(1);
    let tmp = tempfile::tempdir().unwrap();
    let targets: Vec<String> = cluster
        .ids()
        .iter()
        .map(|i| cluster.node(*i).http_addr())
        .collect();
    let stack = start_stack(tmp.path(), &targets);

    // (a) 100 clean group restart cycles on every node, then one SIGTERM process restart.
    let ids = cluster.ids();
    for cycle in 0..100 {
        for id in &ids {
            assert!(
                matches!(
                    group_op(cluster.node(*id), reqwest::Method::PUT, 50),
                    200 | 201
                ),
                "cycle {cycle}"
            );
        }
        cluster.leader_of(50);
        for id in &ids {
            assert_eq!(
                group_op(cluster.node(*id), reqwest::Method::DELETE, 50),
                200,
                "cycle {cycle}"
            );
        }
    }
    let restarted = ids[2];
    assert!(cluster.node(restarted).sigterm().success());
    cluster.node(restarted).restart();
    cluster.node(restarted).wait_ready(READY_TIMEOUT);
    cluster.leader_of(1);
    // Long enough for every rule without `for` to fire on what was scraped.
    std::thread::sleep(Duration::from_secs(15));
    let active = active_alerts(&stack.prom);
    let delivered = stack.inbox.lock().unwrap().len();
    assert!(
        active.is_empty() && delivered == 0,
        "false alarms over the clean soak: active {active:?}, {delivered} webhook notifications"
    );
    println!("alerting e2e: 100 clean group cycles and a SIGTERM restart: 0 alerts");

    // (b) Each injected leak kind fires its alert, which reaches the webhook.
    let node = cluster.node(ids[0]);
    for (i, (kind, alert)) in [
        ("task", "RaftNodeTaskLeak"),
        ("thread", "RaftNodeThreadLeak"),
        ("connection", "RaftNodeConnectionLeak"),
    ]
    .iter()
    .enumerate()
    {
        let group = 60 + i as u64;
        assert_eq!(group_op(node, reqwest::Method::PUT, group), 201);
        let r = node.post_json("/v1/debug/leaks", &json!({"target": "group", "kind": kind}));
        assert_eq!(r.status, 200, "{r}");
        let injected = Instant::now();
        assert_eq!(group_op(node, reqwest::Method::DELETE, group), 200);
        let (at, path, alert_json) = eventually(
            Duration::from_secs(60),
            &format!("{alert} at the webhook"),
            || {
                stack
                    .inbox
                    .lock()
                    .unwrap()
                    .iter()
                    .find_map(|(at, path, v)| {
                        v["alerts"]
                            .as_array()?
                            .iter()
                            .find(|a| a["labels"]["alertname"] == *alert && a["status"] == "firing")
                            .map(|a| (*at, path.clone(), a.clone()))
                    })
            },
        );
        assert_eq!(alert_json["labels"]["severity"], "warning", "{alert_json}");
        assert_eq!(alert_json["labels"]["owner_kind"], "group", "{alert_json}");
        assert_eq!(path, "/ticket", "warnings route to the ticket receiver");
        let runbook = alert_json["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_default();
        assert!(
            runbook.ends_with(&format!("RUNBOOK.md#{}", alert.to_lowercase())),
            "{alert_json}"
        );
        println!(
            "alerting e2e: injected {kind} leak -> {alert} at the webhook after {:.1}s",
            at.duration_since(injected).as_secs_f64()
        );
    }
}
