//! Integration-test harness: runs real `raftnode serve` processes on loopback ports with
//! temporary data dirs, talks to them over HTTP, signals them, and reads their WAL files.
//!
//! Rules kept throughout:
//! - every wait is bounded by a timeout (generous: CI has 2 cores and runs binaries side by side);
//! - each node's stdout/stderr are appended to `stdout.log`/`stderr.log` in its dir, and a
//!   `Cluster` whose test panics prints the tail of every log and keeps its dir;
//! - a `Node` that is dropped SIGKILLs its live child, and each child also gets SIGKILL from the
//!   kernel if the test thread that spawned it dies (PR_SET_PDEATHSIG), so no test leaks processes.
//!
//! The child's environment has every `RAFTNODE_*` and `OTEL_*` variable removed, so that the
//! machine's settings never leak into a test.
//!
//! Set `RAFTNODE_TEST_KEEP=1` to keep every test dir, `RAFTNODE_TEST_LOG` to change `RUST_LOG`.
#![allow(dead_code)] // each test binary uses a different subset of the harness

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{sleep, JoinHandle};
use std::time::{Duration, Instant};

pub mod linearizability;
pub mod otlp;
pub mod secure;

use raftnode::harness::process::{self, ServeArgs};
#[allow(unused_imports)] // not every test binary reads metrics
pub use raftnode::harness::prom::Scrape;

use reqwest::blocking::Client;
use reqwest::Method;
#[allow(unused_imports)] // re-exported for the tests; not every test binary uses both
pub use serde_json::{json, Value};

/// How long a node may take from spawn to `/readyz` 200.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a group may take to agree on a leader.
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a signalled (or failing) process may take to exit.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client keeps retrying 503s / connection errors for one request.
pub const RETRY_TIMEOUT: Duration = Duration::from_secs(20);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

pub const RAFTNODE: &str = env!("CARGO_BIN_EXE_raftnode");

// ---------------------------------------------------------------------------------------------
// Tuning: the one place that knows the names of the tuning flags.

/// Tuning flags passed to every node of a cluster. `None` leaves the binary's default.
#[derive(Debug, Clone)]
pub struct Tuning {
    pub election_timeout_ms: Option<u64>,
    pub heartbeat_ms: Option<u64>,
    /// Snapshot after this many log entries since the last snapshot.
    pub snapshot_logs: Option<u64>,
    /// Log entries kept behind a snapshot (0 forces lagging followers onto the snapshot path).
    pub snapshot_keep_logs: Option<u64>,
    pub shutdown_grace_ms: Option<u64>,
    pub max_value_bytes: Option<u64>,
    pub max_key_bytes: Option<u64>,
    /// `--log-cache-bytes`: log entries kept in memory.
    pub log_cache_bytes: Option<u64>,
    /// `--state-cache-bytes`: the state engine's block cache.
    pub state_cache_bytes: Option<u64>,
}

impl Default for Tuning {
    /// Slow enough that a loaded 2-core machine does not see spurious elections.
    fn default() -> Self {
        Tuning {
            election_timeout_ms: Some(1000),
            heartbeat_ms: Some(200),
            snapshot_logs: None,
            snapshot_keep_logs: None,
            shutdown_grace_ms: None,
            max_value_bytes: None,
            max_key_bytes: None,
            log_cache_bytes: None,
            state_cache_bytes: None,
        }
    }
}

impl Tuning {
    pub fn args(&self) -> Vec<String> {
        let flags = [
            ("--election-timeout-ms", self.election_timeout_ms),
            ("--heartbeat-ms", self.heartbeat_ms),
            ("--snapshot-logs", self.snapshot_logs),
            ("--snapshot-keep-logs", self.snapshot_keep_logs),
            ("--shutdown-grace-ms", self.shutdown_grace_ms),
            ("--max-value-bytes", self.max_value_bytes),
            ("--max-key-bytes", self.max_key_bytes),
            ("--log-cache-bytes", self.log_cache_bytes),
            ("--state-cache-bytes", self.state_cache_bytes),
        ];
        let mut args = Vec::new();
        for (flag, value) in flags {
            if let Some(v) = value {
                args.push(flag.to_string());
                args.push(v.to_string());
            }
        }
        args
    }
}

// ---------------------------------------------------------------------------------------------
// Small utilities.

/// Polls `f` every 50 ms until it returns true or `timeout` passes; returns whether it did.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(POLL);
    }
}

/// Polls `f` until it yields a value; panics naming `what` after `timeout`.
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        sleep(POLL);
    }
}

/// Calls `f` again while it answers a retryable failure (503, 502, 504, connection error or
/// timeout), with backoff, for at most `timeout`. Returns the last response.
pub fn retry(timeout: Duration, mut f: impl FnMut() -> Resp) -> Resp {
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(50);
    loop {
        let r = f();
        if !r.is_retryable() || Instant::now() + backoff >= deadline {
            return r;
        }
        sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Percent-encodes a path segment (everything but RFC 3986 unreserved characters).
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An HTTP client for the nodes, with the suite's credentials: in secure mode
/// (`RAFTNODE_TEST_SECURE`, see [`secure`]) it trusts that CA and sends the admin token. Against
/// a secured stack the tests did not start (the compose stack as it ships),
/// `RAFTNODE_TEST_CA_FILE` names the CA to trust and `RAFTNODE_TEST_TOKEN` the bearer token.
pub fn http_client(timeout: Duration) -> Client {
    let (ca, token) = match secure::material() {
        Some(m) => (Some(m.ca_pem.clone()), Some(m.admin_token.clone())),
        None => (
            std::env::var("RAFTNODE_TEST_CA_FILE").ok().map(|ca| {
                fs::read(&ca).unwrap_or_else(|e| panic!("RAFTNODE_TEST_CA_FILE {ca}: {e}"))
            }),
            std::env::var("RAFTNODE_TEST_TOKEN").ok(),
        ),
    };
    let mut b = client_builder(timeout);
    if let Some(pem) = ca {
        b = b
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("a PEM CA"));
    }
    if let Some(token) = token {
        let mut headers = reqwest::header::HeaderMap::new();
        let value = format!("Bearer {}", token.trim());
        headers.insert(
            reqwest::header::AUTHORIZATION,
            value.parse().expect("a token that fits a header"),
        );
        b = b.default_headers(headers);
    }
    b.build().expect("build HTTP client")
}

/// An HTTP client with no credentials at all: for nodes whose test sets its own security, or
/// none (see [`secure`]).
pub fn bare_http_client(timeout: Duration) -> Client {
    client_builder(timeout).build().expect("build HTTP client")
}

fn client_builder(timeout: Duration) -> reqwest::blocking::ClientBuilder {
    Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(2))
        .no_proxy() // CI may set HTTP_PROXY; our servers are on loopback
}

/// `https` when the tests run against nodes that serve HTTPS: secure mode, or a secured stack
/// (`RAFTNODE_TEST_CA_FILE`).
pub fn node_scheme() -> &'static str {
    if secure::material().is_some() || std::env::var_os("RAFTNODE_TEST_CA_FILE").is_some() {
        "https"
    } else {
        "http"
    }
}

/// An HTTP answer. `status == 0` means the request failed at the transport level (connection
/// refused, reset, timeout); `body` then holds the error text.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body as JSON, or `Value::Null` if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    /// The `code` field of a JSON error body.
    pub fn code(&self) -> Option<String> {
        self.json()
            .get("code")
            .and_then(Value::as_str)
            .map(str::to_string)
    }
    pub fn is_retryable(&self) -> bool {
        matches!(self.status, 0 | 502 | 503 | 504)
    }
}

impl fmt::Display for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.text();
        let cut: String = text.chars().take(400).collect();
        write!(f, "HTTP {} {}", self.status, cut)
    }
}

/// Sends one request; never panics (transport failures become `status == 0`).
pub fn send(
    client: &Client,
    method: Method,
    url: &str,
    body: Option<Vec<u8>>,
    content_type: Option<&str>,
) -> Resp {
    let mut req = client.request(method, url);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    match req.send() {
        Ok(r) => {
            let status = r.status().as_u16();
            match r.bytes() {
                Ok(b) => Resp {
                    status,
                    body: b.to_vec(),
                },
                Err(e) => Resp {
                    status: 0,
                    body: format!("reading body: {e}").into_bytes(),
                },
            }
        }
        Err(e) => Resp {
            status: 0,
            body: format!("{e}").into_bytes(),
        },
    }
}

/// Asserts a JSON error answer `{"error": ..., "code": code}` with `status`.
#[track_caller]
pub fn assert_error(resp: &Resp, status: u16, code: &str) {
    assert_eq!(
        resp.status, status,
        "expected HTTP {status} ({code}), got {resp}"
    );
    let body = resp.json();
    assert!(
        body.get("error").and_then(Value::as_str).is_some(),
        "error body lacks an \"error\" string: {resp}"
    );
    assert_eq!(
        resp.code().as_deref(),
        Some(code),
        "wrong error code: {resp}"
    );
}

// ---------------------------------------------------------------------------------------------
// Ports.

/// A loopback port no other test process holds (see `raftnode::harness::process::free_port`).
pub fn free_port() -> u16 {
    process::free_port().unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------------------------
// Processes: the launcher is the library's harness, shared with the benches and the soak.

fn append_file(path: &Path) -> File {
    process::append_file(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

use raftnode::harness::process::{file_len, read_from};
pub use raftnode::harness::process::{tail, wait_child};

/// Spawns the binary with `args`, appending stdout/stderr to `stdout.log`/`stderr.log` in
/// `log_dir`. Inherited `RAFTNODE_*` variables are removed so only `envs` configure it.
pub fn spawn_raftnode(args: &[String], envs: &[(String, String)], log_dir: &Path) -> Child {
    let log = std::env::var("RAFTNODE_TEST_LOG").unwrap_or_else(|_| "info".to_string());
    process::spawn(Path::new(RAFTNODE), args, envs, log_dir, Some(&log))
        .unwrap_or_else(|e| panic!("spawn {RAFTNODE}: {e}"))
}

pub fn signal(pid: u32, sig: i32) {
    process::signal(pid, sig)
}

/// A finished run of the binary.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the binary until it exits (SIGKILL and panic after `timeout`): for runs that must fail.
pub fn run_to_exit(
    args: &[String],
    envs: &[(String, String)],
    dir: &Path,
    timeout: Duration,
) -> Exited {
    let (out, err) = (dir.join("stdout.log"), dir.join("stderr.log"));
    let marks = (file_len(&out), file_len(&err));
    let mut child = spawn_raftnode(args, envs, dir);
    let status = wait_child(&mut child, timeout);
    let (stdout, stderr) = (read_from(&out, marks.0), read_from(&err, marks.1));
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("raftnode {args:?} still running after {timeout:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    };
    Exited {
        status,
        stdout,
        stderr,
    }
}

// ---------------------------------------------------------------------------------------------
// Status.

/// One entry of `/v1/status` `groups`.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupStatus {
    pub id: u64,
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
}

impl GroupStatus {
    pub fn from_json(v: &Value) -> Option<Self> {
        let ids = |k: &str| {
            let mut ids: Vec<u64> = v
                .get(k)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default();
            ids.sort_unstable();
            ids
        };
        let num = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        Some(GroupStatus {
            id: v.get("id")?.as_u64()?,
            role: v.get("role")?.as_str()?.to_string(),
            term: num("term"),
            leader: v.get("leader").and_then(Value::as_u64),
            commit_index: num("commit_index"),
            applied_index: num("applied_index"),
            voters: ids("voters"),
            learners: ids("learners"),
        })
    }

    pub fn is_leader(&self) -> bool {
        self.role == "Leader"
    }
}

// ---------------------------------------------------------------------------------------------
// Node.

/// One raftnode process (possibly stopped) with fixed ports and dir across restarts.
pub struct Node {
    pub id: u64,
    pub grpc_port: u16,
    pub http_port: u16,
    /// The node's own dir: holds `data/` and the log files.
    pub dir: PathBuf,
    pub data_dir: PathBuf,
    /// The `--peers` value.
    pub peers: String,
    pub groups: Vec<u64>,
    pub tuning: Tuning,
    /// Appended after the standard flags.
    pub extra_args: Vec<String>,
    /// Environment for the child (after `RAFTNODE_*` are cleared).
    pub envs: Vec<(String, String)>,
    /// If set, the whole argument list instead of the one built from the fields above.
    pub args_override: Option<Vec<String>>,
    /// Whether the suite's secure mode applies to this node (see [`secure`]); tests that must
    /// speak plain text on purpose set it to false before the start.
    pub suite_security: bool,
    child: Mutex<Option<Child>>,
    /// Log file lengths when the current run started.
    log_marks: Mutex<(u64, u64)>,
    starts: Mutex<u32>,
    /// The client with the suite's credentials, and one without any: which one a request takes
    /// follows [`Node::secured`].
    http: Client,
    bare: std::sync::OnceLock<Client>,
}

impl Node {
    /// A stopped node; call `start`.
    pub fn new(id: u64, dir: PathBuf, peers: String, groups: &[u64], tuning: Tuning) -> Node {
        Node::with_ports(id, free_port(), free_port(), dir, peers, groups, tuning)
    }

    pub fn with_ports(
        id: u64,
        grpc_port: u16,
        http_port: u16,
        dir: PathBuf,
        peers: String,
        groups: &[u64],
        tuning: Tuning,
    ) -> Node {
        fs::create_dir_all(&dir).expect("create node dir");
        Node {
            id,
            grpc_port,
            http_port,
            data_dir: dir.join("data"),
            dir,
            peers,
            groups: groups.to_vec(),
            tuning,
            extra_args: Vec::new(),
            envs: Vec::new(),
            args_override: None,
            suite_security: true,
            child: Mutex::new(None),
            log_marks: Mutex::new((0, 0)),
            starts: Mutex::new(0),
            http: http_client(HTTP_TIMEOUT),
            bare: std::sync::OnceLock::new(),
        }
    }

    /// The suite's secure-mode material when it applies to this node: secure mode is on, the
    /// test did not turn it off, and the node's flags set no security of their own.
    pub fn secured(&self) -> Option<&'static secure::Material> {
        let own = self.args_override.is_some() || secure::sets_own_security(&self.extra_args);
        secure::material().filter(|_| self.suite_security && !own)
    }

    /// The HTTP client for this node: with the suite's credentials unless secure mode is on
    /// and does not apply to it.
    pub fn client(&self) -> &Client {
        if secure::material().is_some() && self.secured().is_none() {
            self.bare.get_or_init(|| bare_http_client(HTTP_TIMEOUT))
        } else {
            &self.http
        }
    }

    pub fn grpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }
    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }
    pub fn base_url(&self) -> String {
        let scheme = if self.secured().is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.http_port)
    }
    pub fn stdout_path(&self) -> PathBuf {
        self.dir.join("stdout.log")
    }
    pub fn stderr_path(&self) -> PathBuf {
        self.dir.join("stderr.log")
    }

    /// The full `raftnode` argument list.
    pub fn args(&self) -> Vec<String> {
        if let Some(args) = &self.args_override {
            return args.clone();
        }
        let mut args = ServeArgs {
            id: self.id,
            grpc_port: self.grpc_port,
            http_port: self.http_port,
            data_dir: self.data_dir.clone(),
            peers: self.peers.clone(),
            groups: self.groups.clone(),
            extra: Vec::new(),
        }
        .to_args();
        args.extend(self.tuning.args());
        args.extend(self.extra_args.iter().cloned());
        if let Some(m) = self.secured() {
            args.extend(m.serve_flags(self.id));
        }
        args
    }

    fn lock_child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spawns the process (panics if it is already running). Does not wait for readiness.
    pub fn start(&self) {
        let mut child = self.lock_child();
        if let Some(c) = child.as_mut() {
            assert!(
                matches!(c.try_wait(), Ok(Some(_))),
                "node {} is already running",
                self.id
            );
        }
        let run = {
            let mut n = self.starts.lock().unwrap_or_else(|e| e.into_inner());
            *n += 1;
            *n
        };
        for path in [self.stdout_path(), self.stderr_path()] {
            let _ = writeln!(
                append_file(&path),
                "===== harness: start #{run} of node {} =====",
                self.id
            );
        }
        *self.log_marks.lock().unwrap_or_else(|e| e.into_inner()) =
            (file_len(&self.stdout_path()), file_len(&self.stderr_path()));
        *child = Some(spawn_raftnode(&self.args(), &self.envs, &self.dir));
    }

    /// Same as `start`; reads better after a stop.
    pub fn restart(&self) {
        self.start();
    }

    pub fn pid(&self) -> Option<u32> {
        self.lock_child().as_ref().map(Child::id)
    }

    /// Whether the process is alive (spawned and not exited).
    pub fn is_running(&self) -> bool {
        match self.lock_child().as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Exit status if the process has exited (reaps it); `None` while it runs or if never run.
    pub fn try_exit(&self) -> Option<ExitStatus> {
        let mut guard = self.lock_child();
        let status = guard.as_mut()?.try_wait().ok().flatten()?;
        *guard = None;
        Some(status)
    }

    /// Waits for the process to exit for at most `timeout`; reaps it.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let mut guard = self.lock_child();
        let status = wait_child(guard.as_mut()?, timeout)?;
        *guard = None;
        Some(status)
    }

    pub fn send_signal(&self, sig: i32) {
        let mut guard = self.lock_child();
        if let Some(c) = guard.as_mut() {
            if matches!(c.try_wait(), Ok(None)) {
                signal(c.id(), sig);
            }
        }
    }

    /// SIGTERM and wait for exit; panics (after SIGKILL) if it takes longer than `EXIT_TIMEOUT`.
    pub fn sigterm(&self) -> ExitStatus {
        self.send_signal(libc::SIGTERM);
        match self.wait_exit(EXIT_TIMEOUT) {
            Some(s) => s,
            None => {
                self.sigkill();
                panic!(
                    "node {} did not exit within {EXIT_TIMEOUT:?} of SIGTERM\n{}",
                    self.id,
                    self.log_tail(40)
                );
            }
        }
    }

    /// SIGKILL and reap (no-op if not running).
    pub fn sigkill(&self) {
        let mut guard = self.lock_child();
        if let Some(mut c) = guard.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Output of the current (or last) run only.
    pub fn run_stdout(&self) -> String {
        read_from(
            &self.stdout_path(),
            self.log_marks.lock().map(|m| m.0).unwrap_or(0),
        )
    }
    pub fn run_stderr(&self) -> String {
        read_from(
            &self.stderr_path(),
            self.log_marks.lock().map(|m| m.1).unwrap_or(0),
        )
    }

    pub fn log_tail(&self, lines: usize) -> String {
        format!(
            "--- node {} stdout ({}) ---\n{}\n--- node {} stderr ---\n{}\n",
            self.id,
            self.stdout_path().display(),
            tail(&self.stdout_path(), lines),
            self.id,
            tail(&self.stderr_path(), lines)
        )
    }

    /// Waits until `/readyz` answers 200; panics with the logs if the process exits or time runs out.
    pub fn wait_ready(&self, timeout: Duration) {
        self.wait_http(timeout, "/readyz")
    }

    /// Waits until `/healthz` answers 200 (process up, maybe not ready).
    pub fn wait_healthy(&self, timeout: Duration) {
        self.wait_http(timeout, "/healthz")
    }

    fn wait_http(&self, timeout: Duration, path: &str) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                panic!(
                    "node {} exited ({status}) while waiting for {path}\n{}",
                    self.id,
                    self.log_tail(60)
                );
            }
            if self.request(Method::GET, path, None, None).status == 200 {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "node {} not answering 200 on {path} after {timeout:?}\n{}",
                    self.id,
                    self.log_tail(60)
                );
            }
            sleep(Duration::from_millis(100));
        }
    }

    // --- HTTP ---------------------------------------------------------------------------------

    pub fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
    ) -> Resp {
        send(
            self.client(),
            method,
            &format!("{}{path}", self.base_url()),
            body,
            content_type,
        )
    }

    pub fn get_path(&self, path: &str) -> Resp {
        self.request(Method::GET, path, None, None)
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Resp {
        self.request(
            Method::POST,
            path,
            Some(body.to_string().into_bytes()),
            Some("application/json"),
        )
    }

    /// One `/metrics` scrape, parsed.
    pub fn scrape(&self) -> Scrape {
        let r = self.get_path("/metrics");
        assert_eq!(r.status, 200, "{r}");
        Scrape::parse(&r.text())
    }

    pub fn readyz(&self) -> u16 {
        self.get_path("/readyz").status
    }

    pub fn put(&self, group: u64, key: &str, value: impl AsRef<[u8]>) -> Resp {
        let path = format!("/v1/kv/{group}/{}", enc(key));
        self.request(
            Method::PUT,
            &path,
            Some(value.as_ref().to_vec()),
            Some("application/octet-stream"),
        )
    }

    /// GET with the default read mode (linearizable).
    pub fn get(&self, group: u64, key: &str) -> Resp {
        self.get_path(&format!("/v1/kv/{group}/{}", enc(key)))
    }

    /// GET with `?read=mode` (`linearizable`, `lease` or `local`).
    pub fn get_mode(&self, group: u64, key: &str, mode: &str) -> Resp {
        self.get_path(&format!("/v1/kv/{group}/{}?read={mode}", enc(key)))
    }

    pub fn delete(&self, group: u64, key: &str) -> Resp {
        self.request(
            Method::DELETE,
            &format!("/v1/kv/{group}/{}", enc(key)),
            None,
            None,
        )
    }

    /// PUT, retrying 503s and connection errors; panics unless it ends in 200.
    #[track_caller]
    pub fn put_ok(&self, group: u64, key: &str, value: impl AsRef<[u8]>) -> Resp {
        let r = retry(RETRY_TIMEOUT, || self.put(group, key, value.as_ref()));
        assert_eq!(
            r.status, 200,
            "PUT group {group} key {key:?} via node {}: {r}",
            self.id
        );
        r
    }

    /// GET with `mode`, retrying 503s and connection errors.
    pub fn get_retry(&self, group: u64, key: &str, mode: &str) -> Resp {
        retry(RETRY_TIMEOUT, || self.get_mode(group, key, mode))
    }

    pub fn status(&self) -> Option<Value> {
        let r = self.get_path("/v1/status");
        (r.status == 200).then(|| r.json())
    }

    pub fn group_statuses(&self) -> Option<Vec<GroupStatus>> {
        let s = self.status()?;
        Some(
            s.get("groups")?
                .as_array()?
                .iter()
                .filter_map(GroupStatus::from_json)
                .collect(),
        )
    }

    pub fn group_status(&self, group: u64) -> Option<GroupStatus> {
        self.group_statuses()?.into_iter().find(|g| g.id == group)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.sigkill();
    }
}

// ---------------------------------------------------------------------------------------------
// Cluster.

/// Nodes 1..=n on loopback, each in its own dir under one temp dir, all hosting `groups`.
pub struct Cluster {
    // Field order matters: nodes (killed on drop) go before the temp dir is removed.
    pub nodes: Vec<Node>,
    pub tuning: Tuning,
    pub root: PathBuf,
    tmp: Option<tempfile::TempDir>,
}

impl Cluster {
    pub fn start(n: u64, groups: &[u64]) -> Cluster {
        Cluster::start_with(n, groups, Tuning::default())
    }

    /// Starts `n` nodes and waits until each answers `/readyz` 200.
    pub fn start_with(n: u64, groups: &[u64], tuning: Tuning) -> Cluster {
        Cluster::new(n, groups, tuning).started()
    }

    /// [`Cluster::start`] in plain text even in secure mode: for tests that make raw
    /// node-to-node calls on purpose.
    pub fn start_plain(n: u64, groups: &[u64]) -> Cluster {
        let mut cluster = Cluster::new(n, groups, Tuning::default());
        for node in &mut cluster.nodes {
            node.suite_security = false;
        }
        cluster.started()
    }

    fn started(self) -> Cluster {
        for node in &self.nodes {
            node.start();
        }
        for node in &self.nodes {
            node.wait_ready(READY_TIMEOUT);
        }
        self
    }

    /// Same as `start_with` but nothing is spawned: tests may adjust nodes first.
    pub fn new(n: u64, groups: &[u64], tuning: Tuning) -> Cluster {
        let tmp = tempfile::Builder::new()
            .prefix("raftnode-test-")
            .tempdir()
            .expect("create temp dir");
        let root = tmp.path().to_path_buf();
        let ports: Vec<(u64, u16, u16)> =
            (1..=n).map(|id| (id, free_port(), free_port())).collect();
        let peers = ports
            .iter()
            .map(|(id, grpc, _)| format!("{id}=127.0.0.1:{grpc}"))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = ports
            .iter()
            .map(|&(id, grpc, http)| {
                let dir = root.join(format!("node{id}"));
                Node::with_ports(id, grpc, http, dir, peers.clone(), groups, tuning.clone())
            })
            .collect();
        Cluster {
            nodes,
            tuning,
            root,
            tmp: Some(tmp),
        }
    }

    pub fn node(&self, id: u64) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub fn live_ids(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.id)
            .collect()
    }

    pub fn http_urls(&self, ids: &[u64]) -> Vec<String> {
        ids.iter().map(|&id| self.node(id).base_url()).collect()
    }

    /// Adds node `id` (not started), whose `--peers` lists every node so far and itself.
    pub fn add_node(&mut self, id: u64, groups: &[u64]) -> &Node {
        let (grpc, http) = (free_port(), free_port());
        let mut peers: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.grpc_addr()))
            .collect();
        peers.push(format!("{id}=127.0.0.1:{grpc}"));
        let dir = self.root.join(format!("node{id}"));
        let node = Node::with_ports(
            id,
            grpc,
            http,
            dir,
            peers.join(","),
            groups,
            self.tuning.clone(),
        );
        self.nodes.push(node);
        self.nodes.last().expect("just pushed")
    }

    /// One poll: the leader that every live node in `ids` hosting `group` agrees on, provided that
    /// node itself reports role Leader.
    pub fn try_leader_among(&self, group: u64, ids: &[u64]) -> Option<u64> {
        let mut agreed = None;
        let mut seen = 0;
        for &id in ids {
            let node = self.node(id);
            if !node.is_running() {
                continue;
            }
            let Some(groups) = node.group_statuses() else {
                return None; // unreachable node: no agreement yet
            };
            let Some(g) = groups.iter().find(|g| g.id == group) else {
                continue;
            };
            seen += 1;
            let l = g.leader?;
            if agreed.is_some_and(|a| a != l) {
                return None;
            }
            agreed = Some(l);
        }
        let leader = agreed.filter(|_| seen > 0)?;
        let node = self.nodes.iter().find(|n| n.id == leader)?;
        node.group_status(group)?.is_leader().then_some(leader)
    }

    /// Waits until the live nodes in `ids` agree on a leader of `group`.
    pub fn leader_among(&self, group: u64, ids: &[u64]) -> u64 {
        let deadline = Instant::now() + LEADER_TIMEOUT;
        loop {
            if let Some(l) = self.try_leader_among(group, ids) {
                return l;
            }
            if Instant::now() >= deadline {
                panic!(
                    "no agreed leader for group {group} among {ids:?} after {LEADER_TIMEOUT:?}\n{}",
                    self.describe()
                );
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// Waits until all live nodes agree on a leader of `group`.
    pub fn leader_of(&self, group: u64) -> u64 {
        self.leader_among(group, &self.ids())
    }

    /// Waits for an agreed leader of `group` other than `old`.
    pub fn new_leader(&self, group: u64, old: u64, timeout: Duration) -> u64 {
        eventually(
            timeout,
            &format!("a leader of group {group} other than {old}"),
            || {
                self.try_leader_among(group, &self.ids())
                    .filter(|&l| l != old)
            },
        )
    }

    /// Every node's `/v1/status`, for failure messages.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let s = if n.is_running() {
                n.status()
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "<no status>".into())
            } else {
                "<not running>".into()
            };
            out.push_str(&format!("node {}: {s}\n", n.id));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let keep = std::env::var_os("RAFTNODE_TEST_KEEP").is_some();
        if std::thread::panicking() {
            for n in &self.nodes {
                eprintln!("{}", n.log_tail(80));
            }
        }
        if std::thread::panicking() || keep {
            if let Some(tmp) = self.tmp.take() {
                eprintln!("raftnode test dir kept: {}", tmp.keep().display());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client load.

/// What a `Load` saw. Times are `Instant`s so they compare with the test's own.
#[derive(Debug, Default, Clone)]
pub struct LoadStats {
    /// Keys whose PUT answered 200, with their values.
    pub acked: Vec<(String, String)>,
    /// (sent, answered) of each successful PUT.
    pub oks: Vec<(Instant, Instant)>,
    /// Retryable failures (503, connection errors, timeouts); the key was retried.
    pub retries: u64,
    /// The most recent retryable failure, for diagnostics.
    pub last_retry: Option<String>,
    /// Non-retryable failures; the key was given up.
    pub hard_failures: Vec<String>,
}

impl LoadStats {
    /// When the first PUT *sent* at or after `t` succeeded.
    pub fn first_ok_sent_after(&self, t: Instant) -> Option<Instant> {
        self.oks
            .iter()
            .filter(|(sent, _)| *sent >= t)
            .map(|(_, done)| *done)
            .min()
    }

    /// The longest stretch within [from, to] without a successful PUT.
    pub fn max_gap(&self, from: Instant, to: Instant) -> Duration {
        let mut times: Vec<Instant> = self
            .oks
            .iter()
            .map(|(_, d)| *d)
            .filter(|d| *d >= from && *d <= to)
            .collect();
        times.sort_unstable();
        let mut prev = from;
        let mut gap = Duration::ZERO;
        for t in times.into_iter().chain(std::iter::once(to)) {
            gap = gap.max(t.duration_since(prev));
            prev = t;
        }
        gap
    }

    pub fn summary(&self) -> String {
        let last = |what: &str, v: Option<&String>| {
            v.map(|r| format!(" ({what}: {r})")).unwrap_or_default()
        };
        format!(
            "{} acked, {} retries{}, {} hard failures{}",
            self.acked.len(),
            self.retries,
            last("last", self.last_retry.as_ref()),
            self.hard_failures.len(),
            last("first", self.hard_failures.first()),
        )
    }
}

/// Client threads writing distinct keys `{prefix}-{thread}-{seq}` to one group, rotating over
/// `targets` (node base URLs) on failure. Stops on `stop()` or after 3 minutes at the latest.
pub struct Load {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<LoadStats>>,
    handles: Vec<JoinHandle<()>>,
}

impl Load {
    // Test load generators are not part of the node: they may use plain threads.
    #[allow(clippy::disallowed_methods)]
    pub fn start(group: u64, prefix: &str, threads: usize, targets: Vec<String>) -> Load {
        assert!(!targets.is_empty(), "load needs at least one target");
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(LoadStats::default()));
        let handles = (0..threads)
            .map(|t| {
                let (stop, stats, targets) = (stop.clone(), stats.clone(), targets.clone());
                let prefix = prefix.to_string();
                std::thread::Builder::new()
                    .name(format!("load-{prefix}-{t}"))
                    .spawn(move || load_thread(t, group, &prefix, &targets, &stop, &stats))
                    .expect("spawn load thread")
            })
            .collect();
        Load {
            stop,
            stats,
            handles,
        }
    }

    /// Runs `f` on the statistics so far.
    pub fn with_stats<R>(&self, f: impl FnOnce(&LoadStats) -> R) -> R {
        f(&self.stats.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn acked(&self) -> usize {
        self.with_stats(|s| s.acked.len())
    }

    /// Waits until at least `n` more PUTs than now have succeeded.
    pub fn wait_progress(&self, n: usize, timeout: Duration) -> bool {
        let start = self.acked();
        wait_until(timeout, || self.acked() >= start + n)
    }

    /// Panics, with the load's statistics, unless `n` more PUTs succeed within 20 s.
    #[track_caller]
    pub fn expect_progress(&self, n: usize, what: &str) {
        if !self.wait_progress(n, Duration::from_secs(20)) {
            panic!("load stalled {what}: {}", self.with_stats(|s| s.summary()));
        }
    }

    pub fn stop(mut self) -> LoadStats {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
        self.with_stats(|s| s.clone())
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn load_thread(
    t: usize,
    group: u64,
    prefix: &str,
    targets: &[String],
    stop: &AtomicBool,
    stats: &Mutex<LoadStats>,
) {
    let client = http_client(Duration::from_secs(5));
    let started = Instant::now();
    let mut target = t % targets.len();
    let lock = || stats.lock().unwrap_or_else(|e| e.into_inner());
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(180) {
        let key = format!("{prefix}-{t}-{seq}");
        let value = format!("value-of-{key}");
        let mut backoff = Duration::from_millis(20);
        while !stop.load(Ordering::SeqCst) {
            let url = format!("{}/v1/kv/{group}/{}", targets[target], enc(&key));
            let sent = Instant::now();
            let r = send(
                &client,
                Method::PUT,
                &url,
                Some(value.clone().into_bytes()),
                None,
            );
            if r.status == 200 {
                let mut s = lock();
                s.acked.push((key.clone(), value.clone()));
                s.oks.push((sent, Instant::now()));
                break;
            }
            target = (target + 1) % targets.len();
            if r.is_retryable() {
                let mut s = lock();
                s.retries += 1;
                s.last_retry = Some(format!("PUT {url}: {r}"));
                drop(s);
                sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(500));
            } else {
                lock().hard_failures.push(format!("PUT {url}: {r}"));
                sleep(backoff);
                break;
            }
        }
        seq += 1;
        sleep(Duration::from_millis(5));
    }
}

/// Reads every acked key through `node` (linearizable, retrying 503s); panics listing the keys
/// that are missing or wrong. Returns how many were checked.
pub fn verify_acked(node: &Node, group: u64, acked: &[(String, String)]) -> usize {
    let mut bad = Vec::new();
    for (key, value) in acked {
        let r = node.get_retry(group, key, "linearizable");
        if r.status != 200 || r.body != value.as_bytes() {
            bad.push(format!("{key}: {r}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} acknowledged keys not readable via node {}; first: {:?}",
        bad.len(),
        acked.len(),
        node.id,
        &bad[..bad.len().min(5)]
    );
    acked.len()
}

// ---------------------------------------------------------------------------------------------
// WAL files (format from DESIGN/contract: [len u32 LE][crc32(len) u32][crc32(payload) u32] + payload).

pub const WAL_HEADER: usize = 12;
/// Every segment of the current format starts with `RNWAL\0` and the version (u16 LE).
pub const WAL_SEGMENT_HEADER: usize = 8;

/// Segment files `data/wal/*.wal`, sorted by name (= by sequence).
pub fn wal_segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = fs::read_dir(data_dir.join("wal"))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "wal"))
                .collect()
        })
        .unwrap_or_default();
    segs.sort();
    segs
}

#[derive(Debug, Clone, Copy)]
pub struct WalRecord {
    /// Offset of the header in the file.
    pub offset: usize,
    /// Payload length.
    pub len: usize,
    /// Whether both checksums match (CRC-32/IEEE assumed).
    pub crc_ok: bool,
}

/// Complete records of a segment, and the offset where parsing stopped (== len if clean).
pub fn parse_wal(bytes: &[u8]) -> (Vec<WalRecord>, usize) {
    let u32_at =
        |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let mut records = Vec::new();
    let mut off = if bytes.starts_with(b"RNWAL\0") {
        WAL_SEGMENT_HEADER
    } else {
        0
    };
    while off + WAL_HEADER <= bytes.len() {
        let len = u32_at(off) as usize;
        let end = off + WAL_HEADER + len;
        if end > bytes.len() {
            break;
        }
        let crc_ok = crc32(&bytes[off..off + 4]) == u32_at(off + 4)
            && crc32(&bytes[off + WAL_HEADER..end]) == u32_at(off + 8);
        records.push(WalRecord {
            offset: off,
            len,
            crc_ok,
        });
        off = end;
    }
    (records, off)
}

/// CRC-32 (IEEE, as crc32fast computes it).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Map of file name to size, for messages.
pub fn describe_segments(data_dir: &Path) -> BTreeMap<String, u64> {
    wal_segments(data_dir)
        .iter()
        .map(|p| {
            (
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                file_len(p),
            )
        })
        .collect()
}

/// The node's protocol, for tests that speak gRPC to it.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic, dead_code)]
    tonic::include_proto!("raftnode.v1");
}

/// One node-to-node call with an empty payload, saying it is from node `from` of `cluster`
/// (none: no cluster header); returns its status code.
pub async fn raft_call(
    channel: tonic::transport::Channel,
    from: u64,
    cluster: Option<&str>,
) -> tonic::Code {
    let mut raft = pb::raft_service_client::RaftServiceClient::new(channel);
    let mut req = tonic::Request::new(pb::RaftRequest {
        group_id: 1,
        payload: Vec::new(),
        method: 1,
        traceparent: String::new(),
    });
    let md = req.metadata_mut();
    md.insert(
        "x-raftnode-from",
        from.to_string().parse().expect("a node id"),
    );
    if let Some(c) = cluster {
        md.insert("x-raftnode-cluster", c.parse().expect("a cluster id"));
    }
    match raft.call(req).await {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    }
}

/// Requests `node` refused for their credentials, for `reason`.
pub fn auth_failures(node: &Node, reason: &str) -> f64 {
    node.scrape()
        .sum("raftnode_auth_failures_total", &[("reason", reason)])
}

/// A one-node cluster (group 1) under `dir` with `extra` flags, not started: for nodes the
/// harness cannot probe over plain HTTP (TLS, or health behind a token).
pub fn lone_node(dir: &Path, extra: Vec<String>) -> Node {
    let mut node = Node::new(1, dir.join("n1"), String::new(), &[1], Tuning::default());
    node.peers = format!("1={}", node.grpc_addr());
    node.extra_args = extra;
    node
}

/// A gRPC channel to `addr` (host:port), plain text.
pub async fn grpc_channel(addr: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("a gRPC endpoint")
        .connect()
        .await
        .expect("connect to the gRPC port")
}

/// A started single-node cluster (group 1) in its own temp dir, with `extra` flags.
pub fn single_node(extra: &[&str]) -> (tempfile::TempDir, Node) {
    single_node_with(extra, &[])
}

/// [`single_node`] with extra environment variables for the child.
pub fn single_node_with(extra: &[&str], envs: &[(String, String)]) -> (tempfile::TempDir, Node) {
    single_node_of(&[1], extra, envs)
}

/// A started single-node cluster of `groups`, with `extra` flags and environment `envs`.
pub fn single_node_of(
    groups: &[u64],
    extra: &[&str],
    envs: &[(String, String)],
) -> (tempfile::TempDir, Node) {
    start_single_node(groups, extra, envs, true)
}

/// [`single_node`] that runs plain text even in secure mode: for tests that speak raw HTTP
/// bytes to it on purpose.
pub fn plain_single_node(extra: &[&str]) -> (tempfile::TempDir, Node) {
    start_single_node(&[1], extra, &[], false)
}

fn start_single_node(
    groups: &[u64],
    extra: &[&str],
    envs: &[(String, String)],
    suite_security: bool,
) -> (tempfile::TempDir, Node) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut node = Node::new(
        1,
        tmp.path().join("n1"),
        String::new(),
        groups,
        Tuning::default(),
    );
    node.peers = format!("1={}", node.grpc_addr());
    node.extra_args = extra.iter().map(|s| s.to_string()).collect();
    node.envs = envs.to_vec();
    node.suite_security = suite_security;
    node.start();
    node.wait_ready(READY_TIMEOUT);
    (tmp, node)
}
