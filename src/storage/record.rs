//! The records of the node-wide WAL, one enum for every group's log, vote and commit state,
//! and the index they build. Replay applies them in order to [`Index`]; each is an idempotent
//! overwrite, which is what lets a checkpoint be replayed after the segments it replaced.
//!
//! The index keeps, per log entry, its id and where it lies in the WAL; the entries themselves
//! stay in memory only in a cache bounded in bytes (the most recent ones, which replication
//! and apply read next). An entry not yet written has no place yet, so it stays in the cache
//! until the writer reports where it went.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;

use serde::{Deserialize, Serialize};

use super::wal::ItemPos;
use crate::raft::types::{entry_bytes, Entry, GroupId, LogId, Vote};

/// `entries` of `group` as records, one per entry, in log order: each entry is then an item
/// of its own in the WAL, which can be read back alone by its position.
pub fn appends(group: GroupId, entries: Vec<Entry>) -> Vec<Record> {
    entries
        .into_iter()
        .map(|entry| Record::Entry { group, entry })
        .collect()
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Record {
    /// Entries, overwriting any at their indexes: what WAL formats 1 and 2 wrote, read still.
    Append {
        group: GroupId,
        entries: Vec<Entry>,
    },
    Vote {
        group: GroupId,
        vote: Vote,
    },
    Committed {
        group: GroupId,
        committed: Option<LogId>,
    },
    /// Removes entries after `after` (all of them when `None`).
    Truncate {
        group: GroupId,
        after: Option<LogId>,
    },
    /// Removes entries up to and including `upto`, and remembers it as the purge point.
    Purge {
        group: GroupId,
        upto: LogId,
    },
    /// Forgets a group entirely (its data was purged by an operator), and remembers that it
    /// was: a replica that lost its data must not vote until it has caught up again.
    Drop {
        group: GroupId,
    },
    /// The group's replica here caught up after its data was erased: it may vote again.
    Rejoined {
        group: GroupId,
    },
    /// One entry, overwriting any at its index (WAL format 3 on).
    Entry {
        group: GroupId,
        entry: Entry,
    },
}

impl Record {
    pub fn encode(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        rmp_serde::to_vec(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, rmp_serde::decode::Error> {
        rmp_serde::from_slice(bytes)
    }
}

/// One log entry in the index.
#[derive(Debug, Clone)]
pub struct Slot {
    /// The entry's id.
    pub log_id: LogId,
    /// Where the entry lies in the WAL, once written.
    pub at: Option<ItemPos>,
    /// The entry, while it is cached (always, until it has a place in the WAL).
    pub entry: Option<Entry>,
    /// Its size, as replication limits count it.
    pub bytes: usize,
}

/// One group's durable Raft state, as the log store reads it.
#[derive(Debug, Default, Clone)]
pub struct GroupLog {
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    pub purged: Option<LogId>,
    pub entries: BTreeMap<u64, Slot>,
}

/// An encoded record, and the entry it holds if any (whose place the index learns once the
/// record is written).
pub type Encoded = (Vec<u8>, Option<(GroupId, LogId)>);

/// Where a checkpoint takes one item from.
pub enum Source {
    /// Encoded here: a group's state, or an entry not yet written.
    Bytes(Vec<u8>),
    /// Read back from its place in an old segment, when it is written out.
    At(ItemPos),
}

/// One item of a checkpoint's plan, and the entry it holds, if any.
pub type Planned = (Source, Option<(GroupId, LogId)>);

impl GroupLog {
    pub fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .values()
            .next_back()
            .map(|s| s.log_id)
            .or(self.purged)
    }

    /// The items that recreate this group's state from nothing (used by checkpoints): cached
    /// entries are encoded, the others read back whole by `item` from where they lie. The
    /// erased marks come first ([`Index::dump_erased`]), since a drop forgets the group.
    /// What a checkpoint writes for this group: its state, then each live entry, from its
    /// place in the WAL where it has one (so that planning reads nothing and copies nothing
    /// large), else encoded from the cache.
    pub fn plan(&self, group: GroupId) -> io::Result<Vec<Planned>> {
        let mut out: Vec<Planned> = Vec::with_capacity(4 + self.entries.len());
        let mut state = vec![Record::Truncate { group, after: None }];
        if let Some(upto) = self.purged {
            state.push(Record::Purge { group, upto });
        }
        if let Some(vote) = self.vote {
            state.push(Record::Vote { group, vote });
        }
        if self.committed.is_some() {
            state.push(Record::Committed {
                group,
                committed: self.committed,
            });
        }
        for r in state {
            out.push((Source::Bytes(r.encode().map_err(io::Error::other)?), None));
        }
        for slot in self.entries.values() {
            let source = match (slot.at, &slot.entry) {
                (Some(at), _) => Source::At(at),
                (None, Some(entry)) => Source::Bytes(
                    Record::Entry {
                        group,
                        entry: entry.clone(),
                    }
                    .encode()
                    .map_err(io::Error::other)?,
                ),
                (None, None) => {
                    return Err(io::Error::other(format!(
                        "log entry {} of group {group} is neither cached nor written",
                        slot.log_id
                    )))
                }
            };
            out.push((source, Some((group, slot.log_id))));
        }
        Ok(out)
    }
}

/// The cached entries: what they weigh, and the order in which they go.
#[derive(Debug, Default)]
struct Cache {
    /// The bound in bytes (entries not yet written are kept beyond it).
    budget: usize,
    bytes: usize,
    count: usize,
    /// Oldest first; may name entries gone since (truncated, purged, evicted), skipped then.
    order: VecDeque<(GroupId, LogId)>,
}

/// Every group's state, in memory: rebuilt from the WAL at start, kept current by the log stores.
#[derive(Debug, Default)]
pub struct Index {
    pub groups: HashMap<GroupId, GroupLog>,
    /// Groups whose data was erased here and whose replica has not caught up since.
    pub erased: std::collections::BTreeSet<GroupId>,
    cache: Cache,
    /// Entries recovered from segments of formats 1 and 2, which have no place of their own:
    /// cached until a checkpoint writes them anew.
    pub unplaced: usize,
}

impl Index {
    /// An empty index whose entry cache holds about `budget` bytes.
    pub fn with_cache(budget: usize) -> Index {
        Index {
            cache: Cache {
                budget,
                ..Cache::default()
            },
            ..Index::default()
        }
    }

    /// Bytes of cached entries.
    pub fn cached_bytes(&self) -> usize {
        self.cache.bytes
    }

    /// The records that recreate the erased marks: in a checkpoint, before the groups' state.
    pub fn dump_erased(&self) -> Vec<Record> {
        self.erased
            .iter()
            .map(|&group| Record::Drop { group })
            .collect()
    }

    /// Applies a record submitted now: its entries are cached until written.
    pub fn apply(&mut self, record: Record) {
        self.apply_at(record, None);
    }

    /// Applies a record read back from the WAL at `at` (when its format gives places): an
    /// entry with a place is indexed without its payload.
    pub fn apply_at(&mut self, record: Record, at: Option<ItemPos>) {
        match record {
            Record::Append { group, entries } => {
                for e in entries {
                    self.unplaced += usize::from(at.is_none());
                    self.insert(group, e, None);
                }
            }
            Record::Entry { group, entry } => self.insert(group, entry, at),
            Record::Vote { group, vote } => self.groups.entry(group).or_default().vote = Some(vote),
            Record::Committed { group, committed } => {
                self.groups.entry(group).or_default().committed = committed
            }
            Record::Truncate { group, after } => {
                let g = self.groups.entry(group).or_default();
                let from = after.map(|l| l.index + 1).unwrap_or(0);
                let gone = g.entries.split_off(&from);
                self.uncache(gone.values());
            }
            Record::Purge { group, upto } => {
                let g = self.groups.entry(group).or_default();
                let kept = g.entries.split_off(&(upto.index + 1));
                let gone = std::mem::replace(&mut g.entries, kept);
                if g.purged.is_none_or(|p| p.index < upto.index) {
                    g.purged = Some(upto);
                }
                self.uncache(gone.values());
            }
            Record::Drop { group } => {
                if let Some(g) = self.groups.remove(&group) {
                    self.uncache(g.entries.values());
                }
                self.erased.insert(group);
            }
            Record::Rejoined { group } => {
                self.erased.remove(&group);
            }
        }
        self.evict();
    }

    /// Indexes `entry` of `group`: at its place when it has one (recovery; not cached), else
    /// cached until the writer gives it one.
    fn insert(&mut self, group: GroupId, entry: Entry, at: Option<ItemPos>) {
        let log_id = entry.log_id;
        let bytes = entry_bytes(&entry);
        let entry = match at {
            Some(_) => None,
            None => {
                self.cache.bytes += bytes;
                self.cache.count += 1;
                self.cache.order.push_back((group, log_id));
                Some(entry)
            }
        };
        let slot = Slot {
            log_id,
            at,
            entry,
            bytes,
        };
        let g = self.groups.entry(group).or_default();
        if let Some(old) = g.entries.insert(log_id.index, slot) {
            self.uncache([&old]);
        }
    }

    fn uncache<'a>(&mut self, gone: impl IntoIterator<Item = &'a Slot>) {
        for s in gone {
            if s.entry.is_some() {
                self.cache.bytes -= s.bytes;
                self.cache.count -= 1;
            }
        }
    }

    /// Records where the writer put entries: each keeps its place only if the index still
    /// holds that very entry (not truncated or replaced meanwhile). `replace` moves entries
    /// that had a place already (a checkpoint rewrote them).
    pub fn place(
        &mut self,
        placed: impl IntoIterator<Item = ((GroupId, LogId), ItemPos)>,
        replace: bool,
    ) {
        for ((group, log_id), at) in placed {
            let slot = self
                .groups
                .get_mut(&group)
                .and_then(|g| g.entries.get_mut(&log_id.index))
                .filter(|s| s.log_id == log_id);
            if let Some(s) = slot {
                if s.at.is_none() || replace {
                    s.at = Some(at);
                }
            }
        }
        self.evict();
    }

    /// Drops cached entries, oldest first, while the cache is over its budget; stops at an
    /// entry without a place (those behind it were submitted later and are not written either).
    fn evict(&mut self) {
        while self.cache.bytes > self.cache.budget {
            let Some((group, log_id)) = self.cache.order.pop_front() else {
                break;
            };
            let Some(s) = self
                .groups
                .get_mut(&group)
                .and_then(|g| g.entries.get_mut(&log_id.index))
                .filter(|s| s.log_id == log_id && s.entry.is_some())
            else {
                continue;
            };
            if s.at.is_none() {
                self.cache.order.push_front((group, log_id));
                break;
            }
            s.entry = None;
            self.cache.bytes -= s.bytes;
            self.cache.count -= 1;
        }
        // Names of entries gone meanwhile would otherwise pile up while the cache is small.
        if self.cache.order.len() > 2 * self.cache.count + 1024 {
            let groups = &self.groups;
            self.cache.order.retain(|(group, log_id)| {
                groups
                    .get(group)
                    .and_then(|g| g.entries.get(&log_id.index))
                    .is_some_and(|s| s.log_id == *log_id && s.entry.is_some())
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::{blank_ent, log_id};

    use crate::raft::types::TypeConfig;

    fn ids(g: &GroupLog) -> Vec<u64> {
        g.entries.keys().copied().collect()
    }

    fn append(group: GroupId, range: std::ops::RangeInclusive<u64>, term: u64) -> Record {
        Record::Append {
            group,
            entries: range.map(|i| blank_ent::<TypeConfig>(term, 1, i)).collect(),
        }
    }

    #[test]
    fn records_apply_in_order() {
        let mut index = Index::default();
        for r in [
            append(1, 1..=5, 1),
            // A new leader overwrites the tail it disagrees with.
            Record::Truncate {
                group: 1,
                after: Some(log_id::<TypeConfig>(1, 1, 3)),
            },
            append(1, 4..=6, 2),
            Record::Purge {
                group: 1,
                upto: log_id::<TypeConfig>(1, 1, 2),
            },
            // A purge point never moves back.
            Record::Purge {
                group: 1,
                upto: log_id::<TypeConfig>(1, 1, 1),
            },
            append(2, 1..=1, 1),
            Record::Drop { group: 2 },
            Record::Drop { group: 3 },
            Record::Rejoined { group: 3 },
        ] {
            index.apply(r);
        }
        let g = &index.groups[&1];
        assert_eq!(ids(g), [3, 4, 5, 6]);
        assert_eq!(g.purged.map(|p| p.index), Some(2));
        assert_eq!(g.entries[&5].log_id.committed_leader_id().term, 2);
        assert_eq!(g.last_log_id().map(|l| l.index), Some(6));
        assert!(!index.groups.contains_key(&2));
        assert_eq!(index.erased, [2].into());
    }

    #[test]
    fn appends_are_a_record_per_entry_and_old_append_records_still_apply() {
        let entries: Vec<Entry> = (1..=3).map(|i| blank_ent::<TypeConfig>(1, 1, i)).collect();
        let records = appends(1, entries);
        let indexes: Vec<u64> = records
            .iter()
            .map(|r| match r {
                Record::Entry { entry, .. } => entry.log_id.index,
                _ => panic!("{r:?}"),
            })
            .collect();
        assert_eq!(indexes, [1, 2, 3]);
        assert!(appends(1, Vec::new()).is_empty());
        let mut index = Index::default();
        index.apply(append(1, 1..=4, 1));
        for r in records {
            index.apply(Record::decode(&r.encode().unwrap()).unwrap());
        }
        assert_eq!(ids(&index.groups[&1]), [1, 2, 3, 4]);
    }

    fn pos(offset: u64) -> ItemPos {
        ItemPos {
            seq: 1,
            offset,
            len: 10,
        }
    }

    /// The cache holds what fits in its budget, newest last; an entry without a place stays
    /// whatever the budget; truncation and purge release what they remove.
    #[test]
    fn the_cache_is_bounded_but_keeps_unwritten_entries() {
        let one = entry_bytes(&blank_ent::<TypeConfig>(1, 1, 1));
        let mut index = Index::with_cache(3 * one);
        index.apply(append(1, 1..=10, 1));
        assert_eq!(
            index.cached_bytes(),
            10 * one,
            "nothing written yet: all kept"
        );
        let placed = (1..=10).map(|i| ((1, log_id::<TypeConfig>(1, 1, i)), pos(i * 100)));
        index.place(placed, false);
        assert_eq!(index.cached_bytes(), 3 * one);
        let g = &index.groups[&1];
        let cached: Vec<u64> = g
            .entries
            .values()
            .filter(|s| s.entry.is_some())
            .map(|s| s.log_id.index)
            .collect();
        assert_eq!(cached, [8, 9, 10]);
        assert!(g.entries.values().all(|s| s.at.is_some()));
        // A place for an entry that was replaced meanwhile is not taken.
        index.apply(Record::Truncate {
            group: 1,
            after: Some(log_id::<TypeConfig>(1, 1, 8)),
        });
        assert_eq!(index.cached_bytes(), one);
        index.apply(append(1, 9..=9, 2));
        index.place([((1, log_id::<TypeConfig>(1, 1, 9)), pos(5))], false);
        assert_eq!(index.groups[&1].entries[&9].at, None);
        index.apply(Record::Purge {
            group: 1,
            upto: log_id::<TypeConfig>(2, 1, 9),
        });
        assert_eq!(index.cached_bytes(), 0);
        // Recovered entries with a place are not cached; those without one are counted.
        let mut recovered = Index::with_cache(0);
        let Record::Append { entries, .. } = append(1, 1..=2, 1) else {
            unreachable!()
        };
        for e in entries {
            recovered.apply_at(Record::Entry { group: 1, entry: e }, Some(pos(7)));
        }
        recovered.apply_at(append(2, 1..=3, 1), None);
        assert_eq!(recovered.cached_bytes(), 3 * one);
        assert_eq!(recovered.unplaced, 3);
    }

    #[test]
    fn a_plan_replayed_over_anything_recreates_the_group() {
        let mut index = Index::default();
        index.apply(append(1, 1..=9, 1));
        index.apply(Record::Purge {
            group: 1,
            upto: log_id::<TypeConfig>(1, 1, 4),
        });
        index.apply(Record::Vote {
            group: 1,
            vote: openraft::Vote::new(2, 1),
        });
        let live = index.groups[&1].clone();
        // Replay onto an index that holds stale state for the group (a crash mid-checkpoint
        // replays the old segments first, then the checkpoint).
        let mut replayed = Index::default();
        replayed.apply(append(1, 1..=20, 1));
        for (source, _) in live.plan(1).unwrap() {
            let Source::Bytes(bytes) = source else {
                panic!("an entry with no place is planned from the cache");
            };
            replayed.apply(Record::decode(&bytes).unwrap());
        }
        let got = &replayed.groups[&1];
        assert_eq!(ids(got), ids(&live));
        assert_eq!(got.purged, live.purged);
        assert_eq!(got.vote, live.vote);
        assert_eq!(got.last_log_id(), live.last_log_id());
    }
}
