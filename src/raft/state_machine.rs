//! openraft's state machine for one group: the embedding program's [`StateMachine`], behind its
//! codec, plus what raftnode keeps for it (the last applied log id, the membership, the client
//! sessions that make a retried write take effect once, and the snapshot file). Thin by
//! design: decode, apply, encode, commit, answer.
//!
//! State lives in the node's state engine; each applied run of entries is one atomic engine
//! commit that also carries the group's apply record and changed sessions, so the engine
//! always holds a state that matches its record. The engine is not fsynced: after a crash it
//! may hold an older state than the one applied, and the log applies the rest again. What the
//! log no longer holds, the snapshot file does (it is fsynced before openraft may purge the
//! log behind it), so the start rule is: restore from the snapshot file when the engine has
//! no record of the group, or a record older than the file; otherwise the engine is current.
//!
//! [`StateMachine`]: crate::StateMachine

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use crate::raft::sessions::{Seen, Sessions};
use crate::raft::snapshot_data::{EngineView, SnapshotData};
use crate::raft::types::{
    GroupId, LogId, Reply, RequestId, SnapshotMeta, StoredMembership, TypeConfig,
};
use crate::state::{Batch, Reader};
use crate::state_machine::ErasedStateMachine;
use crate::storage::engine::{key, Engine, WriteSet, TAG_DATA, TAG_RECORD, TAG_SESSION};
use crate::storage::snapshot_file::SnapshotFile;
use crate::storage::snapshot_payload::{invalid, read_pairs, Payload};
use crate::storage::Storage;

/// The applied state of one group, as kept in memory next to the engine.
struct Applied {
    machine: Box<dyn ErasedStateMachine>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// Client requests applied lately, with their replies: a copy is answered, not applied.
    sessions: Sessions,
}

struct Shared {
    group: GroupId,
    snapshot_dir: PathBuf,
    engine: Engine,
    state: RwLock<Applied>,
    /// Whether a snapshot was built or installed (or a file of one is on disk): until then
    /// there is no current snapshot, as openraft expects.
    has_snapshot: AtomicBool,
    /// The last log id the snapshot file covers, if there is one. Held while the file is
    /// replaced or removed: an install and a build race (openraft builds on its own task),
    /// and a build must never remove a file newer than the state it made durable.
    current: Mutex<Option<LogId>>,
}

/// One group's openraft instance, with this adapter as its state machine.
pub type Raft = openraft::Raft<TypeConfig, SmAdapter>;

/// A snapshot: its metadata and its data.
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotData>;

/// A normal entry waiting for its batch: its log id, its command, its request, and who waits
/// for it.
type Pending = (
    LogId,
    Vec<u8>,
    Option<RequestId>,
    Option<openraft::storage::ApplyResponder<TypeConfig>>,
);

/// The group's apply record in the engine: what its data there reflects.
#[derive(Serialize, Deserialize)]
struct ApplyRecord {
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// What a snapshot file's metadata section holds: openraft's metadata and the session table,
/// under a tag that names the payload's format.
#[derive(Serialize, Deserialize)]
struct FileMeta {
    tag: String,
    meta: SnapshotMeta,
    sessions: Sessions,
}

/// The payload is the group's keys and values, as [`write_pairs`] frames them.
const FILE_META_TAG: &str = "raftnode-snapshot-meta-3";
/// Files of earlier versions: the payload is what the built-in KV store wrote itself (a count,
/// then MessagePack pairs of a string key and a byte value). Files without a tag at all (only
/// openraft's metadata) have the same payload.
const FILE_META_TAG_2: &str = "raftnode-snapshot-meta-2";

/// Pairs gathered per engine commit while a snapshot is restored.
const RESTORE_BATCH_BYTES: usize = 4 << 20;

/// A group's state machine as openraft sees it. Clones share the state.
#[derive(Clone)]
pub struct SmAdapter {
    shared: Arc<Shared>,
}

fn meta_bytes(meta: &SnapshotMeta, sessions: &Sessions) -> io::Result<Vec<u8>> {
    let file_meta = FileMeta {
        tag: FILE_META_TAG.to_string(),
        meta: meta.clone(),
        sessions: sessions.clone(),
    };
    rmp_serde::to_vec(&file_meta).map_err(io::Error::other)
}

fn decode_file_meta(file: &SnapshotFile) -> io::Result<(SnapshotMeta, Sessions, Payload)> {
    let bytes = file.meta()?;
    if let Ok(m) = rmp_serde::from_slice::<FileMeta>(&bytes) {
        match m.tag.as_str() {
            FILE_META_TAG => return Ok((m.meta, m.sessions, Payload::Pairs)),
            FILE_META_TAG_2 => return Ok((m.meta, m.sessions, Payload::KvCountedPairs)),
            _ => {}
        }
    }
    let legacy = rmp_serde::from_slice::<SnapshotMeta>(&bytes);
    legacy
        .map(|m| (m, Sessions::default(), Payload::KvCountedPairs))
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: undecodable snapshot metadata: {e}",
                    file.path().display()
                ),
            )
        })
}

/// Runs blocking file work on the blocking pool, as a task of the current owner.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    crate::ledger::spawn_blocking_current(f)
        .await
        .map_err(io::Error::other)?
}

fn record_key(group: GroupId) -> Vec<u8> {
    key(group, TAG_RECORD, &[])
}

fn session_key(group: GroupId, client: u64) -> Vec<u8> {
    key(group, TAG_SESSION, &client.to_be_bytes())
}

/// Adds the group's apply record, as `st` has it, to `set`.
fn put_record(engine: &Engine, group: GroupId, set: &mut WriteSet, st: &Applied) -> io::Result<()> {
    let record = ApplyRecord {
        last_applied: st.last_applied,
        membership: st.membership.clone(),
    };
    let bytes = rmp_serde::to_vec(&record).map_err(io::Error::other)?;
    set.put(engine, record_key(group), bytes);
    Ok(())
}

/// Adds the sessions of `clients`, as `sessions` has them (absent: forgotten), to `set`.
fn put_sessions(
    engine: &Engine,
    group: GroupId,
    set: &mut WriteSet,
    sessions: &Sessions,
    clients: impl IntoIterator<Item = u64>,
) -> io::Result<()> {
    for client in clients {
        match sessions.encode_client(client) {
            Some(bytes) => {
                let bytes = bytes.map_err(io::Error::other)?;
                set.put(engine, session_key(group, client), bytes)
            }
            None => set.delete(engine, session_key(group, client)),
        }
    }
    Ok(())
}

/// Replaces the group's state in the engine with a snapshot file's. The group's record goes
/// first (clearing walks its keys in order) and comes back last, so a crash part-way leaves a
/// group without a record, which the next start restores from the file again. Blocking.
fn restore_into_engine(
    engine: &Engine,
    group: GroupId,
    file: &SnapshotFile,
    payload: Payload,
    st: &Applied,
) -> io::Result<()> {
    engine.clear_group(group)?;
    let mut set = engine.batch()?;
    file.read_payload(|input| {
        read_pairs(input, payload, |k, v| {
            set.put(engine, key(group, TAG_DATA, &k), v);
            if set.bytes() >= RESTORE_BATCH_BYTES {
                engine.commit(std::mem::replace(&mut set, engine.batch()?))?;
            }
            Ok(())
        })
    })?;
    let clients: Vec<u64> = st.sessions.clients().collect();
    put_sessions(engine, group, &mut set, &st.sessions, clients)?;
    put_record(engine, group, &mut set, st)?;
    engine.commit(set)
}

impl Shared {
    /// The current snapshot: a view of the state as it is now, which is at or past the last
    /// one built or installed. Views are taken with the group's writes paused, so that each
    /// matches its metadata.
    fn current_view(&self, st: &Applied) -> io::Result<Snapshot> {
        let meta = SnapshotMeta {
            last_log_id: st.last_applied,
            last_membership: st.membership.clone(),
        };
        let view = EngineView {
            view: self.engine.view()?,
            group: self.group,
            dir: self.snapshot_dir.clone(),
            meta: meta_bytes(&meta, &st.sessions)?,
        };
        Ok(Snapshot {
            meta,
            snapshot: SnapshotData::View(view),
        })
    }

    /// Removes the snapshot file once the engine holds its state durably: `upto` is what the
    /// engine was just synced at. A file that covers more (an install that overtook the
    /// build) stays, for the next start to restore from. Blocking.
    fn drop_file_covered_by(&self, upto: Option<LogId>) -> io::Result<()> {
        let mut current = lock(&self.current);
        if current.is_some() && *current <= upto {
            crate::storage::snapshot_file::remove(&self.snapshot_dir, self.group)
                .map_err(io::Error::other)?;
            *current = None;
        }
        Ok(())
    }
}

impl SmAdapter {
    /// Opens group `group`'s state machine over the node's state engine, restoring it from
    /// the group's snapshot file when the engine's state is missing or older (see the module
    /// header). Blocking: it may read a file of any size.
    pub(crate) fn open(
        group: GroupId,
        storage: &Storage,
        machine: Box<dyn ErasedStateMachine>,
    ) -> io::Result<SmAdapter> {
        let engine = storage.engine().clone();
        let snapshot_dir = storage.snapshot_dir().to_path_buf();
        let record =
            match engine.get(&record_key(group))? {
                Some(bytes) => Some(rmp_serde::from_slice::<ApplyRecord>(&bytes).map_err(|e| {
                    invalid(format!("group {group}: undecodable apply record: {e}"))
                })?),
                None => None,
            };
        let file = SnapshotFile::open(&snapshot_dir, group)?;
        let mut st = Applied {
            machine,
            last_applied: None,
            membership: StoredMembership::default(),
            sessions: Sessions::default(),
        };
        let mut current = None;
        let mut from_file = false;
        if let Some(file) = &file {
            let (meta, sessions, payload) = decode_file_meta(file)?;
            current = meta.last_log_id;
            if record
                .as_ref()
                .is_none_or(|r| r.last_applied < meta.last_log_id)
            {
                file.verify()?;
                st.last_applied = meta.last_log_id;
                st.membership = meta.last_membership;
                st.sessions = sessions;
                restore_into_engine(&engine, group, file, payload, &st)?;
                from_file = true;
                tracing::info!(
                    group,
                    applied = ?st.last_applied,
                    "state restored from the snapshot file"
                );
            }
        }
        if !from_file {
            match record {
                Some(r) => {
                    st.last_applied = r.last_applied;
                    st.membership = r.membership;
                    for pair in engine.scan(group, TAG_SESSION, &[]) {
                        let (client, bytes) = pair?;
                        let client = <[u8; 8]>::try_from(client.as_slice())
                            .map_err(|_| invalid(format!("group {group}: a bad session key")))?;
                        st.sessions
                            .load_client(u64::from_be_bytes(client), &bytes)
                            .map_err(|e| invalid(format!("group {group}: a bad session: {e}")))?;
                    }
                }
                // Nothing applied: whatever the engine holds of the group is the leftover of
                // an erased replica, or of a purge cut short.
                None => {
                    engine.clear_group(group)?;
                }
            }
        }
        st.machine.restored(&Reader::new(&engine, group))?;
        Ok(SmAdapter {
            shared: Arc::new(Shared {
                group,
                snapshot_dir,
                engine,
                state: RwLock::new(st),
                has_snapshot: AtomicBool::new(file.is_some()),
                current: Mutex::new(current),
            }),
        })
    }

    /// Runs `f` on the state machine and its state, sharing them with other readers.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&dyn ErasedStateMachine, &Reader<'_>) -> T) -> T {
        let reader = Reader::new(&self.shared.engine, self.shared.group);
        f(self.state().machine.as_ref(), &reader)
    }

    fn state(&self) -> RwLockReadGuard<'_, Applied> {
        // Poisoning means a panic inside the program's state machine; its state is whatever
        // the panic left, as with any other bug in it. Reads go on rather than panic in turn.
        self.shared.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn state_mut(&self) -> RwLockWriteGuard<'_, Applied> {
        self.shared.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Commits the apply record alone: after entries that change no data (blank and
    /// membership entries).
    fn commit_record(&self) -> io::Result<()> {
        let (engine, group) = (&self.shared.engine, self.shared.group);
        let st = self.state();
        let mut set = engine.batch()?;
        put_record(engine, group, &mut set, &st)?;
        engine.commit(set)
    }

    /// Applies one run of normal entries, commits it with the apply record, and answers the
    /// responders. A copy of a request applied before (here or earlier in the run) is
    /// answered with the first reply and not applied again; every replica decides alike, from
    /// the log alone.
    fn apply_run(&self, run: &mut Vec<Pending>) -> io::Result<()> {
        if run.is_empty() {
            return Ok(());
        }
        let (engine, group) = (&self.shared.engine, self.shared.group);
        let replies = {
            let mut guard = self.state_mut();
            let st = &mut *guard;
            let mut answers: Vec<Answer> = Vec::with_capacity(run.len());
            let mut batch = Vec::with_capacity(run.len());
            let mut wanted = Vec::with_capacity(run.len());
            let mut in_run: HashMap<(u64, u64), usize> = HashMap::new();
            for (id, command, request, responder) in run.iter() {
                let seen = match request {
                    Some(r) => match in_run.get(&(r.client, r.seq)) {
                        Some(&at) => Some(Answer::SameAs(at)),
                        None => match st.sessions.check(r) {
                            Seen::New => None,
                            Seen::Answered(reply) => Some(Answer::Known(reply)),
                            Seen::Forgotten => Some(Answer::Known(Reply::default())),
                        },
                    },
                    None => None,
                };
                answers.push(seen.unwrap_or_else(|| {
                    if let Some(r) = request {
                        in_run.insert((r.client, r.seq), batch.len());
                    }
                    // A request's reply is kept on every replica, waited for or not.
                    wanted.push(responder.is_some() || request.is_some());
                    batch.push((id.index, command.as_slice()));
                    Answer::Applied(batch.len() - 1)
                }));
            }
            let mut writes = Batch::new(engine, group);
            let applied = st.machine.apply(batch, &wanted, &mut writes).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("group {group}: the state machine failed: {e}"),
                )
            })?;
            let mut touched = BTreeSet::new();
            for ((id, _, request, _), answer) in run.iter().zip(&answers) {
                if let (Some(r), Answer::Applied(at)) = (request, answer) {
                    let reply = Reply(applied.get(*at).cloned().unwrap_or_default());
                    touched.extend(st.sessions.record(r, id.index, reply));
                    touched.insert(r.client);
                }
            }
            if let Some((id, _, _, _)) = run.last() {
                st.last_applied = Some(*id);
            }
            let mut set = writes.into_writes()?;
            put_sessions(engine, group, &mut set, &st.sessions, touched)?;
            put_record(engine, group, &mut set, st)?;
            engine.commit(set)?;
            answers
                .into_iter()
                .map(|a| match a {
                    Answer::Applied(at) | Answer::SameAs(at) => {
                        Reply(applied.get(at).cloned().unwrap_or_default())
                    }
                    Answer::Known(reply) => reply,
                })
                .collect::<Vec<_>>()
        };
        for ((_, _, _, responder), reply) in run.drain(..).zip(replies) {
            if let Some(r) = responder {
                r.send(reply);
            }
        }
        Ok(())
    }
}

/// How an entry of a run is answered.
enum Answer {
    /// By the state machine: its reply at this position of the batch.
    Applied(usize),
    /// As an earlier copy in the same run, applied at this position.
    SameAs(usize),
    /// From the session table.
    Known(Reply),
}

/// A span for applying `traces` (the sampled proposals of a batch): a child of the first
/// one's proposal, linked to the others. Untraced batches get none.
fn apply_span(group: GroupId, first_index: u64, traces: &[String]) -> tracing::Span {
    let Some(first) = traces.first() else {
        return tracing::Span::none();
    };
    let span = tracing::info_span!("raft.apply", group, raft.index = first_index);
    crate::otel::propagation::adopt_traceparent(&span, first);
    for tp in traces.iter().skip(1).take(31) {
        crate::otel::propagation::link_traceparent(&span, tp);
    }
    span
}

impl RaftSnapshotBuilder<TypeConfig> for SmAdapter {
    type SnapshotData = SnapshotData;

    /// Makes the state durable up to the last applied entry, so that openraft may purge the
    /// log behind it, and answers a view of it; no copy of the state is written (see
    /// `snapshot_data.rs`).
    #[tracing::instrument(name = "raft.build_snapshot", skip(self), fields(group = self.shared.group))]
    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let snapshot = {
            let st = self.state();
            self.shared.current_view(&st)?
        };
        let shared = self.shared.clone();
        let upto = snapshot.meta.last_log_id;
        blocking(move || {
            shared.engine.sync()?;
            shared.has_snapshot.store(true, Ordering::Release);
            shared.drop_file_covered_by(upto)
        })
        .await?;
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for SmAdapter {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let st = self.state();
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + Send,
    {
        // Consecutive normal entries go to the state machine as one batch; blank and membership
        // entries end a batch, so that the applied index always follows the log order.
        let mut run = Vec::new();
        let mut traces = Vec::new();
        let mut first_index = 0;
        // Whether the record moved past the last commit (blank or membership entries).
        let mut record_moved = false;
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            match entry.payload {
                EntryPayload::Normal(p) => {
                    if run.is_empty() {
                        first_index = entry.log_id.index;
                    }
                    traces.extend(p.trace);
                    run.push((entry.log_id, p.command, p.request, responder));
                }
                other => {
                    self.apply_run(&mut run)?;
                    let mut st = self.state_mut();
                    st.last_applied = Some(entry.log_id);
                    if let EntryPayload::Membership(m) = other {
                        st.membership = StoredMembership::new(Some(entry.log_id), m);
                    }
                    drop(st);
                    record_moved = true;
                    if let Some(r) = responder {
                        r.send(Reply::default());
                    }
                }
            }
        }
        // Applying a traced write is part of its trace, on the leader and on followers.
        let span = apply_span(self.shared.group, first_index, &traces);
        let _entered = span.enter();
        if run.is_empty() {
            if record_moved {
                self.commit_record()?;
            }
            return Ok(());
        }
        self.apply_run(&mut run)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let this = self.clone();
        let meta = meta.clone();
        let shared = self.shared.clone();
        blocking(move || {
            // A view comes from another engine in this process (openraft's storage suite):
            // through a file, as from a leader.
            let mut snapshot = snapshot.into_file()?;
            if snapshot.path().parent() != Some(shared.snapshot_dir.as_path()) {
                snapshot = snapshot.copy_into(&shared.snapshot_dir, shared.group)?;
            }
            snapshot.verify()?;
            let (_, sessions, payload) = decode_file_meta(&snapshot)?;
            // Current first: if the restore below fails or the process dies, the next start
            // restores from this file, which is where the log now begins.
            {
                let mut current = lock(&shared.current);
                snapshot.commit(&shared.snapshot_dir, shared.group)?;
                *current = meta.last_log_id;
                shared.has_snapshot.store(true, Ordering::Release);
            }
            let mut guard = this.state_mut();
            let st = &mut *guard;
            st.last_applied = meta.last_log_id;
            st.membership = meta.last_membership;
            st.sessions = sessions;
            restore_into_engine(&shared.engine, shared.group, &snapshot, payload, st)?;
            st.machine
                .restored(&Reader::new(&shared.engine, shared.group))
        })
        .await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        if !self.shared.has_snapshot.load(Ordering::Acquire) {
            return Ok(None);
        }
        let st = self.state();
        self.shared.current_view(&st).map(Some)
    }
}

/// Poisoning means a panic while the snapshot file was replaced or removed; the value is a
/// log id that the file on disk either matches or trails, never passes, so it stays usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{KvCommand, KvStore};
    use crate::raft::types::Proposal;
    use crate::state_machine::{codec, Typed};
    use openraft::entry::RaftEntry;
    use openraft::testing::{blank_ent, log_id, membership_ent};
    use std::collections::BTreeSet;
    use std::path::Path;

    fn put(index: u64, key: &str, value: &str) -> crate::raft::types::Entry {
        let command = codec::encode(&KvCommand::Put {
            key: key.into(),
            value: value.into(),
        })
        .unwrap();
        RaftEntry::new_normal(
            log_id::<TypeConfig>(1, 1, index),
            Proposal {
                command,
                trace: None,
                request: None,
            },
        )
    }

    /// A node's storage (the WAL and the state engine) in a directory of its own.
    struct Node {
        storage: Storage,
        _owner: crate::ledger::Owner,
    }

    fn storage(dir: &Path) -> Node {
        let owner = crate::ledger::Ledger::new().root(crate::ledger::OwnerKind::Storage, "t");
        let (storage, _) = Storage::open(
            crate::storage::StorageOptions {
                dir: dir.to_path_buf(),
                segment_bytes: 1 << 20,
                checkpoint_bytes: 4 << 20,
                cache_bytes: 1 << 20,
                engine: crate::storage::engine::EngineOptions {
                    threads: 1,
                    ..Default::default()
                },
            },
            &owner,
        )
        .unwrap();
        Node {
            storage,
            _owner: owner,
        }
    }

    fn adapter(node: &Node) -> SmAdapter {
        SmAdapter::open(7, &node.storage, Box::new(Typed(KvStore))).unwrap()
    }

    /// Closes a node's storage as a stop does, so that the directory can open again.
    async fn close(node: Node) {
        assert!(node.storage.close(std::time::Duration::from_secs(5)).await);
    }

    fn value(sm: &SmAdapter, key: &str) -> Option<String> {
        sm.read(|_, state| state.get(key.as_bytes()).unwrap())
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    async fn apply(sm: &mut SmAdapter, entries: Vec<crate::raft::types::Entry>) {
        let items = entries.into_iter().map(|e| Ok((e, None)));
        sm.apply(futures::stream::iter(items)).await.unwrap();
    }

    #[tokio::test]
    async fn batches_follow_the_log_order_across_membership_entries() {
        let dir = tempfile::tempdir().unwrap();
        let node = storage(dir.path());
        let mut sm = adapter(&node);
        apply(
            &mut sm,
            vec![
                blank_ent::<TypeConfig>(1, 1, 1),
                put(2, "a", "1"),
                membership_ent::<TypeConfig>(1, 1, 3, vec![BTreeSet::from([1, 2])]),
                put(4, "a", "2"),
                put(5, "b", "3"),
            ],
        )
        .await;
        let (applied, membership) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(5));
        assert_eq!(membership.log_id().map(|l| l.index), Some(3));
        assert_eq!(value(&sm, "a").as_deref(), Some("2"));
        assert_eq!(value(&sm, "b").as_deref(), Some("3"));
        // The engine holds what was applied, with its record: a restart without a snapshot
        // file starts from there.
        drop(sm);
        close(node).await;
        let node = storage(dir.path());
        let mut sm = adapter(&node);
        let (applied, membership) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(5));
        assert_eq!(membership.log_id().map(|l| l.index), Some(3));
        assert_eq!(value(&sm, "a").as_deref(), Some("2"));
    }

    #[tokio::test]
    async fn a_snapshot_restores_on_another_member_and_at_restart() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (na, nb) = (storage(a.path()), storage(b.path()));
        let mut leader = adapter(&na);
        apply(&mut leader, vec![put(1, "k", "v"), put(2, "j", "w")]).await;
        let built = leader.build_snapshot().await.unwrap();
        assert_eq!(built.meta.last_log_id.map(|l| l.index), Some(2));
        // Writes after the view was taken are not in it.
        apply(&mut leader, vec![put(3, "k", "later")]).await;
        let mut follower = adapter(&nb);
        apply(&mut follower, vec![put(1, "stale", "gone")]).await;
        follower
            .install_snapshot(&built.meta, built.snapshot)
            .await
            .unwrap();
        assert_eq!(value(&follower, "k").as_deref(), Some("v"));
        // The install replaced the whole state.
        assert_eq!(value(&follower, "stale"), None);
        // The leader's current snapshot is its state as it is now, past the one it built.
        let current = leader.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta.last_log_id.map(|l| l.index), Some(3));
        // A restart finds the installed state in the engine.
        drop(follower);
        close(nb).await;
        let nb = storage(b.path());
        let reopened = adapter(&nb);
        assert_eq!(value(&reopened, "j").as_deref(), Some("w"));
        let (applied, _) = reopened.clone().applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(2));
    }

    /// The engine is not fsynced between snapshots: after a crash it may hold less than was
    /// applied, or nothing. An installed snapshot file then stands in for what the log no
    /// longer holds.
    #[tokio::test]
    async fn an_engine_behind_its_snapshot_file_is_restored_from_the_file() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (na, nb) = (storage(a.path()), storage(b.path()));
        let mut leader = adapter(&na);
        apply(&mut leader, vec![put(1, "k", "v1"), put(2, "j", "w")]).await;
        let built = leader.build_snapshot().await.unwrap();
        let mut sm = adapter(&nb);
        sm.install_snapshot(&built.meta, built.snapshot)
            .await
            .unwrap();
        apply(&mut sm, vec![put(3, "k", "v3")]).await;
        // A lost engine: the group's keys and record are gone, the file stays.
        nb.storage.engine().clear_group(7).unwrap();
        drop(sm);
        let mut sm = adapter(&nb);
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(2));
        assert_eq!(value(&sm, "k").as_deref(), Some("v1"));
        // An engine ahead of the file is kept as it is.
        apply(&mut sm, vec![put(3, "k", "v3")]).await;
        drop(sm);
        let sm = adapter(&nb);
        assert_eq!(value(&sm, "k").as_deref(), Some("v3"));
    }

    /// Snapshot files of earlier versions hold the KV store's own encoding; a node upgraded
    /// in place restores from them.
    #[tokio::test]
    async fn a_snapshot_file_of_the_earlier_format_restores() {
        let dir = tempfile::tempdir().unwrap();
        let node = storage(dir.path());
        let meta = SnapshotMeta {
            last_log_id: Some(log_id::<TypeConfig>(1, 1, 9)),
            last_membership: StoredMembership::default(),
        };
        let file_meta = (FILE_META_TAG_2, &meta, Sessions::default());
        let bytes = rmp_serde::to_vec(&file_meta).unwrap();
        SnapshotFile::write(node.storage.snapshot_dir(), 7, &bytes, |out| {
            out.write_all(&2u64.to_le_bytes())?;
            for (k, v) in [("a", "1"), ("b", "2")] {
                rmp_serde::encode::write(&mut *out, &(k, serde_bytes::Bytes::new(v.as_bytes())))
                    .map_err(io::Error::other)?;
            }
            Ok(())
        })
        .unwrap();
        let mut sm = adapter(&node);
        assert_eq!(value(&sm, "b").as_deref(), Some("2"));
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(9));
    }

    fn put_as(index: u64, key: &str, value: &str, seq: u64) -> crate::raft::types::Entry {
        let mut e = put(index, key, value);
        if let EntryPayload::Normal(p) = &mut e.payload {
            p.request = Some(RequestId {
                client: 42,
                seq,
                first_open: 0,
            });
        }
        e
    }

    /// A put proposed again after its outcome was lost, with another write in between: the
    /// copy, in the same batch or a later one, and after a restart from a snapshot, is not
    /// applied again (which would take the key back to the first value: v1, v2, v1).
    #[tokio::test]
    async fn a_copy_of_a_request_is_answered_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let node = storage(dir.path());
        let mut sm = adapter(&node);
        apply(
            &mut sm,
            vec![
                put_as(1, "k", "v1", 0),
                put(2, "k", "v2"),
                put_as(3, "k", "v1", 0),
            ],
        )
        .await;
        assert_eq!(value(&sm, "k").as_deref(), Some("v2"));
        apply(&mut sm, vec![put_as(4, "k", "v1", 0)]).await;
        assert_eq!(value(&sm, "k").as_deref(), Some("v2"));
        let first = RequestId {
            client: 42,
            seq: 0,
            first_open: 0,
        };
        let known = sm.state().sessions.check(&first);
        assert!(matches!(known, Seen::Answered(_)), "{known:?}");
        // Another request of the same client does apply.
        apply(&mut sm, vec![put_as(5, "k", "v3", 1)]).await;
        assert_eq!(value(&sm, "k").as_deref(), Some("v3"));
        // The table is kept in the engine, and travels in the snapshot.
        drop(sm);
        let mut reopened = adapter(&node);
        assert_eq!(reopened.state().sessions.check(&first), known);
        let built = reopened.build_snapshot().await.unwrap();
        let other = tempfile::tempdir().unwrap();
        let other = storage(other.path());
        let mut follower = adapter(&other);
        follower
            .install_snapshot(&built.meta, built.snapshot)
            .await
            .unwrap();
        apply(&mut follower, vec![put_as(6, "k", "v1", 0)]).await;
        assert_eq!(value(&follower, "k").as_deref(), Some("v3"));
        assert_eq!(follower.state().sessions.check(&first), known);
    }

    /// openraft builds snapshots on a task of its own, so an install from the leader can land
    /// while a build syncs. The build removes the snapshot file only when the engine holds
    /// what the file holds; an installed file newer than the build's view stays, and the next
    /// start, should the engine have lost the install, restores from it.
    #[tokio::test]
    async fn a_build_removes_only_a_file_its_durable_state_covers() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (na, nb) = (storage(a.path()), storage(b.path()));
        let mut leader = adapter(&na);
        apply(
            &mut leader,
            vec![put(1, "k", "v"), put(2, "k", "w"), put(3, "k", "x")],
        )
        .await;
        let newer = leader.build_snapshot().await.unwrap();
        // Nothing was written to build it: the state is the engine's.
        assert!(!crate::storage::snapshot_file::path(na.storage.snapshot_dir(), 7).exists());

        let mut follower = adapter(&nb);
        apply(&mut follower, vec![put(1, "k", "v"), put(2, "k", "w")]).await;
        follower
            .install_snapshot(&newer.meta, newer.snapshot)
            .await
            .unwrap();
        let file = crate::storage::snapshot_file::path(nb.storage.snapshot_dir(), 7);
        assert!(file.exists());
        // A build whose view predates the install keeps the installed file ...
        let older = Some(log_id::<TypeConfig>(1, 1, 2));
        follower.shared.drop_file_covered_by(older).unwrap();
        assert!(file.exists());
        // ... and the next start restores the install from it, even with the engine lost.
        nb.storage.engine().clear_group(7).unwrap();
        drop(follower);
        let mut reopened = adapter(&nb);
        let (applied, _) = reopened.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(3));
        assert_eq!(value(&reopened, "k").as_deref(), Some("x"));
        // A build at or past the install removes it: the engine now holds it durably.
        let current = reopened.build_snapshot().await.unwrap();
        assert_eq!(current.meta.last_log_id.map(|l| l.index), Some(3));
        assert!(!file.exists());
        // Sending writes a temporary copy, removed once it is dropped.
        let sent = current.snapshot.into_file().unwrap();
        assert!(!sent.is_empty());
        drop(sent);
        let names: Vec<String> = std::fs::read_dir(nb.storage.snapshot_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }
}
