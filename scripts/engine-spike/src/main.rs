//! Engine spike: the state-machine write pattern of a multi-raft node on fjall and on redb.
//! Many groups apply batches of puts together with their applied index, atomically and without
//! an fsync; then: reopen time, scan of one group, delete of one group, RSS throughout.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = s.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0.0);
    pages * 4096.0 / (1u64 << 20) as f64
}

trait Engine: Send + Sync {
    fn apply(&self, g: u64, applied: u64, kvs: &[(Vec<u8>, &[u8])]);
    fn sync(&self);
    fn scan(&self, g: u64) -> (u64, u64);
    fn delete(&self, g: u64) -> u64;
}

fn key(g: u64, k: &[u8]) -> Vec<u8> {
    [&g.to_be_bytes()[..], k].concat()
}

struct Fjall {
    db: fjall::Database,
    data: fjall::Keyspace,
    meta: fjall::Keyspace,
}

impl Fjall {
    fn open(dir: &str) -> Fjall {
        use fjall::{KeyspaceCreateOptions, KvSeparationOptions};
        let db = fjall::Database::builder(dir)
            .cache_size(64 << 20)
            .max_journaling_size(128 << 20)
            .worker_threads(2)
            .open()
            .unwrap();
        let data = db
            .keyspace("data", || {
                KeyspaceCreateOptions::default()
                    .max_memtable_size(16 << 20)
                    .with_kv_separation(Some(
                        KvSeparationOptions::default().separation_threshold(8 << 10),
                    ))
            })
            .unwrap();
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default).unwrap();
        Fjall { db, data, meta }
    }
}

impl Engine for Fjall {
    fn apply(&self, g: u64, applied: u64, kvs: &[(Vec<u8>, &[u8])]) {
        let mut b = self.db.batch().durability(Some(fjall::PersistMode::Buffer));
        for (k, v) in kvs {
            b.insert(&self.data, key(g, k), *v);
        }
        b.insert(&self.meta, g.to_be_bytes(), applied.to_le_bytes());
        b.commit().unwrap();
    }
    fn sync(&self) {
        self.db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    fn scan(&self, g: u64) -> (u64, u64) {
        use fjall::Readable;
        let snap = self.db.snapshot();
        let (mut n, mut bytes) = (0, 0);
        for kv in snap.prefix(&self.data, g.to_be_bytes()) {
            let (k, v) = kv.into_inner().unwrap();
            n += 1;
            bytes += (k.len() + v.len()) as u64;
        }
        (n, bytes)
    }
    fn delete(&self, g: u64) -> u64 {
        let mut b = self.db.batch();
        let mut n = 0;
        for kv in self.data.prefix(g.to_be_bytes()) {
            b.remove(&self.data, kv.key().unwrap());
            n += 1;
            if n % 10_000 == 0 {
                b.commit().unwrap();
                b = self.db.batch();
            }
        }
        b.remove(&self.meta, g.to_be_bytes());
        b.commit().unwrap();
        n
    }
}

struct Redb {
    db: redb::Database,
    last_durable: std::sync::Mutex<Instant>,
}

const META: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("meta");

fn table_name(g: u64) -> String {
    format!("g{g}")
}

impl Redb {
    fn open(dir: &str) -> Redb {
        std::fs::create_dir_all(dir).unwrap();
        let db = redb::Builder::new()
            .set_cache_size(64 << 20)
            .create(format!("{dir}/db.redb"))
            .unwrap();
        Redb {
            db,
            last_durable: std::sync::Mutex::new(Instant::now()),
        }
    }
}

impl Engine for Redb {
    fn apply(&self, g: u64, applied: u64, kvs: &[(Vec<u8>, &[u8])]) {
        let mut tx = self.db.begin_write().unwrap();
        // A durable commit about every second bounds what a crash rolls back.
        let durable = {
            let mut last = self.last_durable.lock().unwrap();
            if last.elapsed() > Duration::from_secs(1) {
                *last = Instant::now();
                true
            } else {
                false
            }
        };
        if !durable {
            tx.set_durability(redb::Durability::None).unwrap();
        }
        {
            let name = table_name(g);
            let def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new(&name);
            let mut t = tx.open_table(def).unwrap();
            for (k, v) in kvs {
                t.insert(k.as_slice(), *v).unwrap();
            }
            let mut m = tx.open_table(META).unwrap();
            m.insert(g, applied).unwrap();
        }
        tx.commit().unwrap();
    }
    fn sync(&self) {
        let tx = self.db.begin_write().unwrap();
        tx.commit().unwrap();
    }
    fn scan(&self, g: u64) -> (u64, u64) {
        use redb::{ReadableDatabase, ReadableTable};
        let tx = self.db.begin_read().unwrap();
        let name = table_name(g);
        let def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new(&name);
        let t = tx.open_table(def).unwrap();
        let (mut n, mut bytes) = (0, 0);
        for kv in t.iter().unwrap() {
            let (k, v) = kv.unwrap();
            n += 1;
            bytes += (k.value().len() + v.value().len()) as u64;
        }
        (n, bytes)
    }
    fn delete(&self, g: u64) -> u64 {
        let tx = self.db.begin_write().unwrap();
        let name = table_name(g);
        let def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new(&name);
        tx.delete_table(def).unwrap();
        tx.commit().unwrap();
        1
    }
}

fn open(engine: &str, dir: &str) -> Arc<dyn Engine> {
    match engine {
        "fjall" => Arc::new(Fjall::open(dir)),
        "redb" => Arc::new(Redb::open(dir)),
        other => panic!("unknown engine {other}"),
    }
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let engine = a[1].clone();
    let dir = a[2].clone();
    let groups: u64 = a[3].parse().unwrap();
    let value: usize = a[4].parse().unwrap();
    let total: u64 = a[5].parse::<u64>().unwrap() << 20;
    let batch: usize = a[6].parse().unwrap();
    let threads: u64 = 2;
    // "crash": abort right after the load, without closing the engine (kill -9 after the
    // last write); a later run with total 0 then measures the open after that crash.
    let crash = a.get(7).is_some_and(|m| m == "crash");
    if total == 0 {
        let r0 = Instant::now();
        let e = open(&engine, &dir);
        let reopen = r0.elapsed();
        let (keys, _) = e.scan(0);
        println!(
            "{engine}: open after a crash {:.2} s, RSS {:.0} MiB, group 0 has {keys} keys",
            reopen.as_secs_f64(),
            rss_mib()
        );
        return;
    }

    // Incompressible values: slices of one random buffer.
    let mut x: u64 = 0x9E3779B97F4A7C15;
    let buf: Vec<u8> = (0..(value + 4096))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let buf = Arc::new(buf);

    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mon = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_mib() as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let e = open(&engine, &dir);
    let per_thread = total / threads;
    let t0 = Instant::now();
    let puts = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (e, buf, puts) = (e.clone(), buf.clone(), puts.clone());
            std::thread::spawn(move || {
                let mut written = 0u64;
                let mut i = 0u64;
                let mut applied = vec![0u64; groups as usize];
                while written < per_thread {
                    let g = (i % (groups / threads).max(1)) * threads + t;
                    let off = (i as usize * 61) % 4096;
                    let kvs: Vec<(Vec<u8>, &[u8])> = (0..batch)
                        .map(|j| {
                            (
                                format!("k{:012}", i * batch as u64 + j as u64).into_bytes(),
                                &buf[off..off + value],
                            )
                        })
                        .collect();
                    applied[g as usize % groups as usize] += batch as u64;
                    e.apply(g, applied[g as usize % groups as usize], &kvs);
                    written += (batch * value) as u64;
                    puts.fetch_add(batch as u64, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let load = t0.elapsed();
    if crash {
        println!("{engine}: loaded {} MiB in {:.1} s, aborting", total >> 20, load.as_secs_f64());
        std::process::abort();
    }
    let n = puts.load(Ordering::Relaxed);
    let rss_loaded = rss_mib();
    let s0 = Instant::now();
    e.sync();
    let sync = s0.elapsed();
    std::thread::sleep(Duration::from_secs(5));
    let rss_settled = rss_mib();
    drop(e);
    let r0 = Instant::now();
    let e = open(&engine, &dir);
    let reopen = r0.elapsed();
    let rss_reopened = rss_mib();
    let s0 = Instant::now();
    let (keys, bytes) = e.scan(0);
    let scan = s0.elapsed();
    let d0 = Instant::now();
    e.delete(1);
    let delete = d0.elapsed();
    done.store(true, Ordering::Relaxed);
    mon.join().unwrap();
    let du = std::process::Command::new("du").args(["-sm", &dir]).output().unwrap();
    let du = String::from_utf8_lossy(&du.stdout).split_whitespace().next().unwrap_or("?").to_string();
    println!(
        "{engine} groups={groups} value={value} batch={batch} total={} MiB: load {:.1} s = {:.0} MiB/s, {:.0} puts/s; \
         final sync {:.2} s; RSS peak {} MiB, loaded {:.0}, settled {:.0}; reopen {:.2} s (RSS {:.0} MiB); \
         scan of one group {} keys {:.0} MiB in {:.2} s = {:.0} MiB/s; delete of one group {:.2} s; disk {du} MiB",
        total >> 20,
        load.as_secs_f64(),
        (total >> 20) as f64 / load.as_secs_f64(),
        n as f64 / load.as_secs_f64(),
        sync.as_secs_f64(),
        peak.load(Ordering::Relaxed),
        rss_loaded,
        rss_settled,
        reopen.as_secs_f64(),
        rss_reopened,
        keys,
        bytes as f64 / (1 << 20) as f64,
        scan.as_secs_f64(),
        bytes as f64 / (1 << 20) as f64 / scan.as_secs_f64().max(1e-9),
        delete.as_secs_f64(),
    );
}
