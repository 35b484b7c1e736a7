//! openraft's log storage for one group: a thin view of the node-wide [`Storage`] keyed by the
//! group id. Appends are acknowledged to openraft only from the writer thread, after the fsync.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

use futures::{Stream, StreamExt};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use crate::raft::types::{Entry, GroupId, LogId, TypeConfig, Vote};
use crate::storage::Storage;

/// The bytes of entries the apply path reads at a time (at least one entry).
const APPLY_READ_BYTES: usize = 8 << 20;

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

/// `range` as `start..end`.
fn half_open(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for GroupLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = half_open(&range);
        self.storage
            .entries_off_task(self.group, start, end, usize::MAX)
            .await
    }

    /// openraft bounds a replication message only by its count of entries; large values would
    /// make it too big to arrive within its timeout, so it is bounded by bytes here too.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        self.storage
            .entries_off_task(self.group, start, end, self.max_append_bytes)
            .await
    }

    /// The apply path reads committed entries through this: in pieces bounded by bytes, so
    /// that applying thousands of large entries (a restart, a follower catching up) never
    /// holds them all in memory at once, as reading the whole range would.
    async fn entries_stream<RB>(
        &mut self,
        range: RB,
    ) -> impl Stream<Item = Result<Entry, io::Error>> + OptionalSend
    where
        RB: RangeBounds<u64> + Clone + Debug + OptionalSend,
    {
        let (start, end) = half_open(&range);
        let (storage, group) = (self.storage.clone(), self.group);
        futures::stream::unfold(Some(start), move |next| {
            let storage = storage.clone();
            async move {
                let from = next.filter(|&n| n < end)?;
                match storage
                    .entries_off_task(group, from, end, APPLY_READ_BYTES)
                    .await
                {
                    Ok(piece) => {
                        let last = piece.last().map(|e| e.log_id.index)?;
                        let items = piece.into_iter().map(Ok).collect::<Vec<_>>();
                        Some((futures::stream::iter(items), Some(last + 1)))
                    }
                    // The error ends the stream after it is reported.
                    Err(e) => Some((futures::stream::iter(vec![Err(e)]), None)),
                }
            }
        })
        .flatten()
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
