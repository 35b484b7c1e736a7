//! Linearizability of the KV store under faults, checked by the harness's own checker
//! (`common/linearizability.rs`): concurrent clients put and read a few keys through every node
//! while the leader of one group is SIGKILLed and restarted and another node is frozen
//! (SIGSTOP) for longer than the election timeout, with most groups asleep (quiesced). Every
//! operation is recorded with its invocation and response times; a write that failed counts as
//! maybe applied. The checker's own table tests come first.

mod common;
use common::linearizability::{check, Kind, Op};
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---- The checker ------------------------------------------------------------------------------

fn ms(t: u64) -> Duration {
    Duration::from_millis(t)
}

fn w(client: usize, v: &str, invoke: u64, response: Option<u64>) -> Op {
    Op {
        client,
        kind: Kind::Write(v.to_string()),
        invoke: ms(invoke),
        response: response.map(ms),
    }
}

fn r(client: usize, v: Option<&str>, invoke: u64, response: u64) -> Op {
    Op {
        client,
        kind: Kind::Read(v.map(str::to_string)),
        invoke: ms(invoke),
        response: Some(ms(response)),
    }
}

#[test]
fn checker_tells_linearizable_histories_from_others() {
    let cases: Vec<(&str, Vec<Op>, bool)> = vec![
        ("empty", vec![], true),
        ("absent at first", vec![r(0, None, 0, 1)], true),
        (
            "read after write",
            vec![w(0, "a", 0, Some(1)), r(1, Some("a"), 2, 3)],
            true,
        ),
        (
            "a value nobody wrote",
            vec![w(0, "a", 0, Some(1)), r(1, Some("b"), 2, 3)],
            false,
        ),
        (
            "stale read after a newer write returned",
            vec![
                w(0, "a", 0, Some(1)),
                w(0, "b", 2, Some(3)),
                r(1, Some("a"), 4, 5),
            ],
            false,
        ),
        (
            "the old value comes back (a write applied twice)",
            vec![
                w(0, "a", 0, Some(1)),
                w(1, "b", 2, Some(3)),
                r(2, Some("b"), 4, 5),
                r(2, Some("a"), 6, 7),
            ],
            false,
        ),
        (
            "a read overlapping a write sees either value",
            vec![
                w(0, "a", 0, Some(1)),
                w(0, "b", 2, Some(10)),
                r(1, Some("a"), 3, 4),
                r(2, Some("b"), 5, 6),
            ],
            true,
        ),
        (
            "but not back again once the new one was seen",
            vec![
                w(0, "a", 0, Some(1)),
                w(0, "b", 2, Some(10)),
                r(1, Some("b"), 3, 4),
                r(2, Some("a"), 5, 6),
            ],
            false,
        ),
        (
            "concurrent writes in either order",
            vec![
                w(0, "a", 0, Some(10)),
                w(1, "b", 0, Some(10)),
                r(2, Some("a"), 11, 12),
                r(2, Some("a"), 13, 14),
            ],
            true,
        ),
        (
            "a failed write may have taken effect later",
            vec![
                w(0, "a", 0, None),
                r(1, None, 5, 6),
                r(1, Some("a"), 50, 51),
            ],
            true,
        ),
        (
            "or never",
            vec![w(0, "a", 0, None), r(1, None, 50, 51)],
            true,
        ),
        (
            "but not before it was invoked",
            vec![r(1, Some("a"), 0, 1), w(0, "a", 2, None)],
            false,
        ),
        (
            "and not undone once seen",
            vec![w(0, "a", 0, None), r(1, Some("a"), 5, 6), r(1, None, 7, 8)],
            false,
        ),
        (
            "a failed read tells nothing",
            vec![
                w(0, "a", 0, Some(1)),
                Op {
                    client: 1,
                    kind: Kind::Read(Some("zzz".into())),
                    invoke: ms(2),
                    response: None,
                },
            ],
            true,
        ),
    ];
    for (name, history, linearizable) in cases {
        let got = check(&history);
        assert_eq!(
            got.is_ok(),
            linearizable,
            "{name}: {:?}",
            got.err().map(|v| v.to_string())
        );
    }
}

/// A tiny deterministic generator, so that the checker's test needs no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A history produced by a real register: each operation takes effect at a random moment
/// inside its interval; some writes lose their answer (unknown outcome).
fn register_history(seed: u64, clients: usize, per_client: usize) -> Vec<Op> {
    let mut rng = XorShift(seed);
    // (effect time, client, is write, value, invoke, response)
    let mut planned = Vec::new();
    for c in 0..clients {
        let mut t = rng.below(5);
        for n in 0..per_client {
            let invoke = t;
            let effect = invoke + 1 + rng.below(20);
            let response = effect + 1 + rng.below(20);
            planned.push((
                effect,
                c,
                rng.below(2) == 0,
                format!("c{c}-{n}"),
                invoke,
                response,
            ));
            t = response + rng.below(3);
        }
    }
    planned.sort_by_key(|p| p.0);
    let mut register: Option<String> = None;
    planned
        .into_iter()
        .map(|(_, client, write, value, invoke, response)| {
            if write {
                register = Some(value.clone());
                let lost = rng.below(10) == 0;
                w(client, &value, invoke, (!lost).then_some(response))
            } else {
                r(client, register.as_deref(), invoke, response)
            }
        })
        .collect()
}

#[test]
fn checker_accepts_what_a_register_does_and_catches_one_stale_read() {
    for seed in 1..=10u64 {
        let mut history = register_history(seed * 7919, 5, 100);
        check(&history).unwrap_or_else(|v| panic!("seed {seed}: a real register's history: {v}"));

        // A read after everything that returns a value overwritten for sure (a later write
        // began after this one returned) cannot be ordered: values are unique.
        let end = history
            .iter()
            .map(|o| o.response.unwrap_or(o.invoke))
            .max()
            .unwrap_or_default();
        let overwritten = history.iter().find_map(|a| match (&a.kind, a.response) {
            (Kind::Write(v), Some(done)) => history
                .iter()
                .any(|b| {
                    matches!(b.kind, Kind::Write(_)) && b.response.is_some() && b.invoke > done
                })
                .then(|| v.clone()),
            _ => None,
        });
        let stale = overwritten.expect("some write overwritten");
        history.push(Op {
            client: 99,
            kind: Kind::Read(Some(stale)),
            invoke: end + ms(1),
            response: Some(end + ms(2)),
        });
        assert!(
            check(&history).is_err(),
            "seed {seed}: a stale read went unnoticed"
        );
    }
}

// ---- The cluster under faults -----------------------------------------------------------------

const GROUPS: u64 = 12;
/// The registers: (group, key). Groups 3..=12 stay idle and fall asleep.
const KEYS: [(u64, &str); 3] = [(1, "x"), (1, "y"), (2, "z")];
const CLIENTS: usize = 5;

/// One client's closed loop until `stop`: a random key, a put of a value unique in the run or a
/// linearizable read, each through the next node in turn. Returns `(key index, op)`.
fn client(
    id: usize,
    urls: Vec<String>,
    stop: Arc<AtomicBool>,
    origin: Instant,
) -> Vec<(usize, Op)> {
    let http = http_client(Duration::from_secs(3));
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ (id as u64 + 1));
    let mut out = Vec::new();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let k = rng.below(KEYS.len() as u64) as usize;
        let (group, key) = KEYS[k];
        let url = &urls[(id + n) % urls.len()];
        let path = format!("{url}/v1/kv/{group}/{key}");
        let write = rng.below(2) == 0;
        let invoke = origin.elapsed();
        let (kind, response, status) = if write {
            let value = format!("c{id}-{n}");
            let resp = send(
                &http,
                reqwest::Method::PUT,
                &path,
                Some(value.clone().into_bytes()),
                Some("application/octet-stream"),
            );
            let at = origin.elapsed();
            (
                Kind::Write(value),
                (resp.status == 200).then_some(at),
                resp.status,
            )
        } else {
            let resp = send(
                &http,
                reqwest::Method::GET,
                &format!("{path}?read=linearizable"),
                None,
                None,
            );
            let at = origin.elapsed();
            match resp.status {
                200 => (Kind::Read(Some(resp.text())), Some(at), 200),
                404 if resp.code().as_deref() == Some("key_not_found") => {
                    (Kind::Read(None), Some(at), 404)
                }
                s => (Kind::Read(None), None, s),
            }
        };
        out.push((
            k,
            Op {
                client: id,
                kind,
                invoke,
                response,
            },
        ));
        n += 1;
        if response.is_none() {
            // A node down or without a leader: do not spin on it.
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = status;
    }
    out
}

struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn leaders_agreed(cluster: &Cluster) {
    for g in 1..=GROUPS {
        cluster.leader_among(g, &cluster.live_ids());
    }
}

#[test]
fn kv_stays_linearizable_through_kill_restart_and_freeze() {
    let groups: Vec<u64> = (1..=GROUPS).collect();
    let cluster = Cluster::start(3, &groups);
    leaders_agreed(&cluster);
    // Most groups asleep before the clients start.
    for id in cluster.ids() {
        let node = cluster.node(id);
        let ok = wait_until(Duration::from_secs(40), || {
            node.scrape().sum("raftnode_groups_quiesced", &[]) >= (GROUPS - 2) as f64
        });
        assert!(
            ok,
            "node {id}: idle groups did not fall asleep\n{}",
            cluster.describe()
        );
    }

    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let urls = cluster.http_urls(&cluster.ids());
    // Scoped threads: the clients are joined however the faults below end.
    let mut ops: Vec<(usize, Op)> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|id| {
                let (urls, stop) = (urls.clone(), stop.clone());
                s.spawn(move || client(id, urls, stop, origin))
            })
            .collect();
        // Should a fault below panic, the clients still stop, and the scope can end.
        let _stop_clients = StopOnDrop(stop.clone());
        std::thread::sleep(Duration::from_secs(4));
        // SIGKILL the node leading group 1 (it leads some sleeping groups too), then restart it.
        let killed = cluster.leader_of(1);
        cluster.node(killed).sigkill();
        std::thread::sleep(Duration::from_secs(5));
        cluster.node(killed).restart();
        cluster.node(killed).wait_ready(READY_TIMEOUT);
        std::thread::sleep(Duration::from_secs(4));
        // Freeze the node leading group 2 for three election timeouts, then let it go.
        let frozen = cluster.leader_of(2);
        cluster.node(frozen).send_signal(libc::SIGSTOP);
        std::thread::sleep(Duration::from_secs(3));
        cluster.node(frozen).send_signal(libc::SIGCONT);
        std::thread::sleep(Duration::from_secs(5));
        stop.store(true, Ordering::Relaxed);
        clients
            .into_iter()
            .flat_map(|c| c.join().expect("client thread"))
            .collect()
    });

    // Every group has a leader again, and a last read of each key joins the history.
    leaders_agreed(&cluster);
    let reader = cluster.node(cluster.leader_of(1));
    for (k, (group, key)) in KEYS.iter().enumerate() {
        let invoke = origin.elapsed();
        let resp = reader.get_retry(*group, key, "linearizable");
        let kind = match resp.status {
            200 => Kind::Read(Some(resp.text())),
            404 => Kind::Read(None),
            _ => panic!("final read of group {group} key {key}: {resp}"),
        };
        ops.push((
            k,
            Op {
                client: CLIENTS,
                kind,
                invoke,
                response: Some(origin.elapsed()),
            },
        ));
    }

    let acked_writes = ops
        .iter()
        .filter(|(_, o)| matches!(o.kind, Kind::Write(_)) && o.response.is_some())
        .count();
    let reads = ops
        .iter()
        .filter(|(_, o)| matches!(o.kind, Kind::Read(_)) && o.response.is_some())
        .count();
    let unknown = ops.iter().filter(|(_, o)| o.response.is_none()).count();
    println!(
        "history: {} operations, {acked_writes} acknowledged writes, {reads} reads, {unknown} \
         without an answer",
        ops.len()
    );
    assert!(
        acked_writes >= 50 && reads >= 50,
        "too little traffic to say anything: {acked_writes} writes, {reads} reads"
    );
    for (k, (group, key)) in KEYS.iter().enumerate() {
        let history: Vec<Op> = ops
            .iter()
            .filter(|(i, _)| *i == k)
            .map(|(_, o)| o.clone())
            .collect();
        // The search recurses once per operation: give it room.
        let verdict = std::thread::scope(|s| {
            std::thread::Builder::new()
                .stack_size(256 << 20)
                .spawn_scoped(s, || check(&history).map_err(|v| v.to_string()))
                .expect("checker thread")
                .join()
                .expect("checker")
        });
        if let Err(v) = verdict {
            panic!("group {group} key {key}: {v}\n{}", cluster.describe());
        }
    }

    for id in cluster.ids() {
        let s = cluster.node(id).sigterm();
        assert!(s.success(), "node {id} exited with {s} after SIGTERM");
    }
}
