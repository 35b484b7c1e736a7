//! The records of the node-wide WAL, one enum for every group's log, vote and commit state.
//! Replay applies them in order to [`Index`]; each is an idempotent overwrite, which is what
//! lets a checkpoint be replayed after the segments it replaced.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::raft::types::{Entry, GroupId, LogId, Vote};

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

/// One group's durable Raft state, as the log store reads it.
#[derive(Debug, Default, Clone)]
pub struct GroupLog {
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    pub purged: Option<LogId>,
    pub entries: BTreeMap<u64, Entry>,
}

impl GroupLog {
    pub fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(self.purged)
    }

    /// The records that recreate this group's state from nothing (used by checkpoints). The
    /// erased marks come first ([`Index::dump_erased`]), since a drop forgets the group.
    pub fn dump(&self, group: GroupId) -> Vec<Record> {
        let mut out = Vec::with_capacity(4);
        out.push(Record::Truncate { group, after: None });
        if let Some(upto) = self.purged {
            out.push(Record::Purge { group, upto });
        }
        if let Some(vote) = self.vote {
            out.push(Record::Vote { group, vote });
        }
        if self.committed.is_some() {
            out.push(Record::Committed {
                group,
                committed: self.committed,
            });
        }
        let entries = self.entries.values().cloned().collect();
        out.extend(appends(group, entries));
        out
    }
}

/// Every group's state, in memory: rebuilt from the WAL at start, kept current by the log stores.
#[derive(Debug, Default)]
pub struct Index {
    pub groups: HashMap<GroupId, GroupLog>,
    /// Groups whose data was erased here and whose replica has not caught up since.
    pub erased: std::collections::BTreeSet<GroupId>,
}

impl Index {
    /// The records that recreate the erased marks: in a checkpoint, before the groups' state.
    pub fn dump_erased(&self) -> Vec<Record> {
        self.erased
            .iter()
            .map(|&group| Record::Drop { group })
            .collect()
    }

    pub fn apply(&mut self, record: Record) {
        match record {
            Record::Append { group, entries } => {
                let g = self.groups.entry(group).or_default();
                for e in entries {
                    g.entries.insert(e.log_id.index, e);
                }
            }
            Record::Entry { group, entry } => {
                let g = self.groups.entry(group).or_default();
                g.entries.insert(entry.log_id.index, entry);
            }
            Record::Vote { group, vote } => self.groups.entry(group).or_default().vote = Some(vote),
            Record::Committed { group, committed } => {
                self.groups.entry(group).or_default().committed = committed
            }
            Record::Truncate { group, after } => {
                let g = self.groups.entry(group).or_default();
                let from = after.map(|l| l.index + 1).unwrap_or(0);
                let _ = g.entries.split_off(&from);
            }
            Record::Purge { group, upto } => {
                let g = self.groups.entry(group).or_default();
                g.entries = g.entries.split_off(&(upto.index + 1));
                if g.purged.is_none_or(|p| p.index < upto.index) {
                    g.purged = Some(upto);
                }
            }
            Record::Drop { group } => {
                self.groups.remove(&group);
                self.erased.insert(group);
            }
            Record::Rejoined { group } => {
                self.erased.remove(&group);
            }
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

    #[test]
    fn a_dump_replayed_over_anything_recreates_the_group() {
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
        for r in live.dump(1) {
            replayed.apply(Record::decode(&r.encode().unwrap()).unwrap());
        }
        let got = &replayed.groups[&1];
        assert_eq!(ids(got), ids(&live));
        assert_eq!(got.purged, live.purged);
        assert_eq!(got.vote, live.vote);
        assert_eq!(got.last_log_id(), live.last_log_id());
    }
}
