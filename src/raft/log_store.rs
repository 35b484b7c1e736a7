//! openraft's log storage for one group: a thin view of the node-wide [`Storage`] keyed by the
//! group id. Appends are acknowledged to openraft only from the writer thread, after the fsync.

use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use crate::raft::types::{Entry, GroupId, LogId, TypeConfig, Vote};
use crate::storage::Storage;

#[derive(Clone)]
pub struct GroupLogStore {
    storage: Storage,
    group: GroupId,
    /// Bound on the entries one replication message carries, in bytes.
    max_append_bytes: usize,
}

impl GroupLogStore {
    pub fn new(storage: Storage, group: GroupId, max_append_bytes: usize) -> Self {
        GroupLogStore {
            storage,
            group,
            max_append_bytes,
        }
    }
}

impl RaftLogReader<TypeConfig> for GroupLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        self.storage.entries(self.group, range)
    }

    /// openraft bounds a replication message only by its count of entries; large values would
    /// make it too big to arrive within its timeout, so it is bounded by bytes here too.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        self.storage
            .entries_limited(self.group, start, end, self.max_append_bytes)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self
            .storage
            .with_group(self.group, |g| g.and_then(|g| g.vote)))
    }
}

impl RaftLogStorage<TypeConfig> for GroupLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        Ok(self.storage.with_group(self.group, |g| match g {
            Some(g) => LogState {
                last_purged_log_id: g.purged,
                last_log_id: g.last_log_id(),
            },
            None => LogState {
                last_purged_log_id: None,
                last_log_id: None,
            },
        }))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.storage.save_vote(self.group, *vote).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.storage.save_committed(self.group, committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self
            .storage
            .with_group(self.group, |g| g.and_then(|g| g.committed)))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.storage
            .append(self.group, entries.into_iter().collect(), callback)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        self.storage.truncate_after(self.group, last_log_id)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.storage.purge(self.group, log_id)
    }
}
