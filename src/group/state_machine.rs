//! The replicated KV state machine of one group, and its openraft adapter.
//!
//! State lives in memory behind a lock that readers share; durability comes from the WAL (every
//! applied entry is in the log until a snapshot covers it) and from the snapshot file, which is
//! fsynced before openraft may purge the log behind it.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::raft::types::{
    GroupId, KvOp, KvRequest, KvResponse, LogId, Snapshot, SnapshotMeta, StoredMembership,
    TypeConfig,
};
use crate::storage::snapshot_file;

/// The applied state of one group.
#[derive(Debug, Default)]
pub struct KvState {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub data: BTreeMap<String, ByteBuf>,
}

impl KvState {
    fn apply(&mut self, req: KvRequest) -> KvResponse {
        match req.op {
            KvOp::Put { key, value } => KvResponse {
                existed: self.data.insert(key, ByteBuf::from(value)).is_some(),
            },
            KvOp::Delete { key } => KvResponse {
                existed: self.data.remove(&key).is_some(),
            },
        }
    }
}

/// What a snapshot file holds: the metadata openraft needs and the encoded data.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    data: ByteBuf,
}

#[derive(Clone)]
pub struct KvStateMachine {
    group: GroupId,
    snapshot_dir: PathBuf,
    state: Arc<RwLock<KvState>>,
    /// Whether a snapshot file exists, so that asking for the current snapshot of a group that
    /// never took one costs no file I/O (and no blocking-pool thread).
    has_snapshot: Arc<std::sync::atomic::AtomicBool>,
}

impl KvStateMachine {
    /// Restores the state from the group's snapshot file, if there is one.
    pub fn open(group: GroupId, snapshot_dir: PathBuf) -> Result<Self, io::Error> {
        let mut state = KvState::default();
        let mut has_snapshot = false;
        if let Some(bytes) = snapshot_file::load(&snapshot_dir, group).map_err(io::Error::other)? {
            let file: SnapshotFile = rmp_serde::from_slice(&bytes).map_err(|e| {
                io::Error::other(format!(
                    "snapshot {} is undecodable: {e}",
                    snapshot_file::path(&snapshot_dir, group).display()
                ))
            })?;
            state = decode_state(&file.meta, &file.data)?;
            has_snapshot = true;
        }
        Ok(KvStateMachine {
            group,
            snapshot_dir,
            state: Arc::new(RwLock::new(state)),
            has_snapshot: Arc::new(std::sync::atomic::AtomicBool::new(has_snapshot)),
        })
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.read().data.get(key).map(|v| v.to_vec())
    }

    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, KvState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, KvState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    async fn persist(&self, meta: SnapshotMeta, data: Vec<u8>) -> io::Result<Vec<u8>> {
        let file = SnapshotFile {
            meta,
            data: ByteBuf::from(data),
        };
        let bytes = rmp_serde::to_vec(&file).map_err(io::Error::other)?;
        let dir = self.snapshot_dir.clone();
        let group = self.group;
        crate::ledger::spawn_blocking_current(move || {
            snapshot_file::save(&dir, group, &bytes).map_err(io::Error::other)
        })
        .await
        .map_err(io::Error::other)??;
        self.has_snapshot
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(file.data.into_vec())
    }
}

fn decode_state(meta: &SnapshotMeta, data: &[u8]) -> io::Result<KvState> {
    let map: BTreeMap<String, ByteBuf> = rmp_serde::from_slice(data)
        .map_err(|e| io::Error::other(format!("snapshot data is undecodable: {e}")))?;
    Ok(KvState {
        last_applied: meta.last_log_id,
        membership: meta.last_membership.clone(),
        data: map,
    })
}

impl RaftSnapshotBuilder<TypeConfig> for KvStateMachine {
    type SnapshotData = Vec<u8>;

    #[tracing::instrument(name = "kv.build_snapshot", skip(self), fields(group = self.group))]
    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let (meta, data) = {
            let st = self.read();
            let meta = SnapshotMeta {
                last_log_id: st.last_applied,
                last_membership: st.membership.clone(),
            };
            (meta, rmp_serde::to_vec(&st.data).map_err(io::Error::other)?)
        };
        let data = self.persist(meta.clone(), data).await?;
        Ok(Snapshot {
            meta,
            snapshot: data,
        })
    }
}

impl RaftStateMachine<TypeConfig> for KvStateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let st = self.read();
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + Send,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            // Applying a traced write is part of its trace, on the leader and on followers.
            let _span = match &entry.payload {
                EntryPayload::Normal(KvRequest {
                    trace: Some(tp), ..
                }) if crate::otel::enabled() => {
                    let span = tracing::info_span!(
                        "kv.apply",
                        group = self.group,
                        raft.index = entry.log_id.index
                    );
                    crate::otel::propagation::adopt_traceparent(&span, tp);
                    Some(span.entered())
                }
                _ => None,
            };
            let response = {
                let mut st = self.write();
                st.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => KvResponse::default(),
                    EntryPayload::Normal(req) => st.apply(req),
                    EntryPayload::Membership(m) => {
                        st.membership = StoredMembership::new(Some(entry.log_id), m);
                        KvResponse::default()
                    }
                }
            };
            if let Some(r) = responder {
                r.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        let state = decode_state(meta, &snapshot)?;
        self.persist(meta.clone(), snapshot).await?;
        *self.write() = state;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        if !self.has_snapshot.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(None);
        }
        let dir = self.snapshot_dir.clone();
        let group = self.group;
        let bytes = crate::ledger::spawn_blocking_current(move || snapshot_file::load(&dir, group))
            .await
            .map_err(io::Error::other)?
            .map_err(io::Error::other)?;
        let Some(bytes) = bytes else { return Ok(None) };
        let file: SnapshotFile = rmp_serde::from_slice(&bytes).map_err(io::Error::other)?;
        Ok(Some(Snapshot {
            meta: file.meta,
            snapshot: file.data.into_vec(),
        }))
    }
}
