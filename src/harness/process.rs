//! `raftnode serve` processes on loopback ports: the one launcher that the integration tests,
//! the benchmarks and the soak command share. It builds the argument list from plain fields,
//! scrubs the environment (so that the machine's `RAFTNODE_*` and `OTEL_*` settings never leak
//! into a run), appends the output to log files, and asks the kernel to kill the child if its
//! parent dies, so that a crashed test leaves no process behind.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What one `raftnode serve` is started with.
#[derive(Clone, Debug)]
pub struct ServeArgs {
    /// `--node-id`.
    pub id: u64,
    /// `--grpc-addr` is `127.0.0.1:<grpc_port>`.
    pub grpc_port: u16,
    /// `--http-addr` is `127.0.0.1:<http_port>`.
    pub http_port: u16,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// `--peers`.
    pub peers: String,
    /// `--groups`.
    pub groups: Vec<u64>,
    /// Flags after the standard ones (tuning, limits).
    pub extra: Vec<String>,
}

impl ServeArgs {
    /// The flags of node `id`'s mutual TLS with the files `scripts/dev-certs` writes to
    /// `certs`.
    pub fn peer_tls_flags(certs: &Path, id: u64) -> Vec<String> {
        let f = |name: &str| certs.join(name).display().to_string();
        vec![
            "--peer-cert-file".into(),
            f(&format!("node-{id}.pem")),
            "--peer-key-file".into(),
            f(&format!("node-{id}-key.pem")),
            "--peer-ca-file".into(),
            f("ca.pem"),
        ]
    }

    /// The `--peers` value of nodes `1..` at these gRPC ports.
    pub fn peers_of(grpc_ports: &[u16]) -> String {
        grpc_ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The HTTP address.
    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    /// The gRPC address.
    pub fn grpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    /// The whole argument list.
    pub fn to_args(&self) -> Vec<String> {
        let groups: Vec<String> = self.groups.iter().map(u64::to_string).collect();
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--node-id".into(),
            self.id.to_string(),
            "--grpc-addr".into(),
            self.grpc_addr(),
            "--http-addr".into(),
            self.http_addr(),
            "--data-dir".into(),
            self.data_dir.to_string_lossy().into_owned(),
            "--peers".into(),
            self.peers.clone(),
            "--groups".into(),
            groups.join(","),
        ];
        args.extend(self.extra.iter().cloned());
        args
    }
}

/// Opens `path` for appending, creating it.
pub fn append_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The size of `path`, 0 if absent.
pub fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Reads `path` from byte `from` on, lossily.
pub fn read_from(path: &Path, from: u64) -> String {
    let mut out = Vec::new();
    if let Ok(mut f) = File::open(path) {
        if f.seek(SeekFrom::Start(from)).is_ok() {
            let _ = f.read_to_end(&mut out);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The last `n` lines of `path`.
pub fn tail(path: &Path, n: usize) -> String {
    let text = read_from(path, 0);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Spawns `binary` with `args` in `log_dir`, appending its output to `stdout.log` and
/// `stderr.log` there. Inherited `RAFTNODE_*` and `OTEL_*` variables are removed, so that only
/// `envs` configure it; `RUST_LOG` is `rust_log` when given, else inherited.
pub fn spawn(
    binary: &Path,
    args: &[String],
    envs: &[(String, String)],
    log_dir: &Path,
    rust_log: Option<&str>,
) -> io::Result<Child> {
    fs::create_dir_all(log_dir)?;
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .current_dir(log_dir)
        .stdin(Stdio::null())
        .stdout(append_file(&log_dir.join("stdout.log"))?)
        .stderr(append_file(&log_dir.join("stderr.log"))?);
    for (k, _) in std::env::vars_os() {
        let name = k.to_string_lossy();
        if name.starts_with("RAFTNODE_") || name.starts_with("OTEL_") {
            cmd.env_remove(k);
        }
    }
    if let Some(filter) = rust_log {
        cmd.env("RUST_LOG", filter);
    }
    cmd.env("RUST_BACKTRACE", "1");
    cmd.envs(envs.iter().map(|(k, v)| (k, v)));
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn()
}

/// Waits for `child` to exit for at most `timeout`.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// Sends `sig` to process `pid`.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// A loopback port no other harness process holds: picked below the kernel's ephemeral range
/// (so outgoing connections never take it, even while a killed node is down before its
/// restart), reserved for this process's lifetime by an flock on a file in the temp dir, and
/// checked free by binding it. Falls back to an ephemeral port if the range below is too small.
pub fn free_port() -> io::Result<u16> {
    static STATE: Mutex<Option<(u16, Vec<File>)>> = Mutex::new(None);
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (lo, hi) = (15000u16, ephemeral_low.min(32768));
    if hi <= lo + 1000 {
        return TcpListener::bind("127.0.0.1:0")?
            .local_addr()
            .map(|a| a.port());
    }
    let span = u32::from(hi - lo);
    let lock_dir = std::env::temp_dir().join("raftnode-test-ports");
    fs::create_dir_all(&lock_dir)?;
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let (cursor, held) = state.get_or_insert_with(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let seed = std::process::id().wrapping_mul(7919).wrapping_add(nanos);
        ((seed % span) as u16, Vec::new())
    });
    for _ in 0..span {
        let port = lo + *cursor;
        *cursor = ((u32::from(*cursor) + 1) % span) as u16;
        let Ok(file) = File::create(lock_dir.join(format!("{port}.lock"))) else {
            continue;
        };
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            continue; // held by another harness process (or by us already)
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            held.push(file); // keep the lock until this process exits
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("no free loopback port in {lo}..{hi}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_and_ports() {
        let a = ServeArgs {
            id: 2,
            grpc_port: 7072,
            http_port: 8082,
            data_dir: "d".into(),
            peers: ServeArgs::peers_of(&[7071, 7072]),
            groups: vec![1, 3],
            extra: vec!["--heartbeat-ms".into(), "50".into()],
        };
        assert_eq!(a.peers, "1=127.0.0.1:7071,2=127.0.0.1:7072");
        let args = a.to_args();
        assert_eq!(args[0], "serve");
        assert!(args.windows(2).any(|w| w == ["--groups", "1,3"]));
        assert_eq!(args.last().map(String::as_str), Some("50"));
        let (p, q) = (free_port().unwrap(), free_port().unwrap());
        assert_ne!(p, q);
    }
}
