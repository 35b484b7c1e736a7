//! Figures of one group that openraft's metrics do not carry: proposals by outcome and leader
//! changes, exported by the node's collector.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Counters of one group, shared by its proposers and its leader watch.
#[derive(Default)]
pub struct GroupStats {
    /// Proposals committed and applied through this node.
    pub proposals_committed: AtomicU64,
    /// Proposals this node proposed that did not commit.
    pub proposals_failed: AtomicU64,
    /// Proposals submitted and not yet answered.
    pub proposals_pending: AtomicI64,
    /// Moves from one known leader to another.
    pub leader_changes: AtomicU64,
    /// Answered proposals (committed or failed) when the group last fell asleep here.
    pub answered_at_sleep: AtomicU64,
}

impl GroupStats {
    /// Counts one proposal from submission to its outcome.
    pub fn proposal(&self) -> ProposalGuard<'_> {
        self.proposals_pending.fetch_add(1, Ordering::Relaxed);
        ProposalGuard { stats: self }
    }

    /// Proposals answered through this node, committed or failed.
    pub fn answered(&self) -> u64 {
        self.proposals_committed.load(Ordering::Relaxed)
            + self.proposals_failed.load(Ordering::Relaxed)
    }

    /// Whether a proposal was answered through this node since the group last fell asleep here.
    pub fn written_since_sleep(&self) -> bool {
        self.answered() != self.answered_at_sleep.load(Ordering::Relaxed)
    }
}

/// One proposal in flight; pending until dropped.
pub struct ProposalGuard<'a> {
    stats: &'a GroupStats,
}

impl ProposalGuard<'_> {
    /// Records the outcome: `Some(true)` committed, `Some(false)` failed, `None` never
    /// proposed here (redirected to the leader), which is neither.
    pub fn finish(self, outcome: Option<bool>) {
        match outcome {
            Some(true) => &self.stats.proposals_committed,
            Some(false) => &self.stats.proposals_failed,
            None => return,
        }
        .fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for ProposalGuard<'_> {
    fn drop(&mut self) {
        self.stats.proposals_pending.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_counted_and_pending_returns_to_zero() {
        let s = GroupStats::default();
        let a = s.proposal();
        let b = s.proposal();
        let c = s.proposal();
        assert_eq!(s.proposals_pending.load(Ordering::Relaxed), 3);
        a.finish(Some(true));
        b.finish(Some(false));
        c.finish(None);
        assert_eq!(s.proposals_pending.load(Ordering::Relaxed), 0);
        assert_eq!(s.proposals_committed.load(Ordering::Relaxed), 1);
        assert_eq!(s.proposals_failed.load(Ordering::Relaxed), 1);
    }
}
