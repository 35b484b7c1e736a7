//! Tokens and roles: with `--auth-token-file`, each role does exactly what it may on HTTP and
//! on gRPC (no token 401/UNAUTHENTICATED, too low a role 403/PERMISSION_DENIED), refusals are
//! counted by reason, health and metrics stay open unless `--metrics-auth`, a new token file
//! takes effect on SIGHUP (and a broken one leaves the old tokens in force), the CLI sends its
//! token, and no token ever reaches the logs.

mod common;
use common::*;
use reqwest::Method;
use std::path::Path;
use std::time::Duration;

const READ: &str = "reader-secret-0123456789";
const WRITE: &str = "writer-secret-0123456789";
const ADMIN: &str = "admin-secret-0123456789a";

fn token_file(dir: &Path, text: &str) -> String {
    let path = dir.join("tokens");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn call(node: &Node, method: Method, path: &str, token: Option<&str>) -> (u16, String, bool) {
    let client = bare_http_client(Duration::from_secs(10));
    let mut req = client.request(method.clone(), format!("{}{path}", node.base_url()));
    if method == Method::PUT || method == Method::POST {
        req = req.body("v");
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().unwrap();
    let challenged = r.headers().get("www-authenticate").is_some();
    let status = r.status().as_u16();
    (status, r.text().unwrap_or_default(), challenged)
}

#[test]
fn each_role_does_exactly_what_it_may_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let file = token_file(
        tmp.path(),
        &format!("# test tokens\n{READ} read dash\n{WRITE} write app\n{ADMIN} admin oncall\n"),
    );
    let (_t, node) = single_node(&["--auth-token-file", &file]);

    // Writes need a token, and a write role.
    let (s, body, challenged) = call(&node, Method::PUT, "/v1/kv/1/k", None);
    assert_eq!(s, 401, "{body}");
    assert!(challenged, "401 without WWW-Authenticate");
    assert!(body.contains("unauthenticated"), "{body}");
    assert_eq!(
        call(
            &node,
            Method::PUT,
            "/v1/kv/1/k",
            Some("not-a-token-at-all-xx")
        )
        .0,
        401
    );
    let (s, body, _) = call(&node, Method::PUT, "/v1/kv/1/k", Some(READ));
    assert_eq!(s, 403, "a read token put: {body}");
    assert!(
        body.contains("forbidden") && body.contains("write"),
        "{body}"
    );
    let ok = retry(Duration::from_secs(20), || {
        let (status, body, _) = call(&node, Method::PUT, "/v1/kv/1/k", Some(WRITE));
        Resp {
            status,
            body: body.into_bytes(),
        }
    });
    assert_eq!(ok.status, 200, "{ok}");

    // Reads: any role.
    for t in [READ, WRITE, ADMIN] {
        assert_eq!(call(&node, Method::GET, "/v1/kv/1/k", Some(t)).0, 200);
        assert_eq!(call(&node, Method::GET, "/v1/status", Some(t)).0, 200);
    }
    assert_eq!(call(&node, Method::GET, "/v1/kv/1/k", None).0, 401);
    assert_eq!(call(&node, Method::DELETE, "/v1/kv/1/k", Some(READ)).0, 403);

    // Groups, membership and the RPC-server restart: admin only.
    let path = "/v1/groups/7";
    assert_eq!(call(&node, Method::PUT, path, Some(WRITE)).0, 403);
    assert_eq!(call(&node, Method::PUT, path, Some(ADMIN)).0, 201);
    assert_eq!(call(&node, Method::DELETE, path, Some(WRITE)).0, 403);
    let purge = format!("{path}?purge=true");
    assert_eq!(call(&node, Method::DELETE, &purge, Some(ADMIN)).0, 200);
    assert_eq!(
        call(
            &node,
            Method::POST,
            "/v1/admin/rpc-server/restart",
            Some(WRITE)
        )
        .0,
        403
    );
    assert_eq!(
        call(
            &node,
            Method::POST,
            "/v1/groups/1/transfer-leader",
            Some(READ)
        )
        .0,
        403
    );

    // Health and metrics stay open.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(call(&node, Method::GET, path, None).0, 200, "{path}");
    }
    assert!(auth_failures(&node, "forbidden") >= 6.0);
    assert!(auth_failures(&node, "missing") >= 2.0);
    assert!(auth_failures(&node, "unknown_token") >= 1.0);

    // The CLI sends its token from a file or from RAFTNODE_TOKEN.
    let addr = node.http_addr();
    let cli = |args: &[&str], envs: &[(String, String)]| {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend(["--http-addr".to_string(), addr.clone()]);
        run_to_exit(&all, envs, tmp.path(), Duration::from_secs(30))
    };
    let wfile = tmp.path().join("write-token");
    std::fs::write(&wfile, format!("{WRITE}\n")).unwrap();
    let put = cli(
        &[
            "kv",
            "put",
            "1",
            "cli",
            "yes",
            "--token-file",
            wfile.to_str().unwrap(),
        ],
        &[],
    );
    assert!(put.status.success(), "{put:?}");
    let get = cli(
        &["kv", "get", "1", "cli"],
        &[("RAFTNODE_TOKEN".into(), READ.into())],
    );
    assert!(
        get.status.success() && get.stdout.contains("yes"),
        "{get:?}"
    );
    let denied = cli(&["kv", "get", "1", "cli"], &[]);
    assert!(
        !denied.status.success() && denied.stderr.contains("401"),
        "{denied:?}"
    );

    // No token in any log line.
    let logs = format!("{}{}", node.run_stdout(), node.run_stderr());
    for t in [READ, WRITE, ADMIN] {
        assert!(!logs.contains(t), "a token reached the node's log");
    }
}

#[test]
fn metrics_auth_closes_health_and_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let file = token_file(tmp.path(), &format!("{READ} read\n"));
    let node = lone_node(
        tmp.path(),
        ["--auth-token-file", &file, "--metrics-auth", "true"]
            .map(String::from)
            .to_vec(),
    );
    node.start();
    assert!(
        wait_until(READY_TIMEOUT, || {
            matches!(
                bare_http_client(Duration::from_secs(2))
                    .get(format!("{}/readyz", node.base_url()))
                    .bearer_auth(READ)
                    .send()
                    .map(|r| r.status().as_u16()),
                Ok(200)
            )
        }),
        "not ready"
    );
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(call(&node, Method::GET, path, None).0, 401, "{path}");
        assert_eq!(call(&node, Method::GET, path, Some(READ)).0, 200, "{path}");
    }
}

/// A gRPC request carrying `token`, if any, as `authorization` metadata.
fn with<T>(token: Option<&str>, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

#[test]
fn grpc_calls_are_checked_like_http() {
    let tmp = tempfile::tempdir().unwrap();
    let file = token_file(tmp.path(), &format!("{READ} read\n{WRITE} write\n"));
    let (_t, node) = single_node(&["--auth-token-file", &file]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let channel = grpc_channel(&node.grpc_addr()).await;
        let mut kv = pb::kv_service_client::KvServiceClient::new(channel);
        let put = |key: &str| pb::PutRequest {
            group_id: 1,
            key: key.into(),
            value: b"v".to_vec(),
        };
        let get = pb::GetRequest {
            group_id: 1,
            key: "g".into(),
            read_mode: 0,
        };
        let code = |r: Result<_, tonic::Status>| r.err().map(|s| s.code());
        assert_eq!(
            code(kv.put(with(None, put("g"))).await.map(|_| ())),
            Some(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            code(kv.put(with(Some(READ), put("g"))).await.map(|_| ())),
            Some(tonic::Code::PermissionDenied)
        );
        let mut written = None;
        for _ in 0..100 {
            match kv.put(with(Some(WRITE), put("g"))).await {
                Ok(r) => {
                    written = Some(r.into_inner().index);
                    break;
                }
                Err(s) if s.code() == tonic::Code::Unavailable => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(s) => panic!("put with a write token: {s}"),
            }
        }
        assert!(written.is_some(), "the write token never wrote");
        let got = kv
            .get(with(Some(READ), get.clone()))
            .await
            .unwrap()
            .into_inner();
        assert!(got.found && got.value == b"v");
        assert_eq!(
            code(kv.get(with(None, get)).await.map(|_| ())),
            Some(tonic::Code::Unauthenticated)
        );
    });
}

#[test]
fn a_new_token_file_takes_effect_on_sighup_and_a_broken_one_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let file = token_file(tmp.path(), &format!("{WRITE} write old\n"));
    let (_t, node) = single_node(&["--auth-token-file", &file]);
    let reloads = |result: &str| {
        node.scrape()
            .sum("raftnode_security_reloads_total", &[("result", result)])
    };
    assert_eq!(call(&node, Method::GET, "/v1/status", Some(WRITE)).0, 200);

    let rotated = "rotated-secret-0123456789";
    std::fs::write(&file, format!("{rotated} write new\n")).unwrap();
    signal(node.pid().unwrap(), libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || {
            call(&node, Method::GET, "/v1/status", Some(rotated)).0 == 200
        }),
        "the rotated token was not accepted after SIGHUP"
    );
    assert_eq!(call(&node, Method::GET, "/v1/status", Some(WRITE)).0, 401);
    assert!(reloads("ok") >= 1.0);

    // A file that does not parse: logged, counted, and the rotated token still works.
    std::fs::write(&file, "this line is not a token line at all\n").unwrap();
    signal(node.pid().unwrap(), libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || reloads("error") >= 1.0),
        "a broken token file was not counted as a failed reload"
    );
    assert_eq!(call(&node, Method::GET, "/v1/status", Some(rotated)).0, 200);
    assert!(node.is_running());

    // Changing the file is enough: the node notices without a signal.
    let watched = "watched-secret-0123456789";
    std::fs::write(&file, format!("{watched} read\n")).unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || {
            call(&node, Method::GET, "/v1/status", Some(watched)).0 == 200
        }),
        "a changed token file was not picked up"
    );
}
