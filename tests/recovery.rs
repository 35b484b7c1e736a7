//! WAL recovery on restart: a torn tail (last record cut short by a crash) is truncated with a
//! warning and loses at most that record; a corrupt record in the middle stops startup with an
//! error naming the segment file and offset.

mod common;
use common::*;
use std::fs::{self, OpenOptions};

const G: u64 = 1;

fn single_node() -> Cluster {
    // Snapshots would purge the log; keep every entry in the WAL for these tests.
    let tuning = Tuning {
        snapshot_logs: Some(1_000_000),
        ..Tuning::default()
    };
    let cluster = Cluster::start_with(1, &[G], tuning);
    cluster.leader_of(G);
    cluster
}

fn key(i: usize) -> (String, String) {
    (format!("r-{i:04}"), format!("value-{i}"))
}

#[test]
fn torn_wal_tail_is_truncated_on_restart() {
    let cluster = single_node();
    let node = cluster.node(1);
    let n = 200;
    for i in 0..n {
        let (k, v) = key(i);
        node.put_ok(G, &k, v);
    }
    node.sigkill();

    let segs = wal_segments(&node.data_dir);
    let last = segs
        .iter()
        .rev()
        .find(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0) > WAL_SEGMENT_HEADER as u64)
        .unwrap_or_else(|| {
            panic!(
                "no non-empty WAL segment: {:?}",
                describe_segments(&node.data_dir)
            )
        })
        .clone();
    let bytes = fs::read(&last).expect("read last segment");
    let (records, end) = parse_wal(&bytes);
    assert!(
        end == bytes.len() && !records.is_empty(),
        "{} does not parse as whole records (parsed {} records up to {end} of {} bytes)",
        last.display(),
        records.len(),
        bytes.len()
    );
    let bad_crc = records.iter().filter(|r| !r.crc_ok).count();
    println!(
        "recovery: segments {:?}; cutting 5 bytes off {} ({} records, {bad_crc} with unexpected CRCs)",
        describe_segments(&node.data_dir),
        last.display(),
        records.len()
    );
    let file = OpenOptions::new()
        .write(true)
        .open(&last)
        .expect("open segment");
    file.set_len(bytes.len() as u64 - 5)
        .expect("truncate segment");
    file.sync_all().expect("sync");
    drop(file);

    node.restart();
    node.wait_ready(READY_TIMEOUT);
    cluster.leader_of(G);
    for i in 0..n {
        let (k, v) = key(i);
        let r = node.get_retry(G, &k, "linearizable");
        if i == n - 1 && r.status == 404 {
            println!("recovery: the last write ({k}) was in the cut record");
            continue;
        }
        assert_eq!(
            (r.status, r.text()),
            (200, v),
            "key {k} after torn-tail recovery: {r}"
        );
    }
    let output = format!("{}{}", node.run_stdout(), node.run_stderr()).to_lowercase();
    assert!(
        output.contains("truncat") || output.contains("torn"),
        "restart should warn that it truncated the WAL tail\n{}",
        node.log_tail(40)
    );
    node.put_ok(G, "after-recovery", "ok");
    assert_eq!(
        node.get_retry(G, "after-recovery", "linearizable").text(),
        "ok"
    );
}

#[test]
fn corrupt_record_mid_wal_fails_startup_naming_file_and_offset() {
    let cluster = single_node();
    let node = cluster.node(1);
    for i in 0..100 {
        let (k, v) = key(i);
        node.put_ok(G, &k, v);
    }
    let status = node.sigterm();
    assert_eq!(
        status.code(),
        Some(0),
        "clean stop: {status}\n{}",
        node.log_tail(40)
    );

    let segs = wal_segments(&node.data_dir);
    let first = segs
        .first()
        .unwrap_or_else(|| panic!("no WAL segment in {}", node.data_dir.display()))
        .clone();
    let mut bytes = fs::read(&first).expect("read first segment");
    let (records, _) = parse_wal(&bytes);
    // A record about a third into the file, with a non-empty payload and records after it.
    let more_segments = segs.len() > 1;
    let rec = records
        .iter()
        .enumerate()
        .skip(records.len() / 3)
        .find(|(i, r)| r.len >= 2 && (i + 1 < records.len() || more_segments))
        .map(|(_, r)| *r)
        .unwrap_or_else(|| {
            panic!(
                "no suitable record in {} ({} records)",
                first.display(),
                records.len()
            )
        });
    let byte = rec.offset + WAL_HEADER + rec.len / 2;
    bytes[byte] ^= 0xFF;
    fs::write(&first, &bytes).expect("write corrupted segment");
    println!(
        "recovery: flipped byte {byte} of record at {} (payload {} bytes) in {}",
        rec.offset,
        rec.len,
        first.display()
    );

    let out = run_to_exit(&node.args(), &node.envs, &node.dir, EXIT_TIMEOUT);
    println!(
        "recovery: startup on corrupt WAL: {}\nstderr:\n{}",
        out.status, out.stderr
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "startup on a corrupt WAL must exit 1: {out:?}"
    );
    let name = first
        .file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned();
    assert!(
        out.stderr.contains(&name),
        "stderr should name the segment {name}: {}",
        out.stderr
    );
    let offsets = [rec.offset, byte];
    let named = offsets.iter().any(|o| {
        let dec = o.to_string();
        out.stderr.contains(&format!("{o:#x}"))
            || out.stderr.match_indices(&dec).any(|(at, _)| {
                let before = out.stderr[..at].chars().next_back();
                let after = out.stderr[at + dec.len()..].chars().next();
                !before.is_some_and(|c| c.is_ascii_digit())
                    && !after.is_some_and(|c| c.is_ascii_digit())
            })
    });
    assert!(
        named,
        "stderr should name the offset ({} or {byte}): {}",
        rec.offset, out.stderr
    );
}
