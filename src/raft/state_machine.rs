//! openraft's state machine for one group: the embedding program's [`StateMachine`], behind its
//! codec, plus what raftnode keeps for it (the last applied log id, the membership, the client
//! sessions that make a retried write take effect once, and the snapshot file). Thin by
//! design: decode, apply, encode, answer.
//!
//! State lives in the program's state machine behind a lock that readers share; durability
//! comes from the WAL (every applied entry stays in the log until a snapshot covers it) and from
//! the snapshot file, which is fsynced before openraft may purge the log behind it.
//!
//! [`StateMachine`]: crate::StateMachine

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use crate::raft::sessions::{Seen, Sessions};
use crate::raft::types::{
    GroupId, LogId, Reply, RequestId, SnapshotMeta, StoredMembership, TypeConfig,
};
use crate::state_machine::ErasedStateMachine;
use crate::storage::snapshot_file::SnapshotFile;

/// The applied state of one group.
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
    state: RwLock<Applied>,
    /// Whether a snapshot file exists, so that asking for the current snapshot of a group that
    /// never took one costs no file I/O (and no blocking-pool thread).
    has_snapshot: AtomicBool,
    /// The last log id the current snapshot file covers, held while a snapshot is made
    /// current: a build and an install race (openraft builds on its own task), and the older
    /// of the two must never replace the newer, or the next start could not re-apply the log.
    current: Mutex<Option<LogId>>,
}

/// One group's openraft instance, with this adapter as its state machine.
pub type Raft = openraft::Raft<TypeConfig, SmAdapter>;

/// A snapshot: its metadata and its file.
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>;

/// A normal entry waiting for its batch: its log id, its command, its request, and who waits
/// for it.
type Pending = (
    LogId,
    Vec<u8>,
    Option<RequestId>,
    Option<openraft::storage::ApplyResponder<TypeConfig>>,
);

/// What a snapshot file's metadata section holds: openraft's metadata and the session table,
/// under a tag that tells it from the files written before sessions (openraft's metadata
/// alone).
#[derive(Serialize, Deserialize)]
struct FileMeta {
    tag: String,
    meta: SnapshotMeta,
    sessions: Sessions,
}

const FILE_META_TAG: &str = "raftnode-snapshot-meta-2";

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

fn decode_meta(file: &SnapshotFile) -> io::Result<SnapshotMeta> {
    decode_file_meta(file).map(|(meta, _)| meta)
}

fn decode_file_meta(file: &SnapshotFile) -> io::Result<(SnapshotMeta, Sessions)> {
    let bytes = file.meta()?;
    if let Ok(m) = rmp_serde::from_slice::<FileMeta>(&bytes) {
        if m.tag == FILE_META_TAG {
            return Ok((m.meta, m.sessions));
        }
    }
    let legacy = rmp_serde::from_slice::<SnapshotMeta>(&bytes);
    legacy.map(|m| (m, Sessions::default())).map_err(|e| {
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

impl Shared {
    /// Makes a freshly built snapshot file current, unless an install overtook the build: the
    /// installed snapshot covers more of the log, so it stays current and is what openraft
    /// gets. Blocking.
    fn make_current(&self, file: SnapshotFile, meta: SnapshotMeta) -> io::Result<Snapshot> {
        let (dir, group) = (&self.snapshot_dir, self.group);
        let mut current = lock(&self.current);
        if self.has_snapshot.load(Ordering::Acquire) && *current >= meta.last_log_id {
            file.discard();
            let file = SnapshotFile::open(dir, group)?
                .ok_or_else(|| io::Error::other("the current snapshot file vanished"))?;
            let meta = decode_meta(&file)?;
            return Ok(Snapshot {
                meta,
                snapshot: file,
            });
        }
        let mut file = file;
        if let Err(e) = file.commit(dir, group) {
            file.discard();
            return Err(e.into());
        }
        *current = meta.last_log_id;
        self.has_snapshot.store(true, Ordering::Release);
        Ok(Snapshot {
            meta,
            snapshot: file,
        })
    }
}

impl SmAdapter {
    /// Wraps `machine` for group `group`, restoring it from the group's snapshot file when
    /// there is one. Blocking: call it on a blocking thread.
    pub(crate) fn open(
        group: GroupId,
        snapshot_dir: &Path,
        mut machine: Box<dyn ErasedStateMachine>,
    ) -> io::Result<SmAdapter> {
        let mut last_applied = None;
        let mut membership = StoredMembership::default();
        let mut sessions = Sessions::default();
        let file = SnapshotFile::open(snapshot_dir, group)?;
        if let Some(file) = &file {
            file.verify()?;
            let (meta, restored) = decode_file_meta(file)?;
            file.read_payload(|r| machine.restore(r))?;
            last_applied = meta.last_log_id;
            membership = meta.last_membership;
            sessions = restored;
        }
        Ok(SmAdapter {
            shared: Arc::new(Shared {
                group,
                snapshot_dir: snapshot_dir.to_path_buf(),
                state: RwLock::new(Applied {
                    machine,
                    last_applied,
                    membership,
                    sessions,
                }),
                has_snapshot: AtomicBool::new(file.is_some()),
                current: Mutex::new(last_applied.filter(|_| file.is_some())),
            }),
        })
    }

    /// Runs `f` on the state machine, sharing it with other readers.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&dyn ErasedStateMachine) -> T) -> T {
        f(self.state().machine.as_ref())
    }

    fn state(&self) -> RwLockReadGuard<'_, Applied> {
        // Poisoning means a panic inside the program's state machine; its state is whatever
        // the panic left, as with any other bug in it. Reads go on rather than panic in turn.
        self.shared.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn state_mut(&self) -> RwLockWriteGuard<'_, Applied> {
        self.shared.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies one run of normal entries and answers their responders. A copy of a request
    /// applied before (here or earlier in the run) is answered with the first reply and not
    /// applied again; every replica decides alike, from the log alone.
    fn apply_run(&self, run: &mut Vec<Pending>) -> io::Result<()> {
        if run.is_empty() {
            return Ok(());
        }
        let replies = {
            let mut st = self.state_mut();
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
            let applied = st.machine.apply(batch, &wanted).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("group {}: the state machine failed: {e}", self.shared.group),
                )
            })?;
            for ((id, _, request, _), answer) in run.iter().zip(&answers) {
                if let (Some(r), Answer::Applied(at)) = (request, answer) {
                    let reply = Reply(applied.get(*at).cloned().unwrap_or_default());
                    st.sessions.record(r, id.index, reply);
                }
            }
            if let Some((id, _, _, _)) = run.last() {
                st.last_applied = Some(*id);
            }
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
    type SnapshotData = SnapshotFile;

    #[tracing::instrument(name = "raft.build_snapshot", skip(self), fields(group = self.shared.group))]
    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        // The view is taken with writes paused; writing it out happens with them going on.
        let (meta, job, sessions) = {
            let st = self.state();
            let meta = SnapshotMeta {
                last_log_id: st.last_applied,
                last_membership: st.membership.clone(),
            };
            (meta, st.machine.snapshot(), st.sessions.clone())
        };
        let bytes = meta_bytes(&meta, &sessions)?;
        let shared = self.shared.clone();
        blocking(move || {
            let file = SnapshotFile::create(&shared.snapshot_dir, shared.group, &bytes, job)?;
            shared.make_current(file, meta)
        })
        .await
    }
}

impl RaftStateMachine<TypeConfig> for SmAdapter {
    type SnapshotData = SnapshotFile;
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
                    if let Some(r) = responder {
                        r.send(Reply::default());
                    }
                }
            }
        }
        // Applying a traced write is part of its trace, on the leader and on followers.
        let span = apply_span(self.shared.group, first_index, &traces);
        let _entered = span.enter();
        self.apply_run(&mut run)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        mut snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        let this = self.clone();
        let meta = meta.clone();
        let shared = self.shared.clone();
        blocking(move || {
            if snapshot.path().parent() != Some(shared.snapshot_dir.as_path()) {
                snapshot = snapshot.copy_into(&shared.snapshot_dir, shared.group)?;
            }
            snapshot.verify()?;
            // Current first: if the restore below fails or the process dies, the next start
            // restores from this file, which is where the log now begins.
            {
                let mut current = lock(&shared.current);
                snapshot.commit(&shared.snapshot_dir, shared.group)?;
                *current = meta.last_log_id;
                shared.has_snapshot.store(true, Ordering::Release);
            }
            let (_, sessions) = decode_file_meta(&snapshot)?;
            let mut st = this.state_mut();
            snapshot.read_payload(|r| st.machine.restore(r))?;
            st.last_applied = meta.last_log_id;
            st.membership = meta.last_membership;
            st.sessions = sessions;
            Ok(())
        })
        .await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        if !self.shared.has_snapshot.load(Ordering::Acquire) {
            return Ok(None);
        }
        let (dir, group) = (self.shared.snapshot_dir.clone(), self.shared.group);
        blocking(move || {
            let Some(file) = SnapshotFile::open(&dir, group)? else {
                return Ok(None);
            };
            let meta = decode_meta(&file)?;
            Ok(Some(Snapshot {
                meta,
                snapshot: file,
            }))
        })
        .await
    }
}

/// Poisoning means a panic while a snapshot was made current; the value is a log id that the
/// file on disk either matches or trails, never passes, so it stays usable.
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

    fn adapter(dir: &Path) -> SmAdapter {
        SmAdapter::open(7, dir, Box::new(Typed(KvStore::default()))).unwrap()
    }

    fn value(sm: &SmAdapter, key: &str) -> Option<String> {
        sm.read(|m| {
            let kv = m.as_any().downcast_ref::<KvStore>().unwrap();
            kv.get(key)
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        })
    }

    async fn apply(sm: &mut SmAdapter, entries: Vec<crate::raft::types::Entry>) {
        let items = entries.into_iter().map(|e| Ok((e, None)));
        sm.apply(futures::stream::iter(items)).await.unwrap();
    }

    #[tokio::test]
    async fn batches_follow_the_log_order_across_membership_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = adapter(dir.path());
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
    }

    #[tokio::test]
    async fn a_snapshot_restores_on_another_member_and_at_restart() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut leader = adapter(a.path());
        apply(&mut leader, vec![put(1, "k", "v"), put(2, "j", "w")]).await;
        let built = leader.build_snapshot().await.unwrap();
        assert_eq!(built.meta.last_log_id.map(|l| l.index), Some(2));
        // Writes after the view was taken are not in it.
        apply(&mut leader, vec![put(3, "k", "later")]).await;
        let mut follower = adapter(b.path());
        let current = leader.get_current_snapshot().await.unwrap().unwrap();
        follower
            .install_snapshot(&current.meta, current.snapshot)
            .await
            .unwrap();
        assert_eq!(value(&follower, "k").as_deref(), Some("v"));
        // The leader's own snapshot is still there (an install copies a foreign file).
        assert!(leader.get_current_snapshot().await.unwrap().is_some());
        // A restart restores from the installed file.
        let reopened = adapter(b.path());
        assert_eq!(value(&reopened, "j").as_deref(), Some("w"));
        let (applied, _) = reopened.clone().applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(2));
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
        let mut sm = adapter(dir.path());
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
        // The table travels in the snapshot.
        sm.build_snapshot().await.unwrap();
        let mut reopened = adapter(dir.path());
        apply(&mut reopened, vec![put_as(6, "k", "v1", 0)]).await;
        assert_eq!(value(&reopened, "k").as_deref(), Some("v3"));
        assert_eq!(reopened.state().sessions.check(&first), known);
    }

    /// openraft builds snapshots on a task of its own, so an install from the leader can land
    /// while a build is being written. The older of the two must not become current: the log
    /// before the newer one may already be purged, and the next start could not catch up.
    #[tokio::test]
    async fn a_build_overtaken_by_an_install_leaves_the_install_current() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut leader = adapter(a.path());
        apply(
            &mut leader,
            vec![put(1, "k", "v"), put(2, "k", "w"), put(3, "k", "x")],
        )
        .await;
        let newer = leader.build_snapshot().await.unwrap();

        let mut follower = adapter(b.path());
        apply(&mut follower, vec![put(1, "k", "v"), put(2, "k", "w")]).await;
        // The build's view is taken and written out, but not yet made current ...
        let older = SnapshotMeta {
            last_log_id: Some(log_id::<TypeConfig>(1, 1, 2)),
            last_membership: StoredMembership::default(),
        };
        let bytes = meta_bytes(&older, &Sessions::default()).unwrap();
        let job = follower.state().machine.snapshot();
        let built = SnapshotFile::create(b.path(), 7, &bytes, job).unwrap();
        // ... when the install lands.
        follower
            .install_snapshot(&newer.meta, newer.snapshot)
            .await
            .unwrap();
        let kept = follower.shared.make_current(built, older).unwrap();
        assert_eq!(kept.meta.last_log_id.map(|l| l.index), Some(3));
        let reopened = adapter(b.path());
        let (applied, _) = reopened.clone().applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(3));
        assert_eq!(value(&reopened, "k").as_deref(), Some("x"));
        // The discarded build left no temporary file behind.
        let names: Vec<String> = std::fs::read_dir(b.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }
}
