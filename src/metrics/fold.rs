//! How per-group figures become node-wide ones when per-group labels are off: plain functions
//! over plain data, tested without a node. Thousands of groups must export a handful of series,
//! and each aggregate must still mean something an alert can use (groups led, groups without a
//! leader, the highest term).

use crate::ledger::{Counts, OwnerKind};

/// One owner's live counts, as the ledger lists them.
pub type OwnerRow = (OwnerKind, String, Counts);

/// Folds every group owner into one row, `group/all`, and keeps the others as they are. The
/// row is there even with no group, so that the series never disappears and reappears.
pub fn fold_group_owners(owners: Vec<OwnerRow>) -> Vec<OwnerRow> {
    let mut all = Counts::default();
    let mut out: Vec<OwnerRow> = owners
        .into_iter()
        .filter(|(kind, _, c)| {
            if *kind != OwnerKind::Group {
                return true;
            }
            all.tasks += c.tasks;
            all.threads += c.threads;
            all.inbound += c.inbound;
            all.outbound += c.outbound;
            false
        })
        .collect();
    out.push((OwnerKind::Group, "all".to_string(), all));
    out
}

/// One group's figures, or the aggregate of many.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupFigures {
    /// 1 if the group knows a leader; aggregated: how many do.
    pub has_leader: i64,
    /// 1 if this node leads; aggregated: how many it leads.
    pub is_leader: i64,
    /// The term; aggregated: the highest.
    pub term: i64,
    /// The commit index; aggregated: the sum (its rate is commits per second).
    pub commit: i64,
    /// The applied index; aggregated: the sum.
    pub applied: i64,
    /// Leader changes seen.
    pub leader_changes: u64,
    /// Proposals committed through this node.
    pub committed: u64,
    /// Proposals that failed here.
    pub failed: u64,
    /// Proposals waiting.
    pub pending: i64,
    /// Polls of the group's tasks.
    pub polls: u64,
    /// Time polling them.
    pub poll_seconds: f64,
    /// Time they waited to be polled.
    pub scheduled_seconds: f64,
    /// Slow polls.
    pub slow_polls: u64,
}

/// The node-wide figures of `groups`: sums, except the term, which is the highest.
pub fn fold_groups(groups: impl IntoIterator<Item = GroupFigures>) -> GroupFigures {
    groups
        .into_iter()
        .fold(GroupFigures::default(), |a, o| GroupFigures {
            has_leader: a.has_leader + o.has_leader,
            is_leader: a.is_leader + o.is_leader,
            term: a.term.max(o.term),
            commit: a.commit + o.commit,
            applied: a.applied + o.applied,
            leader_changes: a.leader_changes + o.leader_changes,
            committed: a.committed + o.committed,
            failed: a.failed + o.failed,
            pending: a.pending + o.pending,
            polls: a.polls + o.polls,
            poll_seconds: a.poll_seconds + o.poll_seconds,
            scheduled_seconds: a.scheduled_seconds + o.scheduled_seconds,
            slow_polls: a.slow_polls + o.slow_polls,
        })
}

/// The counters of `f` only (gauges at zero): what a group takes with it when it leaves.
fn counters(f: &GroupFigures) -> GroupFigures {
    GroupFigures {
        leader_changes: f.leader_changes,
        committed: f.committed,
        failed: f.failed,
        polls: f.polls,
        poll_seconds: f.poll_seconds,
        scheduled_seconds: f.scheduled_seconds,
        slow_polls: f.slow_polls,
        ..Default::default()
    }
}

/// Whether any counter of `now` is below `before`: the group started again.
fn counted_again(before: &GroupFigures, now: &GroupFigures) -> bool {
    now.leader_changes < before.leader_changes
        || now.committed < before.committed
        || now.failed < before.failed
        || now.polls < before.polls
        || now.poll_seconds < before.poll_seconds
        || now.scheduled_seconds < before.scheduled_seconds
        || now.slow_polls < before.slow_polls
}

/// Node-wide figures whose counters never go down. A plain sum would drop when a group leaves
/// (or is started again, its counters from zero), and Prometheus reads a drop as a counter
/// reset: every `rate()` and `increase()` over the sum would show a burst that never
/// happened. So what a departed group had counted is kept.
#[derive(Debug, Default)]
pub struct MonotonicFold {
    last: std::collections::HashMap<u64, GroupFigures>,
    departed: GroupFigures,
}

impl MonotonicFold {
    /// The aggregate of the groups hosted now, `(group id, figures)`.
    pub fn fold(&mut self, now: impl IntoIterator<Item = (u64, GroupFigures)>) -> GroupFigures {
        let mut seen = std::collections::HashMap::with_capacity(self.last.len());
        for (id, f) in now {
            if let Some(before) = self.last.remove(&id) {
                if counted_again(&before, &f) {
                    self.departed = fold_groups([self.departed.clone(), counters(&before)]);
                }
            }
            seen.insert(id, f);
        }
        for before in std::mem::take(&mut self.last).into_values() {
            self.departed = fold_groups([self.departed.clone(), counters(&before)]);
        }
        let total = fold_groups(seen.values().cloned().chain([self.departed.clone()]));
        self.last = seen;
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(tasks: i64, threads: i64, inbound: i64, outbound: i64) -> Counts {
        Counts {
            tasks,
            threads,
            inbound,
            outbound,
        }
    }

    #[test]
    fn group_owners_fold_into_one_row() {
        let cases: Vec<(Vec<OwnerRow>, Vec<OwnerRow>)> = vec![
            // No group at all: the row is still there, at zero.
            (
                vec![(OwnerKind::Node, "main".into(), c(3, 0, 0, 0))],
                vec![
                    (OwnerKind::Node, "main".into(), c(3, 0, 0, 0)),
                    (OwnerKind::Group, "all".into(), c(0, 0, 0, 0)),
                ],
            ),
            // Groups sum; other kinds keep their rows and their order.
            (
                vec![
                    (OwnerKind::Group, "1".into(), c(5, 0, 0, 1)),
                    (OwnerKind::Peer, "2".into(), c(2, 0, 0, 1)),
                    (OwnerKind::Group, "2".into(), c(4, 1, 0, 2)),
                ],
                vec![
                    (OwnerKind::Peer, "2".into(), c(2, 0, 0, 1)),
                    (OwnerKind::Group, "all".into(), c(9, 1, 0, 3)),
                ],
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(fold_group_owners(input), expected);
        }
    }

    #[test]
    fn aggregate_counters_survive_groups_leaving_and_restarting() {
        let g = |committed: u64, pending: i64| GroupFigures {
            has_leader: 1,
            committed,
            pending,
            leader_changes: committed / 10,
            ..Default::default()
        };
        let mut m = MonotonicFold::default();
        // (groups now, committed total, pending total, groups with a leader)
        type Step = (Vec<(u64, GroupFigures)>, u64, i64, i64);
        let steps: Vec<Step> = vec![
            (vec![(1, g(10, 1)), (2, g(20, 2))], 30, 3, 2),
            (vec![(1, g(15, 1)), (2, g(20, 2))], 35, 3, 2),
            // Group 2 leaves: its 20 stay counted; its gauges go.
            (vec![(1, g(16, 1))], 36, 1, 1),
            // Group 2 comes back from zero; group 1 restarts between scrapes.
            (vec![(1, g(1, 0)), (2, g(4, 5))], 41, 5, 2),
            (vec![(1, g(3, 0)), (2, g(4, 5))], 43, 5, 2),
            (vec![], 43, 0, 0),
        ];
        let mut last = 0;
        for (i, (groups, committed, pending, led)) in steps.into_iter().enumerate() {
            let f = m.fold(groups);
            assert_eq!(
                (f.committed, f.pending, f.has_leader),
                (committed, pending, led),
                "step {i}"
            );
            assert!(
                f.committed >= last && f.leader_changes <= f.committed,
                "step {i}"
            );
            last = f.committed;
        }
    }

    #[test]
    fn group_figures_sum_except_the_term() {
        let g = |leader: bool, term: i64, commit: i64| GroupFigures {
            has_leader: 1,
            is_leader: leader as i64,
            term,
            commit,
            applied: commit,
            committed: 2,
            ..Default::default()
        };
        let cases = [
            (vec![], GroupFigures::default()),
            (vec![g(true, 3, 10)], g(true, 3, 10)),
            (
                vec![g(true, 3, 10), g(false, 7, 5), g(true, 2, 1)],
                GroupFigures {
                    has_leader: 3,
                    is_leader: 2,
                    term: 7,
                    commit: 16,
                    applied: 16,
                    committed: 6,
                    ..Default::default()
                },
            ),
        ];
        for (groups, expected) in cases {
            assert_eq!(fold_groups(groups.clone()), expected, "{groups:?}");
        }
    }
}
