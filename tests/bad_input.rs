//! Bad requests get the documented JSON errors and leave the node serving; bad configuration
//! exits 2 naming the culprit; a data dir in use is refused; config sources have precedence
//! flags > environment > file.

mod common;
use common::*;
use reqwest::Method;
use std::fs;
use std::path::Path;
use std::time::Duration;

const MAX_VALUE: u64 = 1024;
const MAX_KEY: u64 = 128;

fn single_node() -> Cluster {
    let tuning = Tuning {
        max_value_bytes: Some(MAX_VALUE),
        max_key_bytes: Some(MAX_KEY),
        ..Tuning::default()
    };
    let cluster = Cluster::start_with(1, &[1], tuning);
    cluster.leader_of(1);
    cluster
}

/// The node still takes a write and reads it back.
#[track_caller]
fn still_serves(node: &Node, step: &str) {
    let key = format!("good-after-{step}");
    node.put_ok(1, &key, step);
    let r = node.get_retry(1, &key, "linearizable");
    assert_eq!(
        (r.status, r.text()),
        (200, step.to_string()),
        "after {step}: {r}"
    );
}

#[test]
fn bad_requests_get_json_errors_and_node_keeps_serving() {
    let cluster = single_node();
    let node = cluster.node(1);
    still_serves(node, "start");

    assert_error(&node.get(99, "k"), 404, "group_not_found");
    assert_error(&node.put(99, "k", "v"), 404, "group_not_found");
    still_serves(node, "unknown-group");

    assert_error(&node.get(1, "never-written"), 404, "key_not_found");
    still_serves(node, "unknown-key");

    assert_error(&node.get_path("/v1/kv/abc/k"), 400, "bad_request");
    assert_error(
        &node.request(Method::PUT, "/v1/kv/abc/k", Some(b"v".to_vec()), None),
        400,
        "bad_request",
    );
    still_serves(node, "non-numeric-group");

    // An empty key cannot be percent-encoded: `/v1/kv/1/` has no key segment at all. The router
    // may answer 400 (handler saw an empty key), 404 or 405 (no such route); it must not store.
    let r = node.request(Method::PUT, "/v1/kv/1/", Some(b"v".to_vec()), None);
    assert!(
        matches!(r.status, 400 | 404 | 405),
        "PUT /v1/kv/1/ (empty key): {r}"
    );
    still_serves(node, "empty-key");

    let big = vec![b'x'; MAX_VALUE as usize + 1];
    assert_error(&node.put(1, "big", &big), 413, "too_large");
    assert_error(&node.get(1, "big"), 404, "key_not_found");
    let exact = vec![b'y'; MAX_VALUE as usize];
    assert_eq!(
        node.put_ok(1, "exact", &exact).status,
        200,
        "value of exactly --max-value-bytes"
    );
    still_serves(node, "oversize-value");

    let long_key = "k".repeat(MAX_KEY as usize + 1);
    let r = node.put(1, &long_key, "v");
    assert!(
        matches!(r.status, 400 | 413),
        "key over --max-key-bytes: {r}"
    );
    assert!(
        matches!(r.code().as_deref(), Some("too_large" | "bad_request")),
        "key over --max-key-bytes: {r}"
    );
    still_serves(node, "oversize-key");

    let bad_json = Some(b"{bad".to_vec());
    let r = node.request(
        Method::POST,
        "/v1/groups/1/transfer-leader",
        bad_json.clone(),
        Some("application/json"),
    );
    assert_error(&r, 400, "bad_request");
    let r = node.request(
        Method::POST,
        "/v1/groups/1/learners",
        bad_json,
        Some("application/json"),
    );
    assert_error(&r, 400, "bad_request");
    still_serves(node, "malformed-json");

    assert_error(
        &node.request(Method::PUT, "/v1/groups/abc", None, None),
        400,
        "bad_request",
    );
    assert_error(
        &node.request(Method::DELETE, "/v1/groups/99", None, None),
        404,
        "group_not_found",
    );
    still_serves(node, "bad-group-admin");
    assert_eq!(node.readyz(), 200);
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A config file for node 1 alone, plus `extra` lines.
fn config_text(dir: &Path, extra: &str) -> String {
    let (grpc, http) = (free_port(), free_port());
    format!(
        "node_id = 1\ngrpc_addr = \"127.0.0.1:{grpc}\"\nhttp_addr = \"127.0.0.1:{http}\"\n\
         data_dir = \"{}\"\npeers = \"1=127.0.0.1:{grpc}\"\ngroups = [1]\n{extra}",
        dir.join("data").display()
    )
}

#[test]
fn bad_config_exits_2_naming_the_field() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let timeout = Duration::from_secs(20);
    let cfg = dir.join("raftnode.toml");

    write(&cfg, &config_text(dir, "bogus_option = 5\n"));
    let out = run_to_exit(
        &args(&["serve", "--config", &cfg.to_string_lossy()]),
        &[],
        dir,
        timeout,
    );
    assert_eq!(out.status.code(), Some(2), "unknown key: {out:?}");
    assert!(
        out.stderr.contains("bogus_option"),
        "stderr should name the unknown key: {}",
        out.stderr
    );

    let text = config_text(dir, "").replace("node_id = 1", "node_id = \"one\"");
    write(&cfg, &text);
    let out = run_to_exit(
        &args(&["serve", "--config", &cfg.to_string_lossy()]),
        &[],
        dir,
        timeout,
    );
    assert_eq!(out.status.code(), Some(2), "wrong type: {out:?}");
    assert!(
        out.stderr.contains("node_id"),
        "stderr should name node_id: {}",
        out.stderr
    );

    let text = config_text(dir, "").replace("groups = [1]", "groups = \"many\"");
    write(&cfg, &text);
    let out = run_to_exit(
        &args(&["serve", "--config", &cfg.to_string_lossy()]),
        &[],
        dir,
        timeout,
    );
    assert_eq!(out.status.code(), Some(2), "wrong type: {out:?}");
    assert!(
        out.stderr.contains("groups"),
        "stderr should name groups: {}",
        out.stderr
    );

    let missing = dir.join("does-not-exist.toml");
    let out = run_to_exit(
        &args(&["serve", "--config", &missing.to_string_lossy()]),
        &[],
        dir,
        timeout,
    );
    assert_eq!(out.status.code(), Some(2), "missing config file: {out:?}");
    assert!(
        out.stderr.contains("does-not-exist.toml"),
        "stderr should name the file: {}",
        out.stderr
    );

    let port = free_port().to_string();
    let bad_flag = args(&[
        "serve",
        "--node-id",
        "x",
        "--http-addr",
        &format!("127.0.0.1:{port}"),
    ]);
    let out = run_to_exit(&bad_flag, &[], dir, timeout);
    assert_eq!(out.status.code(), Some(2), "non-numeric --node-id: {out:?}");
    assert!(
        out.stderr.contains("node-id") || out.stderr.contains("node_id"),
        "{}",
        out.stderr
    );

    let env = [("RAFTNODE_NODE_ID".to_string(), "minus-one".to_string())];
    let out = run_to_exit(
        &args(&["serve", "--config", &cfg.to_string_lossy()]),
        &env,
        dir,
        timeout,
    );
    assert_eq!(out.status.code(), Some(2), "bad RAFTNODE_NODE_ID: {out:?}");
}

#[test]
fn data_dir_in_use_is_refused() {
    let cluster = single_node();
    let first = cluster.node(1);
    let (grpc, http) = (free_port(), free_port());
    let mut second = args(&[
        "serve",
        "--node-id",
        "1",
        "--grpc-addr",
        &format!("127.0.0.1:{grpc}"),
        "--http-addr",
        &format!("127.0.0.1:{http}"),
        "--data-dir",
        &first.data_dir.to_string_lossy(),
        "--peers",
        &format!("1=127.0.0.1:{grpc}"),
        "--groups",
        "1",
    ]);
    second.extend(cluster.tuning.args());
    let out = run_to_exit(
        &second,
        &[],
        &cluster.root.join("second"),
        Duration::from_secs(20),
    );
    assert!(
        matches!(out.status.code(), Some(1 | 2)),
        "second process on the data dir: {out:?}"
    );
    let err = out.stderr.to_lowercase();
    assert!(
        err.contains("lock") || err.contains("in use"),
        "stderr should say the dir is locked/in use: {}",
        out.stderr
    );
    still_serves(first, "second-process-refused");
}

#[test]
fn config_precedence_flags_over_env_over_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let [file_http, env_http, file_grpc, env_grpc, flag_grpc] = [(); 5].map(|_| free_port());
    let cfg = dir.join("raftnode.toml");
    write(
        &cfg,
        &format!(
            "node_id = 1\ngrpc_addr = \"127.0.0.1:{file_grpc}\"\nhttp_addr = \"127.0.0.1:{file_http}\"\n\
             data_dir = \"{}\"\npeers = \"1=127.0.0.1:{flag_grpc}\"\ngroups = [1]\n",
            dir.join("data").display()
        ),
    );
    // http_addr: file < env (env wins). grpc_addr: file < env < flag (flag wins).
    let mut node = Node::with_ports(
        1,
        flag_grpc,
        env_http,
        dir.join("node"),
        String::new(),
        &[1],
        Tuning::default(),
    );
    node.envs = vec![
        ("RAFTNODE_HTTP_ADDR".into(), format!("127.0.0.1:{env_http}")),
        ("RAFTNODE_GRPC_ADDR".into(), format!("127.0.0.1:{env_grpc}")),
    ];
    let grpc_flag = format!("127.0.0.1:{flag_grpc}");
    node.args_override = Some(args(&[
        "serve",
        "--config",
        &cfg.to_string_lossy(),
        "--grpc-addr",
        &grpc_flag,
    ]));
    node.start();
    node.wait_ready(READY_TIMEOUT); // on the env's http address
    node.put_ok(1, "from-config", "yes");
    let listening = |port: u16| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    assert!(
        !listening(file_http),
        "env RAFTNODE_HTTP_ADDR must override the file's http_addr"
    );
    assert!(listening(flag_grpc), "--grpc-addr must be listened on");
    assert!(
        !listening(env_grpc),
        "--grpc-addr must override RAFTNODE_GRPC_ADDR"
    );
    let id = node
        .status()
        .and_then(|s| s.get("node_id").and_then(Value::as_u64));
    assert_eq!(id, Some(1), "node_id from the file");
    let status = node.sigterm();
    assert_eq!(
        status.code(),
        Some(0),
        "exit after SIGTERM: {status}\n{}",
        node.log_tail(40)
    );
}
