//! OpenTelemetry traces across real nodes, received by collectors written in the test
//! (`common::otlp`): one trace for a write sent to a follower, spanning the follower, the
//! leader and the other follower with correct parent links; both OTLP transports; a collector
//! that is down or never answers; and JSON logs that carry the request's trace id.

mod common;
use common::otlp::{closed_endpoint, BlackHole, CollectedSpan, Collector};
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// A client-chosen W3C trace context, so the test can find its trace among the others.
fn traceparent(trace_id: &str, parent_id: &str) -> String {
    format!("00-{trace_id}-{parent_id}-01")
}

fn put_traced(node: &Node, group: u64, key: &str, tp: &str) -> u16 {
    node.client()
        .put(format!("{}/v1/kv/{group}/{key}", node.base_url()))
        .header("traceparent", tp)
        .body("traced-value")
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Sum of the samples of `name` whose label set contains `labels` (e.g. `reason="queue_full"`).
fn by_name<'a>(spans: &'a [CollectedSpan], name: &str) -> Vec<&'a CollectedSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[test]
fn a_put_to_a_follower_is_one_trace_across_nodes() {
    let collector = Collector::grpc();
    let mut cluster = Cluster::new(3, &[1], Tuning::default());
    for n in &mut cluster.nodes {
        n.envs = collector.env();
        n.envs.push((
            "OTEL_EXPORTER_OTLP_HEADERS".into(),
            "x-collector-key=grpc-secret".into(),
        ));
    }
    for n in &cluster.nodes {
        n.start();
    }
    for n in &cluster.nodes {
        n.wait_ready(READY_TIMEOUT);
    }
    let leader = cluster.leader_of(1);
    let follower = cluster.ids().into_iter().find(|&id| id != leader).unwrap();
    let other = cluster
        .ids()
        .into_iter()
        .find(|&id| id != leader && id != follower)
        .unwrap();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let status = retry_status(|| {
        put_traced(
            cluster.node(follower),
            1,
            "traced",
            &traceparent(trace_id, client_span),
        )
    });
    assert_eq!(status, 200, "traced put through node {follower}");

    // Every node's part arrives: the follower's request and forward, the leader's proposal,
    // replication to both followers, and the apply on all three.
    let spans = eventually(Duration::from_secs(30), "the whole trace", || {
        let spans = collector.trace(trace_id);
        let appends: BTreeSet<Option<i64>> = by_name(&spans, "raft.append_entries")
            .iter()
            .map(|s| s.node)
            .collect();
        let applies: BTreeSet<Option<i64>> = by_name(&spans, "raft.apply")
            .iter()
            .map(|s| s.node)
            .collect();
        (appends.len() == 2 && applies.len() == 3 && !by_name(&spans, "raft.forward").is_empty())
            .then_some(spans)
    });
    for s in &spans {
        println!(
            "span node={:?} name={} id={} parent={} links={}",
            s.node, s.name, s.span_id, s.parent_span_id, s.links
        );
    }
    let nodes: BTreeSet<i64> = spans.iter().filter_map(|s| s.node).collect();
    assert_eq!(nodes.len(), 3, "spans from every node: {nodes:?}");
    assert!(spans
        .iter()
        .all(|s| s.service.as_deref() == Some("raftnode")));
    let keys = collector.keys();
    assert!(
        !keys.is_empty() && keys.iter().all(|k| k == "grpc-secret"),
        "OTEL_EXPORTER_OTLP_HEADERS reach the collector as gRPC metadata: {keys:?}"
    );

    // Parent links: every span's parent is in the trace, except the HTTP server span, whose
    // parent is the client's span from the traceparent header.
    let ids: BTreeMap<&str, &CollectedSpan> =
        spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let parent = |s: &CollectedSpan| -> &CollectedSpan {
        ids.get(s.parent_span_id.as_str())
            .copied()
            .unwrap_or_else(|| panic!("parent of {} {} is not in the trace", s.name, s.span_id))
    };
    let http = by_name(&spans, "PUT /v1/kv/{group}/{*key}");
    assert_eq!(http.len(), 1, "one HTTP server span");
    assert_eq!(http[0].node, Some(follower as i64));
    assert_eq!(
        http[0].parent_span_id, client_span,
        "incoming traceparent honoured"
    );
    for s in spans.iter().filter(|s| s.span_id != http[0].span_id) {
        parent(s);
    }
    let forward = by_name(&spans, "raft.forward");
    assert_eq!(forward[0].node, Some(follower as i64));
    assert_eq!(parent(forward[0]).span_id, http[0].span_id);
    let served = by_name(&spans, "raft.forwarded_propose");
    assert_eq!(served.len(), 1, "the leader serves the forwarded proposal");
    assert_eq!(served[0].node, Some(leader as i64));
    assert_eq!(
        parent(served[0]).span_id,
        forward[0].span_id,
        "gRPC metadata carries the context"
    );
    // The follower tried to propose first (and learned who leads); the leader's proposal is
    // the one the forwarded call made.
    let propose: Vec<&CollectedSpan> = by_name(&spans, "raft.propose")
        .into_iter()
        .filter(|s| s.node == Some(leader as i64))
        .collect();
    assert_eq!(propose.len(), 1);
    assert_eq!(parent(propose[0]).span_id, served[0].span_id);
    for append in by_name(&spans, "raft.append_entries") {
        assert!(append.node == Some(follower as i64) || append.node == Some(other as i64));
        let replicate = parent(append);
        assert_eq!(replicate.name, "raft.replicate");
        assert_eq!(replicate.node, Some(leader as i64));
        assert_eq!(parent(replicate).span_id, propose[0].span_id);
    }
    for apply in by_name(&spans, "raft.apply") {
        assert_eq!(
            parent(apply).span_id,
            propose[0].span_id,
            "apply on node {:?} joins the proposal",
            apply.node
        );
    }

    // The exporter is an owner like any other, and idle replication sends nothing.
    // (The collector may record a batch a moment before the node counts it as exported.)
    let counted = wait_until(Duration::from_secs(10), || {
        let scrape = cluster.node(leader).scrape();
        scrape.sum("raftnode_owner_tasks", &[("owner_kind", "telemetry")]) >= 1.0
            && scrape.sum("raftnode_trace_spans_exported_total", &[]) >= 1.0
    });
    assert!(
        counted,
        "the telemetry owner's task and exported spans show on /metrics"
    );
    let before = collector.spans().len();
    std::thread::sleep(Duration::from_secs(3));
    let idle: Vec<String> = collector.spans()[before..]
        .iter()
        .map(|s| s.name.clone())
        .collect();
    assert!(
        idle.iter().all(|n| !n.starts_with("raft.")),
        "heartbeats must not be traced: {idle:?}"
    );

    // Shutdown phases are traced, and the exporter's owner stops clean.
    let leader_node = cluster.node(leader);
    assert!(leader_node.sigterm().success());
    let shutdown: Vec<CollectedSpan> = collector
        .spans()
        .into_iter()
        .filter(|s| s.node == Some(leader as i64))
        .filter(|s| s.name == "node.shutdown" || s.name == "shutdown.phase")
        .collect();
    assert!(
        shutdown.iter().any(|s| s.name == "node.shutdown")
            && shutdown
                .iter()
                .filter(|s| s.name == "shutdown.phase")
                .count()
                >= 7,
        "shutdown spans flushed before exit: {shutdown:?}"
    );
    let log = leader_node.run_stderr();
    assert!(!log.contains("leak:"), "no leak verdicts at exit:\n{log}");
}

fn retry_status(mut f: impl FnMut() -> u16) -> u16 {
    let until = Instant::now() + RETRY_TIMEOUT;
    loop {
        let s = f();
        if s == 200 || Instant::now() > until {
            return s;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn http_protobuf_exports_with_the_configured_resource() {
    let collector = Collector::http();
    let mut env = collector.env();
    env.push(("OTEL_SERVICE_NAME".into(), "kv-under-test".into()));
    env.push((
        "OTEL_RESOURCE_ATTRIBUTES".into(),
        "deployment.environment=ci".into(),
    ));
    env.push((
        "OTEL_EXPORTER_OTLP_HEADERS".into(),
        "x-collector-key=http-secret".into(),
    ));
    let (_tmp, node) = single_node_with(&[], &env);
    node.put_ok(1, "k", "v");
    let spans = eventually(Duration::from_secs(20), "spans over http/protobuf", || {
        let spans = collector.spans();
        spans
            .iter()
            .any(|s| s.name == "raft.propose")
            .then_some(spans)
    });
    assert!(spans.iter().all(|s| s.node == Some(1)));
    assert!(spans
        .iter()
        .all(|s| s.service.as_deref() == Some("kv-under-test")));
    assert!(
        collector.keys().iter().all(|k| k == "http-secret") && !collector.keys().is_empty(),
        "OTEL_EXPORTER_OTLP_HEADERS reach the collector: {:?}",
        collector.keys()
    );
    assert!(node.sigterm().success());
}

#[test]
fn sampler_always_off_exports_nothing_and_bad_settings_exit_2() {
    let collector = Collector::grpc();
    let mut env = collector.env();
    env.push(("OTEL_TRACES_SAMPLER".into(), "always_off".into()));
    let (tmp, node) = single_node_with(&[], &env);
    for i in 0..20 {
        node.put_ok(1, &format!("k{i}"), "v");
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(node.sigterm().success());
    assert!(
        collector.spans().iter().all(|s| s.name != "raft.propose"),
        "always_off sampled a write"
    );

    for (var, value, field) in [
        ("OTEL_TRACES_SAMPLER", "sometimes", "otel_traces_sampler"),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "carrier-pigeon",
            "otlp_protocol",
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "https://collector:4317",
            "otlp_endpoint",
        ),
    ] {
        let mut env = vec![(
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
            collector.endpoint.clone(),
        )];
        env.retain(|(k, _)| k != var);
        env.push((var.to_string(), value.to_string()));
        let out = run_to_exit(
            &[
                "serve".to_string(),
                "--data-dir".into(),
                tmp.path().join("x").to_string_lossy().into(),
            ],
            &env,
            tmp.path(),
            EXIT_TIMEOUT,
        );
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {}", out.stderr);
        assert!(
            out.stderr.contains(field),
            "{var}={value} names {field}: {}",
            out.stderr
        );
    }
}

/// Puts `n` values one after another; returns the elapsed time and the slowest put.
fn sequential_puts(node: &Node, n: usize, prefix: &str) -> (Duration, Duration) {
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        let t = Instant::now();
        let r = node.put(1, &format!("{prefix}{i}"), [7u8; 256]);
        assert_eq!(r.status, 200, "put {i}: {r}");
        slowest = slowest.max(t.elapsed());
    }
    (start.elapsed(), slowest)
}

#[test]
fn a_collector_that_is_down_or_silent_costs_spans_not_writes() {
    const PUTS: usize = 400;
    let (_tmp, off) = single_node_with(&[], &[]);
    sequential_puts(&off, 50, "warm");
    let (baseline, _) = sequential_puts(&off, PUTS, "k");
    assert!(off.sigterm().success());

    let hole = BlackHole::new();
    let cases: Vec<(&str, String, &str)> = vec![
        ("grpc, nothing listening", closed_endpoint(), "grpc"),
        ("grpc, never answers", hole.endpoint.clone(), "grpc"),
        (
            "http/protobuf, never answers",
            hole.endpoint.clone(),
            "http/protobuf",
        ),
    ];
    for (what, endpoint, protocol) in cases {
        let env = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), endpoint),
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL".to_string(),
                protocol.to_string(),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY".to_string(), "100".to_string()),
            ("OTEL_BSP_MAX_QUEUE_SIZE".to_string(), "64".to_string()),
        ];
        let (_tmp, node) = single_node_with(&[], &env);
        sequential_puts(&node, 50, "warm");
        let (elapsed, slowest) = sequential_puts(&node, PUTS, "k");
        println!(
            "collector {what}: {PUTS} sequential puts in {elapsed:?} (tracing off: {baseline:?}), slowest {slowest:?}"
        );
        assert!(
            slowest < Duration::from_secs(2),
            "{what}: a put waited {slowest:?} on the exporter"
        );
        let dropped = node.scrape().sum("raftnode_trace_spans_dropped_total", &[]);
        println!("collector {what}: {dropped} spans dropped and counted");
        assert!(dropped > 0.0, "{what}: dropped spans are counted");

        let t = Instant::now();
        let status = node.sigterm();
        let took = t.elapsed();
        println!("collector {what}: SIGTERM to exit {took:?}");
        assert!(status.success(), "{what}: exit status {status:?}");
        assert!(
            took < Duration::from_secs(10),
            "{what}: shutdown took {took:?}, beyond the 10 s grace"
        );
        let log = node.run_stderr();
        assert!(!log.contains("leak:"), "{what}: no leak verdicts:\n{log}");
    }
}

#[test]
fn json_logs_parse_and_carry_the_trace_id() {
    let collector = Collector::grpc();
    let mut env = collector.env();
    env.push(("RUST_LOG".into(), "info,raftnode=debug".into()));
    let (_tmp, node) = single_node_with(&["--log-format", "json"], &env);
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    assert_eq!(
        retry_status(|| put_traced(
            &node,
            1,
            "logged",
            &traceparent(trace_id, "b7ad6b7169203331")
        )),
        200
    );
    assert!(node.sigterm().success());
    let log = node.run_stderr();
    let mut with_trace = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("fields").is_some(),
            "{line}"
        );
        if v.get("trace_id").and_then(Value::as_str) == Some(trace_id) {
            let span_id = v.get("span_id").and_then(Value::as_str).unwrap_or("");
            assert_eq!(span_id.len(), 16, "{line}");
            with_trace += 1;
        }
    }
    assert!(
        with_trace > 0,
        "no log line carries trace {trace_id}:\n{log}"
    );
}
