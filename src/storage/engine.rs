//! The state engine: every group's applied state, in one embedded LSM store (fjall) shared by
//! the node, so that a node's memory follows its cache sizes and not its data.
//!
//! The log is the durable record (it is fsynced before anything is acknowledged); the engine
//! is written without an fsync of its own. Each applied batch is one atomic engine batch that
//! carries the group's apply record (last applied log id, membership) and its changed client
//! sessions together with the data, so a crash leaves a state that matches its record, only
//! older: the log behind the record is applied again. `docs/STORAGE.md` gives the figures
//! behind the choice of engine.
//!
//! Keys: a group's eight-byte id (big-endian, so a group is one contiguous range), then a tag:
//! [`TAG_RECORD`] for the apply record, [`TAG_SESSION`] and a client id for a session,
//! [`TAG_DATA`] and the state machine's own key for its data.
//!
//! The engine runs worker threads of its own (flushes and compactions). They are counted in
//! the ledger under the storage owner for as long as the engine lives, and the engine joins
//! them when its last handle drops: no fjall handle leaves this module without the
//! [`Engine`] that keeps that count.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use fjall::config::PartitioningPolicy;
use fjall::{KeyspaceCreateOptions, KvSeparationOptions, PersistMode, Readable};

use crate::ledger::{ItemGuard, Owner};
use crate::raft::types::GroupId;

/// The apply record of a group.
pub const TAG_RECORD: u8 = 0;
/// A client session of a group: the tag, then the client id (big-endian).
pub const TAG_SESSION: u8 = 1;
/// The state machine's own keys.
pub const TAG_DATA: u8 = 2;

/// The key layout this build writes, kept in the `meta` keyspace: a later layout must
/// refuse to open an older one rather than misread it.
const LAYOUT: u8 = 1;

/// Values larger than this go to blob files, out of the LSM tree, so that compactions do not
/// rewrite them (256 KiB values would otherwise be copied at every level).
const BLOB_THRESHOLD: u32 = 4 << 10;

/// Every table's index is cut into partitions, at every level. With one whole index per table
/// (the engine's default above its third level), a compaction keeps the last key of every
/// output block until the table is done, and a key longer than twenty bytes read from an input
/// block shares that whole decompressed block: tables of 64 MiB of well-compressed small values
/// then held hundreds of MiB of input blocks at once (the 1 KiB memory jumps in
/// `docs/STORAGE.md`). A partitioned index lets those keys go every few KiB of index.
/// The engine records this when it creates the keyspace; a keyspace created by an earlier
/// build keeps its whole indexes.
fn index_partitioning() -> PartitioningPolicy {
    PartitioningPolicy::all(true)
}

/// Engine tuning: its memory is the block cache plus the memtables.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Block cache, shared by every group.
    pub cache_bytes: u64,
    /// Memtable size before a flush; the engine holds at most a few at once.
    pub memtable_bytes: u64,
    /// Journal size past which memtables are flushed so that old journals can go: bounds
    /// the journal replayed at start.
    pub journal_bytes: u64,
    /// Flush and compaction threads.
    pub threads: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            cache_bytes: 32 << 20,
            memtable_bytes: 16 << 20,
            journal_bytes: 128 << 20,
            threads: 2,
        }
    }
}

/// Why the engine failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("state engine at {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: fjall::Error,
    },
    #[error("state engine at {path} has key layout {found}; this build reads layout {LAYOUT}")]
    Layout { path: String, found: u8 },
}

/// The database and the ledger's count of its threads. Field order matters: the database
/// drops (and joins its threads) before the guards do. Write batches and views hold this too,
/// so the threads are counted until the last of them is gone.
struct Hold {
    db: fjall::Database,
    _threads: Vec<ItemGuard>,
}

struct Inner {
    /// The storage's fail-stop flag: set by the first failed commit.
    failed: Arc<AtomicBool>,
    state: fjall::Keyspace,
    /// Taken by [`Engine::close`].
    hold: Mutex<Option<Arc<Hold>>>,
}

/// A handle to the node's state engine; clones share it.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

fn io(e: fjall::Error) -> std::io::Error {
    match e {
        fjall::Error::Io(e) => e,
        other => std::io::Error::other(format!("state engine: {other}")),
    }
}

/// The first key of a group's range with `tag`.
pub fn key(group: GroupId, tag: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + rest.len());
    k.extend_from_slice(&group.to_be_bytes());
    k.push(tag);
    k.extend_from_slice(rest);
    k
}

impl Engine {
    /// Opens (or creates) the engine in `dir`, counting its threads under `owner`.
    /// A failed commit sets `failed`: the node then writes nothing more until it restarts.
    pub fn open(
        dir: &Path,
        opts: &EngineOptions,
        owner: &Owner,
        failed: Arc<AtomicBool>,
    ) -> Result<Engine, EngineError> {
        let path = dir.display().to_string();
        let fail = |source| EngineError::Open {
            path: path.clone(),
            source,
        };
        let threads = opts.threads.max(1);
        let db = fjall::Database::builder(dir)
            .cache_size(opts.cache_bytes)
            .max_journaling_size(opts.journal_bytes)
            .worker_threads(threads)
            .open()
            .map_err(fail)?;
        let guards = (0..threads)
            .map(|_| owner.track_foreign_thread("fjall:worker"))
            .collect();
        let memtable = opts.memtable_bytes;
        let state = db
            .keyspace("state", || {
                KeyspaceCreateOptions::default()
                    .max_memtable_size(memtable)
                    .index_block_partitioning_policy(index_partitioning())
                    .with_kv_separation(Some(
                        KvSeparationOptions::default().separation_threshold(BLOB_THRESHOLD),
                    ))
            })
            .map_err(fail)?;
        let meta = db
            .keyspace("meta", KeyspaceCreateOptions::default)
            .map_err(fail)?;
        match meta.get("layout").map_err(fail)? {
            None => meta.insert("layout", [LAYOUT]).map_err(fail)?,
            Some(v) if v.as_ref() == [LAYOUT] => {}
            Some(v) => {
                return Err(EngineError::Layout {
                    path,
                    found: v.first().copied().unwrap_or(0),
                })
            }
        }
        let hold = Hold {
            db,
            _threads: guards,
        };
        Ok(Engine {
            inner: Arc::new(Inner {
                failed,
                state,
                hold: Mutex::new(Some(Arc::new(hold))),
            }),
        })
    }

    fn hold(&self) -> std::io::Result<Arc<Hold>> {
        lock(&self.inner.hold)
            .clone()
            .ok_or_else(|| std::io::Error::other("the state engine is closed"))
    }

    /// A new batch; nothing is visible until [`Engine::commit`].
    pub fn batch(&self) -> std::io::Result<WriteSet> {
        let hold = self.hold()?;
        Ok(WriteSet {
            batch: hold.db.batch(),
            _hold: hold,
            bytes: 0,
        })
    }

    /// Commits `set` atomically. The journal is handed to the OS (so a killed process loses
    /// nothing of it) but not fsynced: the log is the durable record.
    pub fn commit(&self, set: WriteSet) -> std::io::Result<()> {
        if self.inner.failed.load(Ordering::Acquire) {
            return Err(std::io::Error::other(
                "storage failed (a write or fsync error): this node writes nothing until it \
                 restarts",
            ));
        }
        let result = set.batch.durability(Some(PersistMode::Buffer)).commit();
        result.map_err(|e| {
            // fjall poisons itself after a journal write error; the node stops writing too.
            self.inner.failed.store(true, Ordering::Release);
            tracing::error!(error = %e, "state engine commit failed: storage stops writing");
            io(e)
        })
    }

    /// One key of the live state.
    pub fn get(&self, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        Ok(self.inner.state.get(key).map_err(io)?.map(|v| v.to_vec()))
    }

    /// A consistent, frozen view of the whole engine, as of the last commit: each commit is
    /// atomic, so a view never holds half of one.
    pub fn view(&self) -> std::io::Result<View> {
        let hold = self.hold()?;
        Ok(View {
            snapshot: hold.db.snapshot(),
            state: self.inner.state.clone(),
            _hold: hold,
        })
    }

    /// Whether a key of the live state holds a value.
    pub fn contains(&self, key: &[u8]) -> std::io::Result<bool> {
        self.inner.state.contains_key(key).map_err(io)
    }

    /// The pairs of `group` with `tag` whose keys start with `prefix`, from the live state,
    /// as (key without the group and tag, value), in key order.
    pub fn scan(
        &self,
        group: GroupId,
        tag: u8,
        prefix: &[u8],
    ) -> impl Iterator<Item = std::io::Result<(Vec<u8>, Vec<u8>)>> + '_ {
        strip(self.inner.state.prefix(key(group, tag, prefix)))
    }

    /// Removes every key of `group`, in batches of bounded size. Not atomic: callers mark
    /// the group's record first when a crash half-way must be noticed.
    pub fn clear_group(&self, group: GroupId) -> std::io::Result<u64> {
        let mut removed = 0;
        let mut set = self.batch()?;
        for kv in self.inner.state.prefix(group.to_be_bytes()) {
            // Copied: a key read from the engine can share its whole decompressed block, and
            // the tombstone keeps its key in the memtable until a flush. Clearing a group of
            // 512 MiB kept most of its blocks in memory that way (+500 MiB resident).
            let k = kv.key().map_err(io)?.to_vec();
            set.batch.remove(&self.inner.state, k);
            removed += 1;
            if set.batch.len() >= 10_000 {
                self.commit(std::mem::replace(&mut set, self.batch()?))?;
            }
        }
        self.commit(set)?;
        Ok(removed)
    }

    /// Makes everything committed so far durable (one fsync of the journal): a snapshot's
    /// point, behind which openraft may purge the log. Blocking.
    pub fn sync(&self) -> std::io::Result<()> {
        self.hold()?.db.persist(PersistMode::SyncAll).map_err(io)
    }

    /// Bytes the engine holds on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.hold()
            .ok()
            .and_then(|h| h.db.disk_space().ok())
            .unwrap_or(0)
    }

    /// Makes what was committed durable, then lets the engine go: its threads end when the
    /// last batch or view in flight is gone. Blocking. The sync spares the next start most
    /// of the log it would otherwise apply again.
    pub fn close(&self) -> std::io::Result<()> {
        let Some(hold) = lock(&self.inner.hold).take() else {
            return Ok(());
        };
        let synced = match self.inner.failed.load(Ordering::Acquire) {
            true => Ok(()),
            false => hold.db.persist(PersistMode::SyncAll).map_err(io),
        };
        drop(hold);
        synced
    }
}

/// Strips the group id and tag from the keys of a range.
fn strip(iter: fjall::Iter) -> impl Iterator<Item = std::io::Result<(Vec<u8>, Vec<u8>)>> {
    iter.map(|kv| {
        let (k, v) = kv.into_inner().map_err(io)?;
        Ok((k.get(9..).unwrap_or_default().to_vec(), v.to_vec()))
    })
}

/// Writes gathered for one atomic commit.
pub struct WriteSet {
    batch: fjall::OwnedWriteBatch,
    _hold: Arc<Hold>,
    bytes: usize,
}

impl WriteSet {
    pub fn put(&mut self, engine: &Engine, key: Vec<u8>, value: Vec<u8>) {
        self.bytes += key.len() + value.len();
        self.batch.insert(&engine.inner.state, key, value);
    }

    pub fn delete(&mut self, engine: &Engine, key: Vec<u8>) {
        self.bytes += key.len();
        self.batch.remove(&engine.inner.state, key);
    }

    /// Bytes of keys and values gathered.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// A frozen view of the engine; it keeps the engine (and its threads) alive while it lives.
pub struct View {
    snapshot: fjall::Snapshot,
    state: fjall::Keyspace,
    _hold: Arc<Hold>,
}

impl View {
    /// As [`Engine::scan`], in this view.
    pub fn scan(
        &self,
        group: GroupId,
        tag: u8,
    ) -> impl Iterator<Item = std::io::Result<(Vec<u8>, Vec<u8>)>> + '_ {
        strip(self.snapshot.prefix(&self.state, key(group, tag, &[])))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
pub mod testing {
    use crate::storage::engine::{Engine, EngineOptions};

    /// An engine in a temporary directory, for unit tests.
    pub fn temporary() -> (tempfile::TempDir, Engine) {
        let dir = tempfile::tempdir().unwrap();
        let owner = crate::ledger::Ledger::new().root(crate::ledger::OwnerKind::Storage, "test");
        let opts = EngineOptions {
            threads: 1,
            ..Default::default()
        };
        let engine = Engine::open(dir.path(), &opts, &owner, Default::default()).unwrap();
        (dir, engine)
    }
}
