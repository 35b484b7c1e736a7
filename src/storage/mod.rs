//! The node-wide storage engine: one WAL holds the log, vote and commit state of every group,
//! and one writer thread turns whatever the groups submitted meanwhile into one write and one
//! fsync (group commit, as in TiKV's raft-engine or Dragonboat's shared LogDB).
//!
//! [`Index`] keeps, per group, the id and WAL position of every live entry, rebuilt from the WAL
//! at start without the entries themselves; recent entries are cached in memory up to a byte
//! budget, older ones are read back from their segment. Snapshots purge the log; the WAL
//! stays bounded because a checkpoint rewrites the live state into a fresh segment and drops
//! the old ones.

pub mod engine;
pub mod policy;
pub mod record;
pub mod snapshot_file;
pub mod snapshot_payload;
pub mod wal;

use std::collections::BTreeSet;
use std::io;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use openraft::storage::IOFlushed;

use crate::ledger::Owner;
use crate::raft::types::{Entry, GroupId, LogId, TypeConfig, Vote};
pub use record::{GroupLog, Index, Record};
use wal::{RecoveryReport, Wal, WalError, WalOptions};

/// Why the storage engine could not open.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The WAL could not be recovered.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// The snapshot directory could not be cleaned up.
    #[error(transparent)]
    Snapshot(#[from] snapshot_file::SnapshotFileError),
    /// The writer thread could not start.
    #[error("cannot start the WAL writer thread: {0}")]
    Thread(io::Error),
    /// The state engine could not open.
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
}

/// What every write is refused with once storage failed.
const FAILED: &str =
    "storage failed (a write or fsync error): this node writes nothing until it restarts";

/// Tuning of the engine; defaults suit a node with a few hundred groups.
#[derive(Clone, Debug)]
pub struct StorageOptions {
    pub dir: PathBuf,
    /// Size at which the active WAL segment is sealed and a new one started.
    pub segment_bytes: u64,
    /// WAL size past which the live state is checkpointed and old segments deleted.
    pub checkpoint_bytes: u64,
    /// Bytes of log entries kept in memory; older ones are read from the WAL.
    pub cache_bytes: usize,
    /// The state engine's tuning.
    pub engine: engine::EngineOptions,
}

/// Who is waiting for a write to become durable.
enum Done {
    Nobody,
    Raft(IOFlushed<TypeConfig>),
    Waiter(tokio::sync::oneshot::Sender<io::Result<()>>),
}

impl Done {
    fn complete(self, result: &io::Result<()>) {
        let result = match result {
            Ok(()) => Ok(()),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        };
        match self {
            Done::Nobody => {}
            Done::Raft(cb) => cb.io_completed(result),
            Done::Waiter(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

struct Op {
    payloads: Vec<Vec<u8>>,
    /// The entry each payload holds, if any: the index learns where it was written.
    entries: Vec<Option<(GroupId, LogId)>>,
    /// Whether this write needs an fsync before it is complete. Commit-index updates do not:
    /// they ride along with the next synced batch.
    sync: bool,
    done: Done,
}

struct Inner {
    snapshot_dir: PathBuf,
    wal_dir: PathBuf,
    index: Mutex<Index>,
    tx: Mutex<Option<mpsc::Sender<Op>>>,
    failed: Arc<AtomicBool>,
    /// Every group's applied state.
    engine: engine::Engine,
    /// Every fsync's duration; its count is the fsync count the benchmark divides by writes.
    fsync_seconds: prometheus::Histogram,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// A handle to the engine; clones share it.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

impl Storage {
    /// Recovers the WAL under `opts.dir/wal` and starts the writer thread under `owner`.
    pub fn open(
        opts: StorageOptions,
        owner: &Owner,
    ) -> Result<(Storage, RecoveryReport), StorageError> {
        let mut index = Index::with_cache(opts.cache_bytes);
        let snapshot_dir = opts.dir.join("snapshots");
        let state_dir = opts.dir.join("state");
        for dir in [
            opts.dir.join("wal"),
            snapshot_dir.clone(),
            state_dir.clone(),
        ] {
            create_dir_durably(&dir).map_err(|source| {
                StorageError::Wal(WalError::Io {
                    path: dir.clone(),
                    source,
                })
            })?;
        }
        let wal_opts = WalOptions {
            dir: opts.dir.join("wal"),
            segment_bytes: opts.segment_bytes,
        };
        let wal_dir = wal_opts.dir.clone();
        let (wal, report) = Wal::open(wal_opts, |bytes, at| {
            let record = Record::decode(bytes).map_err(|e| format!("undecodable record: {e}"))?;
            index.apply_at(record, at);
            Ok(())
        })?;
        // Entries of older formats have no place of their own: a checkpoint gives them one.
        let rewrite = index.unplaced > 0;
        let leftovers = snapshot_file::remove_leftovers(&snapshot_dir)?;
        if leftovers > 0 {
            tracing::warn!(
                dir = %snapshot_dir.display(),
                removed = leftovers,
                "removed temporary snapshot files left by a crash"
            );
        }
        let (tx, rx) = mpsc::channel();
        let fsync_seconds = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "raftnode_storage_fsync_duration_seconds",
                "Time of one WAL fsync, which serves every write batched into it.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
        )
        .map_err(|e| StorageError::Thread(io::Error::other(e)))?;
        let failed = Arc::new(AtomicBool::new(false));
        let engine = engine::Engine::open(&state_dir, &opts.engine, owner, failed.clone())?;
        let inner = Arc::new(Inner {
            snapshot_dir,
            wal_dir,
            index: Mutex::new(index),
            tx: Mutex::new(Some(tx)),
            failed,
            engine,
            fsync_seconds,
            writer: Mutex::new(None),
        });
        let writer = Writer {
            wal,
            rx,
            inner: inner.clone(),
            checkpoint_bytes: opts.checkpoint_bytes,
            last_checkpoint: 0,
            rewrite,
            carry: None,
            unsynced: Vec::new(),
        };
        let handle = owner
            .spawn_thread("rn-wal-writer", move || writer.run())
            .map_err(StorageError::Thread)?;
        *lock(&inner.writer) = Some(handle);
        Ok((Storage { inner }, report))
    }

    pub fn snapshot_dir(&self) -> &Path {
        &self.inner.snapshot_dir
    }

    /// The state engine, which holds every group's applied state.
    pub fn engine(&self) -> &engine::Engine {
        &self.inner.engine
    }

    /// Whether a write or an fsync failed: the node then writes nothing more until it
    /// restarts (fail-stop), and refuses writes.
    pub fn is_failed(&self) -> bool {
        self.inner.failed.load(Ordering::Acquire)
    }

    pub fn fsync_histogram(&self) -> &prometheus::Histogram {
        &self.inner.fsync_seconds
    }

    /// Groups that have any durable state.
    pub fn groups(&self) -> BTreeSet<GroupId> {
        lock(&self.inner.index).groups.keys().copied().collect()
    }

    pub fn has_group(&self, group: GroupId) -> bool {
        lock(&self.inner.index).groups.contains_key(&group)
    }

    /// Whether `group`'s data was erased here (an operator's purge) and its replica has not
    /// caught up since.
    pub fn is_erased(&self, group: GroupId) -> bool {
        lock(&self.inner.index).erased.contains(&group)
    }

    /// Records that the replicas of `groups` here lost their data (the data dir was wiped):
    /// they vote for nobody until they have caught up. One durable write for all of them.
    pub async fn mark_erased(&self, groups: &[GroupId]) -> io::Result<()> {
        let records = groups.iter().map(|&group| Record::Drop { group }).collect();
        self.submit_and_wait(records).await
    }

    /// Records that `group`'s replica caught up after its data was erased.
    pub async fn rejoined(&self, group: GroupId) -> io::Result<()> {
        self.submit_and_wait(vec![Record::Rejoined { group }]).await
    }

    /// Applies `records` to the in-memory index and queues them for the writer, in one critical
    /// section so that the WAL order is the order in which the index changed.
    fn submit(&self, records: Vec<Record>, sync: bool, done: Done) -> io::Result<()> {
        /// Tells the waiter and the caller the same thing.
        fn refuse(done: Done, msg: &str) -> io::Result<()> {
            done.complete(&Err(io::Error::other(msg)));
            Err(io::Error::other(msg))
        }
        if self.inner.failed.load(Ordering::Acquire) {
            return refuse(done, FAILED);
        }
        let mut payloads = Vec::with_capacity(records.len());
        let mut entries = Vec::with_capacity(records.len());
        for r in &records {
            payloads.push(r.encode().map_err(io::Error::other)?);
            entries.push(match r {
                Record::Entry { group, entry } => Some((*group, entry.log_id)),
                _ => None,
            });
        }
        let mut index = lock(&self.inner.index);
        let tx = lock(&self.inner.tx);
        let Some(tx) = tx.as_ref() else {
            return refuse(done, "storage is closed");
        };
        // By value: the entries move into the index instead of being copied on every append.
        for r in records {
            index.apply(r);
        }
        let op = Op {
            payloads,
            entries,
            sync,
            done,
        };
        if let Err(mpsc::SendError(op)) = tx.send(op) {
            return refuse(op.done, "WAL writer has stopped");
        }
        Ok(())
    }

    async fn submit_and_wait(&self, records: Vec<Record>) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(records, true, Done::Waiter(tx))?;
        rx.await
            .map_err(|_| io::Error::other("WAL writer dropped the request"))?
    }

    pub fn with_group<T>(&self, group: GroupId, f: impl FnOnce(Option<&GroupLog>) -> T) -> T {
        f(lock(&self.inner.index).groups.get(&group))
    }

    /// Entries of `group` in `range`: from the cache, or read back from the WAL.
    #[cfg(test)]
    pub fn entries(
        &self,
        group: GroupId,
        range: impl RangeBounds<u64> + Clone,
    ) -> io::Result<Vec<Entry>> {
        self.read(group, range, usize::MAX)
    }

    /// Segment files in the WAL directory.
    #[cfg(test)]
    fn wal_segments(&self) -> usize {
        std::fs::read_dir(&self.inner.wal_dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "wal"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Bytes of log entries cached in memory.
    pub fn cached_bytes(&self) -> usize {
        lock(&self.inner.index).cached_bytes()
    }

    /// Entries of `group` from `start` up to `end` (exclusive), as many as fit in `max_bytes`
    /// by [`crate::raft::types::entry_bytes`], but at least one. When some must be read back from the
    /// WAL, the reads run on the blocking pool, under the caller's owner: a slow or stalled
    /// disk then holds up this one read and no runtime worker, whose other groups go on.
    pub async fn entries_off_task(
        &self,
        group: GroupId,
        start: u64,
        end: u64,
        max_bytes: usize,
    ) -> io::Result<Vec<Entry>> {
        let plan = self.plan(group, start..end, max_bytes)?;
        if plan.iter().all(Result::is_ok) {
            return Ok(plan.into_iter().flatten().collect());
        }
        let me = self.clone();
        crate::ledger::spawn_blocking_current(move || me.read(group, start..end, max_bytes))
            .await
            .map_err(|e| io::Error::other(format!("reading group {group}'s log: {e}")))?
    }

    /// What [`Storage::read`] needs, taken under the index lock: each entry in `range`, cached
    /// or as the place it was written, as many as fit in `max_bytes` but at least one.
    fn plan(
        &self,
        group: GroupId,
        range: impl RangeBounds<u64>,
        max_bytes: usize,
    ) -> io::Result<Vec<Result<Entry, (LogId, wal::ItemPos)>>> {
        self.with_group(group, |g| {
            let Some(g) = g else { return Ok(Vec::new()) };
            let mut plan = Vec::new();
            let mut bytes = 0;
            for s in g.entries.range(range).map(|(_, s)| s) {
                bytes += s.bytes;
                if bytes > max_bytes && !plan.is_empty() {
                    break;
                }
                plan.push(match (&s.entry, s.at) {
                    (Some(e), _) => Ok(e.clone()),
                    (None, Some(at)) => Err((s.log_id, at)),
                    (None, None) => {
                        return Err(io::Error::other(format!(
                            "log entry {} of group {group} is neither cached nor written",
                            s.log_id
                        )))
                    }
                });
            }
            Ok(plan)
        })
    }

    /// Reads under the index lock what is cached and where the rest lies, then the rest from
    /// the WAL without the lock. A checkpoint may delete a segment between the two: the read
    /// then starts over from the places the checkpoint gave.
    fn read(
        &self,
        group: GroupId,
        range: impl RangeBounds<u64> + Clone,
        max_bytes: usize,
    ) -> io::Result<Vec<Entry>> {
        for _ in 0..3 {
            let plan = self.plan(group, range.clone(), max_bytes)?;
            let mut files = SegmentFiles::new(&self.inner.wal_dir);
            let mut out = Vec::with_capacity(plan.len());
            let mut vanished = false;
            for p in plan {
                let (log_id, at) = match p {
                    Ok(e) => {
                        out.push(e);
                        continue;
                    }
                    Err(miss) => miss,
                };
                match files.get(at.seq) {
                    Ok(file) => out.push(read_entry(file, at, log_id)?),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        vanished = true;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if !vanished {
                return Ok(out);
            }
        }
        Err(io::Error::other(format!(
            "the WAL segments of group {group}'s entries were replaced under three reads in a row"
        )))
    }

    pub async fn save_vote(&self, group: GroupId, vote: Vote) -> io::Result<()> {
        self.submit_and_wait(vec![Record::Vote { group, vote }])
            .await
    }

    pub fn save_committed(&self, group: GroupId, committed: Option<LogId>) -> io::Result<()> {
        self.submit(
            vec![Record::Committed { group, committed }],
            false,
            Done::Nobody,
        )
    }

    pub fn append(
        &self,
        group: GroupId,
        entries: Vec<Entry>,
        callback: IOFlushed<TypeConfig>,
    ) -> io::Result<()> {
        let records = record::appends(group, entries);
        self.submit(records, true, Done::Raft(callback))
    }

    /// Not waited for: any later synced write (every acknowledged append) makes it durable
    /// first, and until then the truncated entries are unacknowledged anyway.
    pub fn truncate_after(&self, group: GroupId, after: Option<LogId>) -> io::Result<()> {
        self.submit(vec![Record::Truncate { group, after }], false, Done::Nobody)
    }

    pub fn purge(&self, group: GroupId, upto: LogId) -> io::Result<()> {
        self.submit(vec![Record::Purge { group, upto }], false, Done::Nobody)
    }

    /// Forgets a group's log, snapshot and applied state (an operator's `?purge=true`).
    /// The log goes first: a crash part-way leaves state without a log, which the next start
    /// of the group finds as an erased replica's leftovers and clears.
    pub async fn drop_group(&self, group: GroupId) -> io::Result<()> {
        self.submit_and_wait(vec![Record::Drop { group }]).await?;
        snapshot_file::remove(&self.inner.snapshot_dir, group).map_err(io::Error::other)?;
        // On the calling task, not the blocking pool: a pool thread outlives the purge by a
        // second, and the restart soaks read the thread count right after a purge. Clearing
        // a large group's keys does hold this worker meanwhile.
        self.inner.engine.clear_group(group)?;
        Ok(())
    }

    /// Stops accepting writes, lets the writer drain and fsync what is queued, and joins it;
    /// then syncs and lets go of the state engine (bounded by `deadline` in all). Returns
    /// whether both finished in time.
    pub async fn close(&self, deadline: Duration) -> bool {
        lock(&self.inner.tx).take();
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let finished = lock(&self.inner.writer)
                .as_ref()
                .is_none_or(|h| h.is_finished());
            if finished {
                if let Some(h) = lock(&self.inner.writer).take() {
                    let _ = h.join();
                }
                break;
            }
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let engine = self.inner.engine.clone();
        let closing = crate::ledger::spawn_blocking_current(move || engine.close());
        match tokio::time::timeout_at(until, closing).await {
            Ok(Ok(Ok(()))) => true,
            Ok(Ok(Err(e))) => {
                tracing::error!(error = %e, "the state engine did not sync at close");
                true
            }
            Ok(Err(_)) | Err(_) => false,
        }
    }
}

/// WAL segments opened for reading by place, each once per read or checkpoint.
struct SegmentFiles<'a> {
    dir: &'a Path,
    open: std::collections::HashMap<u64, std::fs::File>,
}

impl<'a> SegmentFiles<'a> {
    fn new(dir: &'a Path) -> Self {
        SegmentFiles {
            dir,
            open: std::collections::HashMap::new(),
        }
    }

    /// Segment `seq`; NotFound once a checkpoint deleted it.
    fn get(&mut self, seq: u64) -> io::Result<&std::fs::File> {
        if !self.open.contains_key(&seq) {
            let file = std::fs::File::open(wal::segment_path(self.dir, seq))?;
            self.open.insert(seq, file);
        }
        self.open
            .get(&seq)
            .ok_or_else(|| io::Error::other("segment file just opened"))
    }
}

/// The entry `log_id` from its place `at` in an open segment.
fn read_entry(file: &std::fs::File, at: wal::ItemPos, log_id: LogId) -> io::Result<Entry> {
    let bytes = wal::read_item(file, at)?;
    match Record::decode(&bytes) {
        Ok(Record::Entry { entry, .. }) if entry.log_id == log_id => Ok(entry),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "WAL segment {} at offset {} does not hold log entry {log_id}",
                at.seq, at.offset
            ),
        )),
    }
}

/// The writer thread's state: the only place that touches the WAL after open.
struct Writer {
    wal: Wal,
    rx: mpsc::Receiver<Op>,
    inner: Arc<Inner>,
    checkpoint_bytes: u64,
    last_checkpoint: u64,
    /// Whether entries recovered from older formats wait for a checkpoint to get a place.
    rewrite: bool,
    /// An op taken from the queue that did not fit in the last batch: it opens the next one.
    carry: Option<Op>,
    /// Encoded records not yet written (writes that need no fsync wait here for one that
    /// does), with the entry each holds.
    unsynced: Vec<record::Encoded>,
}

impl Op {
    fn bytes(&self) -> usize {
        self.payloads.iter().map(Vec::len).sum()
    }
}

impl Writer {
    fn run(mut self) {
        loop {
            let first = match self.carry.take() {
                Some(op) => op,
                None => match self.rx.recv() {
                    Ok(op) => op,
                    Err(_) => break,
                },
            };
            let mut batch = policy::Batch::default();
            batch.admit(first.bytes(), policy::BATCH_LIMITS);
            let mut ops = vec![first];
            while let Ok(op) = self.rx.try_recv() {
                if !batch.admit(op.bytes(), policy::BATCH_LIMITS) {
                    self.carry = Some(op);
                    break;
                }
                ops.push(op);
            }
            // Fail-stop: after the first failed write or fsync nothing more is written. A
            // batch written behind a failed one would leave a hole in a group's log on disk, or
            // a commit index past its last entry; and after a failed fsync the kernel may have
            // dropped the dirty pages, so no later fsync proves anything (the fsyncgate lesson).
            let result = if self.inner.failed.load(Ordering::Acquire) {
                Err(io::Error::other(FAILED))
            } else {
                self.write(&mut ops)
            };
            if let Err(e) = &result {
                if !self.inner.failed.swap(true, Ordering::AcqRel) {
                    tracing::error!(
                        error = %e,
                        "storage failed: this node writes nothing more until it restarts; \
                         every write it had acknowledged is on disk"
                    );
                }
            }
            for op in ops {
                op.done.complete(&result);
            }
            if result.is_ok() {
                self.maybe_checkpoint();
            }
        }
        // All senders are gone: write and fsync whatever waits before exiting.
        if !self.inner.failed.load(Ordering::Acquire) {
            if let Err(e) = self.flush() {
                self.inner.failed.store(true, Ordering::Release);
                tracing::error!(error = %e, "final WAL write failed");
            }
        }
    }

    /// Writes a batch. Recovery counts on every frame but the last being durable, so each
    /// frame is fsynced before the next is written: writes that need no fsync (commit
    /// indexes, truncations, purges) wait in `unsynced` for the next frame that is fsynced.
    fn write(&mut self, batch: &mut [Op]) -> io::Result<()> {
        for op in batch.iter_mut() {
            let entries = std::mem::take(&mut op.entries);
            self.unsynced
                .extend(std::mem::take(&mut op.payloads).into_iter().zip(entries));
        }
        let unsynced_bytes: usize = self.unsynced.iter().map(|(p, _)| p.len()).sum();
        let sync = batch.iter().any(|op| op.sync) || unsynced_bytes >= policy::UNSYNCED_BYTES;
        if !sync {
            return Ok(());
        }
        self.flush()
    }

    /// Writes what waits in `unsynced` as frames, each fsynced.
    fn flush(&mut self) -> io::Result<()> {
        let items = std::mem::take(&mut self.unsynced);
        let sizes: Vec<usize> = items.iter().map(|(p, _)| p.len()).collect();
        let mut at = 0;
        for n in policy::frames(&sizes, policy::FRAME_BYTES) {
            let frame = &items[at..at + n];
            let places = self
                .wal
                .append(frame.iter().map(|(p, _)| p.as_slice()))
                .map_err(io::Error::other)?;
            at += n;
            let took = self.wal.sync().map_err(io::Error::other)?;
            self.inner.fsync_seconds.observe(took.as_secs_f64());
            let placed = frame
                .iter()
                .zip(places)
                .filter_map(|((_, e), at)| Some(((*e)?, at)));
            lock(&self.inner.index).place(placed, false);
        }
        if items.is_empty() {
            // An append of nothing still waits for an fsync, which it gets.
            let took = self.wal.sync().map_err(io::Error::other)?;
            self.inner.fsync_seconds.observe(took.as_secs_f64());
        }
        Ok(())
    }

    /// Rewrites the live state once the WAL has grown well past both the threshold and the
    /// previous checkpoint, so that a large live state does not checkpoint on every batch.
    fn maybe_checkpoint(&mut self) {
        let total = self.wal.total_bytes();
        let due = policy::checkpoint_due(policy::WalSize {
            total_bytes: total,
            segments: self.wal.segment_count(),
            last_checkpoint_bytes: self.last_checkpoint,
            threshold_bytes: self.checkpoint_bytes,
        });
        if !due && !self.rewrite {
            return;
        }
        // The plan is made under the index lock and reads nothing; the items are read back
        // from the old segments one at a time as they are written, without the lock. Only
        // this thread deletes segments, so every planned place stays readable meanwhile.
        let plan = {
            let index = lock(&self.inner.index);
            let erased: io::Result<Vec<record::Planned>> = index
                .dump_erased()
                .iter()
                .map(|r| {
                    Ok((
                        record::Source::Bytes(r.encode().map_err(io::Error::other)?),
                        None,
                    ))
                })
                .collect();
            erased.and_then(|mut items| {
                for (g, log) in &index.groups {
                    items.extend(log.plan(*g)?);
                }
                Ok(items)
            })
        };
        let plan = match plan {
            Ok(plan) => plan,
            Err(e) => {
                // Not again until the WAL has doubled.
                self.last_checkpoint = total;
                self.rewrite = false;
                tracing::error!(error = %e, "cannot plan a WAL checkpoint; keeping old segments");
                return;
            }
        };
        let size: u64 = plan
            .iter()
            .map(|(source, _)| match source {
                record::Source::Bytes(b) => b.len() as u64 + 12,
                record::Source::At(at) => u64::from(at.len) + 12,
            })
            .sum();
        let inner = self.inner.clone();
        let keys: Vec<_> = plan.iter().map(|(_, e)| *e).collect();
        // The entries' new places are known before the old segments go, so that readers
        // look for them there.
        let moved = move |places: &[wal::ItemPos]| {
            let placed = keys
                .iter()
                .zip(places)
                .filter_map(|(e, at)| Some(((*e)?, *at)));
            lock(&inner.index).place(placed, true);
        };
        let wal_dir = self.inner.wal_dir.clone();
        let mut files = SegmentFiles::new(&wal_dir);
        let items = plan.iter().map(|(source, _)| match source {
            record::Source::Bytes(b) => Ok(std::borrow::Cow::Borrowed(b.as_slice())),
            record::Source::At(at) => files
                .get(at.seq)
                .and_then(|f| wal::read_item(f, *at))
                .map(std::borrow::Cow::Owned)
                .map_err(|e| {
                    let path = wal::segment_path(&wal_dir, at.seq);
                    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
                }),
        });
        match self.wal.checkpoint_from(items, moved) {
            Ok(()) => {
                self.last_checkpoint = size;
                self.rewrite = false;
                tracing::info!(before_bytes = total, after_bytes = size, "WAL checkpointed");
            }
            Err(e) => {
                // Not again until the WAL has doubled: each attempt rewrites the whole live
                // state. Entries of older formats wait for that one too.
                self.last_checkpoint = total;
                self.rewrite = false;
                tracing::error!(error = %e, "WAL checkpoint failed; keeping old segments")
            }
        }
    }
}

/// Creates `dir` (and its missing parents) so that it survives a crash: a new directory's
/// entry lives in its parent, which an fsync of the directory itself does not make durable.
pub fn create_dir_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durably(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    std::fs::File::open(dir)?.sync_all()?;
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    std::fs::File::open(parent.unwrap_or(Path::new(".")))?.sync_all()
}

/// Poisoning only means a panic elsewhere; the data behind these locks stays consistent because
/// every critical section is a single in-memory update.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Ledger, OwnerKind};
    use crate::raft::types::entry_bytes;
    use crate::raft::types::Proposal;
    use openraft::entry::RaftEntry;
    use openraft::testing::{blank_ent, log_id};
    use openraft::type_config::TypeConfigExt;

    fn open(dir: &Path, checkpoint_bytes: u64) -> (Storage, RecoveryReport, crate::ledger::Owner) {
        open_with_cache(dir, checkpoint_bytes, 64 << 20)
    }

    fn open_with_cache(
        dir: &Path,
        checkpoint_bytes: u64,
        cache_bytes: usize,
    ) -> (Storage, RecoveryReport, crate::ledger::Owner) {
        let owner = Ledger::new().root(OwnerKind::Storage, "test");
        let (s, r) = Storage::open(
            StorageOptions {
                dir: dir.to_path_buf(),
                segment_bytes: 4096,
                checkpoint_bytes,
                cache_bytes,
                engine: engine::EngineOptions {
                    threads: 1,
                    ..Default::default()
                },
            },
            &owner,
        )
        .unwrap();
        (s, r, owner)
    }

    fn normal(index: u64, bytes: &[u8]) -> Entry {
        Entry::new_normal(
            log_id::<TypeConfig>(1, 1, index),
            Proposal {
                command: bytes.to_vec(),
                trace: None,
                request: None,
            },
        )
    }

    /// Appends and waits for the writer's acknowledgement, as openraft does.
    async fn append(s: &Storage, group: GroupId, entries: Vec<Entry>) -> io::Result<()> {
        let (tx, rx) = TypeConfig::oneshot();
        s.append(group, entries, IOFlushed::signal(tx))?;
        rx.await.map_err(io::Error::other)?
    }

    async fn close(s: Storage, owner: crate::ledger::Owner) {
        assert!(s.close(Duration::from_secs(5)).await);
        assert!(owner.stop(Duration::from_secs(5)).await.is_none());
    }

    fn indexes(s: &Storage, group: GroupId) -> Vec<u64> {
        s.entries(group, ..)
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect()
    }

    #[tokio::test]
    async fn every_record_kind_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (s, report, owner) = open(dir.path(), 1 << 30);
        assert_eq!(report.records, 0);
        append(&s, 1, (1..=10).map(|i| normal(i, b"x")).collect())
            .await
            .unwrap();
        append(&s, 2, vec![blank_ent::<TypeConfig>(1, 1, 1)])
            .await
            .unwrap();
        let vote = openraft::Vote::new(3, 2);
        s.save_vote(1, vote).await.unwrap();
        s.save_committed(1, Some(log_id::<TypeConfig>(1, 1, 8)))
            .unwrap();
        s.truncate_after(1, Some(log_id::<TypeConfig>(1, 1, 9)))
            .unwrap();
        s.purge(1, log_id::<TypeConfig>(1, 1, 3)).unwrap();
        // Unsynced records ride on the next synced write.
        append(&s, 3, vec![blank_ent::<TypeConfig>(1, 1, 1)])
            .await
            .unwrap();
        s.drop_group(3).await.unwrap();
        close(s, owner).await;

        let (s, report, owner) = open(dir.path(), 1 << 30);
        assert!(report.records >= 7, "{report:?}");
        assert_eq!(s.groups(), BTreeSet::from([1, 2]));
        assert!(!s.has_group(3));
        assert_eq!(indexes(&s, 1), (4..=9).collect::<Vec<_>>());
        assert_eq!(indexes(&s, 2), vec![1]);
        s.with_group(1, |g| {
            let g = g.unwrap();
            assert_eq!(g.vote, Some(vote));
            assert_eq!(g.committed.map(|c| c.index), Some(8));
            assert_eq!(g.purged.map(|p| p.index), Some(3));
            assert_eq!(g.last_log_id().map(|l| l.index), Some(9));
        });
        assert_eq!(s.entries(1, 5..7).unwrap().len(), 2);
        close(s, owner).await;
    }

    /// Group 1 holds entries 1..=`n`, each with `value(index)`.
    fn read_back(s: &Storage, n: usize, value: impl Fn(u64) -> Vec<u8>) {
        let all = s.entries(1, ..).unwrap();
        assert_eq!(all.len(), n);
        for e in &all {
            let want = normal(e.log_id.index, &value(e.log_id.index));
            assert_eq!(e.payload, want.payload);
        }
    }

    /// Waits up to 10 s for `done`: the writer checkpoints after it acknowledged a write.
    async fn settle(done: impl Fn() -> bool) {
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while !done() && std::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A log sixteen times the cache: what the cache cannot hold is read back from the WAL,
    /// before and after a restart and across checkpoints, and the cache stays in its budget.
    #[tokio::test]
    async fn a_log_larger_than_the_cache_is_read_back_from_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let cache = 1 << 20;
        let value = |i: u64| vec![(i % 251) as u8; 64 << 10];
        let (s, _, owner) = open_with_cache(dir.path(), 1 << 30, cache);
        for chunk in (1..=256u64).collect::<Vec<_>>().chunks(8) {
            let entries = chunk.iter().map(|&i| normal(i, &value(i))).collect();
            append(&s, 1, entries).await.unwrap();
        }
        assert!(s.cached_bytes() <= cache, "{} cached", s.cached_bytes());
        let check = |s: &Storage| read_back(s, 256, value);
        check(&s);
        close(s, owner).await;
        // Reopened, nothing is cached; and a checkpoint moves every entry to a new segment.
        let (s, report, owner) = open_with_cache(dir.path(), 4 << 20, cache);
        assert!(report.largest_record < 1 << 20, "{report:?}");
        assert_eq!(s.cached_bytes(), 0);
        check(&s);
        // Off the task, the same entries come back from disk, bounded the same way.
        let read = s.entries_off_task(1, 1, 257, 1 << 20).await.unwrap();
        assert_eq!(read, s.read(1, 1..257, 1 << 20).unwrap());
        assert_eq!(read.len(), 15, "1 MiB of 64 KiB entries");
        append(&s, 1, vec![normal(257, &value(257))]).await.unwrap();
        // The writer checkpoints after it acknowledged the append.
        settle(|| s.wal_segments() == 1).await;
        assert_eq!(s.wal_segments(), 1, "the checkpoint replaced every segment");
        let all = s.entries(1, ..).unwrap();
        assert_eq!(all.len(), 257);
        close(s, owner).await;
        let (s, _, owner) = open_with_cache(dir.path(), 1 << 30, cache);
        assert_eq!(indexes(&s, 1), (1..=257).collect::<Vec<_>>());
        close(s, owner).await;
    }

    /// Entries recovered from a format-2 segment have no place: they stay cached (whatever
    /// the budget) until the writer's first checkpoint gives them one.
    #[tokio::test]
    async fn entries_of_format_2_get_places_at_the_first_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let value = |i: u64| vec![i as u8; 64 << 10];
        std::fs::create_dir_all(dir.path().join("wal")).unwrap();
        let old = Record::Append {
            group: 1,
            entries: (1..=5).map(|i| normal(i, &value(i))).collect(),
        };
        wal::write_version_2_segment(
            &wal::segment_path(&dir.path().join("wal"), 1),
            &[old.encode().unwrap()],
        );
        let (s, _, owner) = open_with_cache(dir.path(), 1 << 30, 0);
        assert!(s.cached_bytes() > 5 * (64 << 10), "kept without a place");
        assert_eq!(indexes(&s, 1), [1, 2, 3, 4, 5]);
        append(&s, 1, vec![normal(6, &value(6))]).await.unwrap();
        settle(|| s.cached_bytes() == 0).await;
        assert_eq!(s.cached_bytes(), 0, "every entry has a place now");
        close(s, owner).await;
        let (s, _, owner) = open_with_cache(dir.path(), 1 << 30, 0);
        read_back(&s, 6, value);
        close(s, owner).await;
    }

    #[tokio::test]
    async fn replication_reads_are_bounded_by_bytes_but_never_empty() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, owner) = open(dir.path(), 1 << 30);
        let kib = vec![7u8; 1024];
        append(&s, 1, (1..=10).map(|i| normal(i, &kib)).collect())
            .await
            .unwrap();
        let one = entry_bytes(&normal(1, &kib));
        let got = |start, end, max| -> Vec<u64> {
            s.read(1, start..end, max)
                .unwrap()
                .iter()
                .map(|e| e.log_id.index)
                .collect()
        };
        assert_eq!(got(1, 11, 3 * one), vec![1, 2, 3]);
        assert_eq!(got(1, 11, 3 * one + 1), vec![1, 2, 3]);
        assert_eq!(got(4, 6, 1 << 20), vec![4, 5]);
        // An entry larger than the bound still goes, alone.
        assert_eq!(got(2, 11, 10), vec![2]);
        assert!(got(11, 12, 1 << 20).is_empty());
        close(s, owner).await;
    }

    #[tokio::test]
    async fn groups_that_append_together_share_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, owner) = open(dir.path(), 1 << 30);
        // 50 groups append at once; the writer batches whatever is queued when it wakes.
        let appends = (1..=50u64).map(|g| {
            let s = s.clone();
            async move { append(&s, g, vec![normal(1, b"v")]).await }
        });
        for r in futures::future::join_all(appends).await {
            r.unwrap();
        }
        let fsyncs = s.fsync_histogram().get_sample_count();
        assert!((1..=50).contains(&fsyncs), "{fsyncs} fsyncs for 50 appends");
        assert_eq!(s.groups().len(), 50);
        close(s, owner).await;
    }

    #[tokio::test]
    async fn a_checkpoint_keeps_the_live_state_and_drops_old_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, owner) = open(dir.path(), 16 << 10);
        let value = vec![7u8; 512];
        for i in 1..=200u64 {
            append(&s, 1, vec![normal(i, &value)]).await.unwrap();
            if i % 20 == 0 {
                // Snapshots purge the log behind them, so the live state stays small.
                s.purge(1, log_id::<TypeConfig>(1, 1, i - 5)).unwrap();
            }
        }
        close(s, owner).await;
        let segments = std::fs::read_dir(dir.path().join("wal")).unwrap().count();
        assert!(segments < 10, "{segments} segments left after checkpoints");
        let (s, _, owner) = open(dir.path(), 16 << 10);
        assert_eq!(indexes(&s, 1), (196..=200).collect::<Vec<_>>());
        assert_eq!(
            s.entries(1, 200..).unwrap()[0].payload,
            normal(200, &value).payload
        );
        close(s, owner).await;
    }

    /// One append larger than a WAL record (openraft merges concurrent proposals, and a
    /// follower catching up appends many at once), then a checkpoint of a group log larger
    /// than a record: both used to fail and disable storage.
    #[tokio::test]
    async fn appends_and_checkpoints_past_the_record_limit() {
        let dir = tempfile::tempdir().unwrap();
        // A checkpoint is due once the WAL is past 1 MiB.
        let (s, _, owner) = open(dir.path(), 1 << 20);
        let mib = vec![3u8; 1 << 20];
        let n = (wal::MAX_RECORD_BYTES >> 20) as u64 + 16;
        append(&s, 1, (1..=n).map(|i| normal(i, &mib)).collect())
            .await
            .unwrap();
        append(&s, 2, vec![normal(1, b"small")]).await.unwrap();
        assert!(!s.is_failed());
        close(s, owner).await;
        let segments = std::fs::read_dir(dir.path().join("wal")).unwrap().count();
        // Without the checkpoint: a segment per frame of the large append, and one more.
        assert!(segments <= 2, "{segments} segments: no checkpoint");
        let (s, _, owner) = open(dir.path(), 1 << 30);
        assert_eq!(indexes(&s, 1), (1..=n).collect::<Vec<_>>());
        assert_eq!(
            s.entries(1, n..).unwrap()[0].payload,
            normal(n, &mib).payload
        );
        assert_eq!(indexes(&s, 2), vec![1]);
        close(s, owner).await;
    }

    #[tokio::test]
    async fn a_closed_engine_refuses_writes_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, owner) = open(dir.path(), 1 << 30);
        let writer = s.clone();
        close(s, owner).await;
        let err = append(&writer, 1, vec![normal(1, b"late")])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("closed"), "{err}");
    }
}
