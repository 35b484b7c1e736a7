//! The small plain types of the node's API: how fresh a read is, what a proposal answers, and
//! what a stop found.

use std::time::Duration;

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// Reflects every write acknowledged before the read began, on any member: the leader
    /// confirms its leadership with a quorum (ReadIndex) and the reader applies that far.
    Linearizable,
    /// Like `Linearizable`, with leadership confirmed by the leader's lease instead of a round
    /// trip: faster, and correct as long as clocks do not drift beyond the lease's margin.
    Lease,
    /// This member's state as it is, without asking anyone: may be stale.
    Local,
}

impl ReadMode {
    /// Parses `linearizable`, `lease` or `local`.
    pub fn parse(s: &str) -> Option<ReadMode> {
        match s {
            "linearizable" => Some(ReadMode::Linearizable),
            "lease" => Some(ReadMode::Lease),
            "local" => Some(ReadMode::Local),
            _ => None,
        }
    }
}

/// A proposal's outcome: the log index it was applied at, and the state machine's response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied<R> {
    /// The command's log index.
    pub index: u64,
    /// What the state machine answered.
    pub response: R,
}

/// What a stop found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StopReport {
    /// Leak verdicts of this node's ledger over its whole life: tasks, threads and connections
    /// that an owner still held when its deadline passed. 0 is the only good figure.
    pub leaks: u64,
    /// How long the stop took.
    pub took: Duration,
    /// Whether this node's storage had failed (a write or fsync error), so that it stopped
    /// writing before this stop: what was acknowledged is on disk, but the node needs working
    /// storage and a restart.
    pub storage_failed: bool,
}

/// How a group whose data this node purged is added to it again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AfterPurge {
    /// Not said: refused with [`crate::GroupOpError::Purged`], unless this node has no peers
    /// (then nobody else can hold the group's data, and it is created anew).
    #[default]
    Ask,
    /// The group is created anew on every member: the purge is forgotten.
    Fresh,
    /// This replica rejoins a group its peers still run: it votes for nobody until it has
    /// caught up, so that it cannot elect a member missing writes its erased copy held.
    Rejoin,
}
