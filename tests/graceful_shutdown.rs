//! SIGTERM on a node that leads groups: it hands leadership over before it exits (so the others
//! get a new leader faster than an election timeout would allow), exits 0, and the rest of the
//! cluster keeps serving. Prints the write-unavailability window seen by clients.

mod common;
use common::*;
use std::time::{Duration, Instant};

/// Long enough that a leader elected because the old one vanished (rather than by a transfer)
/// shows up clearly later than a transferred one.
const ELECTION_MS: u64 = 2000;

#[test]
fn sigterm_transfers_leadership_then_exits_zero() {
    let groups = [1, 2, 3];
    let tuning = Tuning {
        election_timeout_ms: Some(ELECTION_MS),
        heartbeat_ms: Some(300),
        ..Tuning::default()
    };
    let cluster = Cluster::start_with(3, &groups, tuning);
    let leaders: Vec<(u64, u64)> = groups.iter().map(|&g| (g, cluster.leader_of(g))).collect();
    let victim = leaders[0].1;
    let led: Vec<u64> = leaders
        .iter()
        .filter(|(_, l)| *l == victim)
        .map(|(g, _)| *g)
        .collect();
    let others: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|&id| id != victim)
        .collect();
    println!("graceful: node {victim} leads groups {led:?}; leaders {leaders:?}");

    // One writer per led group, sending only to the nodes that stay.
    let loads: Vec<(u64, Load)> = led
        .iter()
        .map(|&g| {
            (
                g,
                Load::start(g, &format!("gs{g}"), 1, cluster.http_urls(&others)),
            )
        })
        .collect();
    for (g, load) in &loads {
        load.expect_progress(20, &format!("on group {g} before SIGTERM"));
    }

    let node = cluster.node(victim);
    let term_at = Instant::now();
    node.send_signal(libc::SIGTERM);
    let (mut moved_at, mut exited, mut saw_503) = (None, None, false);
    let deadline = term_at + EXIT_TIMEOUT;
    while (moved_at.is_none() || exited.is_none()) && Instant::now() < deadline {
        if moved_at.is_none()
            && led.iter().all(|&g| {
                cluster
                    .try_leader_among(g, &others)
                    .is_some_and(|l| l != victim)
            })
        {
            moved_at = Some(Instant::now());
        }
        if exited.is_none() {
            if let Some(status) = node.try_exit() {
                exited = Some((Instant::now(), status));
            } else if node.readyz() == 503 {
                saw_503 = true;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let Some((exited_at, status)) = exited else {
        node.sigkill();
        panic!(
            "node {victim} still running {EXIT_TIMEOUT:?} after SIGTERM\n{}",
            node.log_tail(60)
        );
    };
    let moved_at =
        moved_at.unwrap_or_else(|| panic!("leadership never moved\n{}", cluster.describe()));
    let ms = |t: Instant| t.duration_since(term_at).as_millis();
    println!(
        "graceful: new leaders seen {} ms after SIGTERM, exit {} ms after SIGTERM, readyz 503 seen: {saw_503}",
        ms(moved_at),
        ms(exited_at)
    );
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}\n{}",
        node.log_tail(60)
    );
    // Had the node just vanished, followers would wait a whole election timeout after its exit.
    assert!(
        moved_at <= exited_at + Duration::from_millis(ELECTION_MS / 2),
        "leadership moved only {} ms after exit: no transfer before shutdown?",
        moved_at.duration_since(exited_at).as_millis()
    );

    for (g, load) in &loads {
        load.expect_progress(20, &format!("on group {g} after shutdown"));
    }
    let end = Instant::now();
    for (g, load) in loads {
        let stats = load.stop();
        println!(
            "graceful: group {g} write-unavailability window {} ms; {}",
            stats.max_gap(term_at, end).as_millis(),
            stats.summary()
        );
        assert!(
            stats.hard_failures.is_empty(),
            "group {g}: {}",
            stats.summary()
        );
    }

    // The others keep serving every group.
    for &g in &groups {
        let leader = cluster.leader_among(g, &others);
        assert_ne!(leader, victim);
        for &id in &others {
            let n = cluster.node(id);
            n.put_ok(g, &format!("after-{id}"), "x");
            assert_eq!(
                n.get_retry(g, &format!("after-{id}"), "linearizable")
                    .text(),
                "x"
            );
        }
    }
}

/// A client that never speaks holds the shared gRPC server's drain open; a second SIGTERM
/// during that drain exits at once with 130 instead of waiting it out.
#[test]
fn second_signal_exits_at_once_with_130() {
    // Plain text even in the suite's secure mode: over TLS a client that never speaks never
    // finishes its handshake, and a handshake in progress does not hold the drain open.
    let (_tmp, node) = plain_single_node(&["--shutdown-grace-ms", "40000"]);
    let _silent = std::net::TcpStream::connect(node.grpc_addr()).expect("connect to gRPC port");
    std::thread::sleep(Duration::from_millis(200));
    node.send_signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        node.is_running(),
        "node exited before the second signal: the drain was not held open"
    );
    let second = Instant::now();
    node.send_signal(libc::SIGTERM);
    let status = node
        .wait_exit(Duration::from_secs(5))
        .expect("node did not exit after the second signal");
    println!(
        "second signal: exit {:?} after {} ms",
        status.code(),
        second.elapsed().as_millis()
    );
    assert_eq!(status.code(), Some(130));
}

/// An operator's transfer starts a watch that wakes the group's members if the transfer never
/// completes. A node stopped while that watch still waits must end it with its group, not wait
/// it out past the leak deadline.
#[test]
fn stop_right_after_a_transfer_leaves_no_leak() {
    // The watch waits two election timeouts: longer than the leak deadline (5 s).
    let tuning = Tuning {
        election_timeout_ms: Some(3000),
        heartbeat_ms: Some(300),
        ..Tuning::default()
    };
    let cluster = Cluster::start_with(3, &[1], tuning);
    let leader = cluster.leader_of(1);
    let to = cluster
        .ids()
        .into_iter()
        .find(|&id| id != leader)
        .unwrap_or(leader);
    let node = cluster.node(leader);
    let r = node.post_json(
        "/v1/groups/1/transfer-leader",
        &serde_json::json!({ "to": to }),
    );
    assert_eq!(r.status, 200, "transfer: {r}");
    let status = node.sigterm();
    let logs = format!("{}{}", node.run_stdout(), node.run_stderr());
    assert!(
        status.success() && !logs.contains("leak: owner stopped"),
        "node {leader} exited with {status} after a transfer and SIGTERM:\n{}",
        node.log_tail(40)
    );
}
