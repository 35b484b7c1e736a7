//! Every input has a limit, and a client that pushes against one is turned away without
//! hurting anyone else: headers sent a byte a second are cut off at the header deadline, a
//! stalled upload at the idle timeout, ten thousand idle connections meet the connection cap
//! instead of exhausting the node's file descriptors, and a flood of writes to one group gets
//! 429 with a retry hint while the node's memory stays bounded and another group is served.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Reads until the server closes the connection (EOF or an error) or `within` passes;
/// returns whether it closed.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

fn refusals(node: &Node, limit: &str) -> f64 {
    node.scrape()
        .sum("raftnode_limit_refusals_total", &[("limit", limit)])
}

#[test]
fn slow_headers_and_stalled_bodies_are_cut_off() {
    // Plain text even in the suite's secure mode: the test writes raw HTTP bytes.
    let (_tmp, node) = plain_single_node(&[
        "--http-header-timeout-ms",
        "2000",
        "--http-idle-timeout-ms",
        "2000",
    ]);

    // Headers at one byte a second: the connection is closed at the header deadline, long
    // before the request is complete.
    let request = b"GET /healthz HTTP/1.1\r\nHost: raftnode\r\nUser-Agent: slow\r\n\r\n";
    let mut s = TcpStream::connect(node.http_addr()).unwrap();
    let started = Instant::now();
    let mut sent = 0;
    let mut closed = false;
    for b in request {
        if s.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        sent += 1;
        if closed_within(&mut s, Duration::from_secs(1)) {
            closed = true;
            break;
        }
    }
    let took = started.elapsed();
    assert!(closed, "a slow client sent its whole request in {took:?}");
    assert!(sent < request.len() / 2, "closed only after {sent} bytes");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
        "closed after {took:?}, not near the 2 s header deadline"
    );

    // A body that stops halfway: closed once no byte has moved for the idle timeout.
    let mut s = TcpStream::connect(node.http_addr()).unwrap();
    s.write_all(
        b"PUT /v1/kv/1/stalled HTTP/1.1\r\nHost: raftnode\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .unwrap();
    let started = Instant::now();
    assert!(
        closed_within(&mut s, Duration::from_secs(10)),
        "a stalled upload was kept open"
    );
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1500), "closed after {took:?}");

    // Prompt clients are unaffected.
    node.put_ok(1, "prompt", "yes");
    assert_eq!(node.get_retry(1, "prompt", "linearizable").text(), "yes");
}

/// Raises this process's soft fd limit as far as the hard limit allows; returns it.
fn raise_own_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a struct this function owns.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn ten_thousand_idle_connections_meet_the_cap_not_the_fd_limit() {
    const CAP: usize = 1000; // the default max_connections
                             // A deadline longer than the test, so that no held connection is closed under it and
                             // every refusal is the cap's.
    let (_tmp, node) = single_node(&["--http-header-timeout-ms", "120000"]);
    let pid = node.pid().unwrap();
    let before = open_fds(pid);
    let want = 10_000usize;
    let can = (raise_own_fd_limit() as usize).saturating_sub(200);
    let n = want.min(can);
    assert!(
        n > 2 * CAP,
        "this machine's fd limit ({can}) is too low for the test"
    );

    let mut held = Vec::with_capacity(n);
    let mut peak = 0;
    for i in 0..n {
        match TcpStream::connect_timeout(&node.http_addr().parse().unwrap(), Duration::from_secs(5))
        {
            Ok(s) => held.push(s),
            Err(e) => panic!("connect #{i} failed: {e}"),
        }
        if i % 500 == 0 {
            peak = peak.max(open_fds(pid));
        }
    }
    peak = peak.max(open_fds(pid));
    println!(
        "{n} idle connections: node fds {before} before, peak {peak} (cap {CAP}); node alive: {}",
        node.is_running()
    );
    assert!(node.is_running(), "the node died under the connections");
    assert!(
        peak <= before + CAP + 16,
        "the node holds {peak} fds with {n} connections open: the cap of {CAP} did not hold"
    );

    // Once the idle clients leave, the node serves new ones, having counted what it refused.
    drop(held);
    assert!(
        wait_until(Duration::from_secs(20), || node.get_path("/healthz").status
            == 200),
        "the node did not serve again after the idle connections left"
    );
    // Connections still in the kernel's accept queue (tokio listens with a backlog of 1,024)
    // when the held ones left found free places: only the rest were refused.
    const BACKLOG: usize = 1024;
    let refused = refusals(&node, "http_connections");
    println!("refused {refused} of {n}");
    assert!(
        refused >= (n - CAP - BACKLOG) as f64,
        "refused {refused} of {n} connections with a cap of {CAP}"
    );
    node.put_ok(1, "after-flood", "ok");
}

#[test]
fn a_flood_of_writes_gets_429_and_other_groups_are_served() {
    let (_tmp, node) = single_node_of(&[1, 2], &["--max-inflight-proposals-per-group", "8"], &[]);
    node.put_ok(1, "warm", "v");
    node.put_ok(2, "warm", "v");

    let url = format!("{}/v1/kv/1/", node.base_url());
    let ok = AtomicUsize::new(0);
    let overloaded = AtomicUsize::new(0);
    let hinted = AtomicUsize::new(0);
    let other = AtomicUsize::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let value = vec![b'v'; 16 << 10];
    std::thread::scope(|s| {
        for t in 0..64 {
            let (url, value) = (&url, &value);
            let (ok, overloaded, hinted) = (&ok, &overloaded, &hinted);
            s.spawn(move || {
                let client = http_client(Duration::from_secs(30));
                for i in 0..40 {
                    let r = client
                        .put(format!("{url}flood-{t}-{i}"))
                        .body(value.clone())
                        .send();
                    match r {
                        Ok(r) if r.status().as_u16() == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) if r.status().as_u16() == 429 => {
                            overloaded.fetch_add(1, Ordering::Relaxed);
                            if r.headers().get("retry-after").is_some() {
                                hinted.fetch_add(1, Ordering::Relaxed);
                            }
                            let body: serde_json::Value = r.json().unwrap();
                            assert_eq!(body["code"], "overloaded", "{body}");
                        }
                        Ok(r) => panic!("unexpected {}", r.status()),
                        Err(e) => panic!("flood request failed: {e}"),
                    }
                }
            });
        }
        // Another group's client, meanwhile: its writes are not refused.
        s.spawn(|| {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && i < 200 {
                let r = node.put(2, &format!("calm-{i}"), "v");
                assert_eq!(r.status, 200, "group 2 refused during the flood: {r}");
                other.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        });
        // Scoped threads end with the scope; the calm client stops once the flood is done.
        while ok.load(Ordering::Relaxed) + overloaded.load(Ordering::Relaxed) < 64 * 40 {
            std::thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let (ok, overloaded, hinted, other) = (
        ok.into_inner(),
        overloaded.into_inner(),
        hinted.into_inner(),
        other.into_inner(),
    );
    let hwm = vm_hwm_mib(node.pid().unwrap());
    println!("flood: {ok} written, {overloaded} refused with 429 ({hinted} with Retry-After); group 2: {other} written; node peak RSS {hwm} MiB");
    assert!(
        overloaded > 0,
        "64 writers against a bound of 8 were never refused"
    );
    assert_eq!(hinted, overloaded, "every 429 carries Retry-After");
    assert!(ok > 0 && other > 0);
    assert!(hwm < 512, "the node's peak RSS reached {hwm} MiB");
    assert!(refusals(&node, "group_proposals") >= overloaded as f64);
}

fn vm_hwm_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb / 1024)
        .unwrap()
}
