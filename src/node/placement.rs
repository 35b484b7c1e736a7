//! Where group leadership should live, as plain functions: which member bootstraps (and so
//! first leads) a fresh group, and which of this node's groups to hand to another node when it
//! leads more than its share. A node's cost follows the groups it leads (it replicates, fsyncs
//! first and answers every write), so one node leading every group caps the cluster at one
//! node's throughput; these rules spread leadership evenly, at start and after any restart.

use std::collections::{BTreeMap, BTreeSet};

use crate::ids::{GroupId, NodeId};

/// The member that bootstraps group `group` on a fresh cluster, and so becomes its first
/// leader: members take turns by group id (group 1 the lowest id, group 2 the next, ...).
/// Every node computes the same answer from the same member list, so exactly one bootstraps.
pub fn preferred_leader(group: GroupId, members: &BTreeSet<NodeId>) -> Option<NodeId> {
    if members.is_empty() {
        return None;
    }
    let i = (group.saturating_sub(1) % members.len() as u64) as usize;
    members.iter().nth(i).copied()
}

/// One of this node's groups as the balancer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupView {
    /// The group.
    pub group: GroupId,
    /// Its leader as this node knows it.
    pub leader: Option<NodeId>,
    /// Where leadership may move when this node leads it: voters that are caught up and
    /// answered recently. Empty when this node does not lead it.
    pub ready: BTreeSet<NodeId>,
}

/// A leadership move to ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Move {
    /// The group.
    pub group: GroupId,
    /// Its new leader.
    pub to: NodeId,
}

/// The moves this node (`me`) makes now, at most `max_moves`. Only the node that leads more
/// than its share acts, and only on its own groups, so two nodes never pull one group apart.
/// The share is the groups with a known leader divided by the members, rounded up; a node
/// acts when it leads more than the share plus `slack`, and hands groups over until it is at
/// the share. A group goes to its preferred leader when that node is below its share and ready,
/// otherwise to the ready node that leads the fewest (planned moves counted), never to a node
/// that would then be above the share.
pub fn rebalance(
    me: NodeId,
    members: &BTreeSet<NodeId>,
    groups: &[GroupView],
    slack: usize,
    max_moves: usize,
) -> Vec<Move> {
    if members.len() < 2 {
        return Vec::new();
    }
    let mut led: BTreeMap<NodeId, usize> = members.iter().map(|m| (*m, 0)).collect();
    let mut known: usize = 0;
    for g in groups {
        if let Some(l) = g.leader {
            known += 1;
            *led.entry(l).or_default() += 1;
        }
    }
    let share = known.div_ceil(members.len());
    let mine = led.get(&me).copied().unwrap_or(0);
    if mine <= share + slack {
        return Vec::new();
    }
    let mut excess = (mine - share).min(max_moves);
    let mut moves = Vec::new();
    let mine_groups = || groups.iter().filter(|g| g.leader == Some(me));
    // First pass: groups whose preferred leader can take them; second: anyone below share.
    for preferred_only in [true, false] {
        for g in mine_groups() {
            if excess == 0 {
                return moves;
            }
            if moves.iter().any(|m: &Move| m.group == g.group) {
                continue;
            }
            let to = if preferred_only {
                preferred_leader(g.group, members)
                    .filter(|p| *p != me && g.ready.contains(p) && led[p] < share)
            } else {
                g.ready
                    .iter()
                    .filter(|n| **n != me && led.get(n).is_some_and(|c| *c < share))
                    .min_by_key(|n| (led[n], **n))
                    .copied()
            };
            if let Some(to) = to {
                *led.entry(to).or_default() += 1;
                excess -= 1;
                moves.push(Move { group: g.group, to });
            }
        }
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    /// `leaders[i]` leads group i+1; groups this node leads are ready to move to `ready`.
    fn views(me: NodeId, leaders: &[Option<NodeId>], ready: &[NodeId]) -> Vec<GroupView> {
        leaders
            .iter()
            .enumerate()
            .map(|(i, l)| GroupView {
                group: i as u64 + 1,
                leader: *l,
                ready: if *l == Some(me) {
                    set(ready)
                } else {
                    BTreeSet::new()
                },
            })
            .collect()
    }

    #[test]
    fn preferred_leaders_take_turns() {
        let m = set(&[1, 2, 3]);
        let got: Vec<_> = (1..=7).map(|g| preferred_leader(g, &m).unwrap()).collect();
        assert_eq!(got, vec![1, 2, 3, 1, 2, 3, 1]);
        assert_eq!(preferred_leader(5, &set(&[4])), Some(4));
        assert_eq!(preferred_leader(1, &set(&[])), None);
        // Ids need not be dense.
        assert_eq!(preferred_leader(2, &set(&[10, 20])), Some(20));
    }

    /// (case, me, leaders of groups 1.., ready targets, slack, max moves, expected moves)
    type Case = (
        &'static str,
        NodeId,
        Vec<Option<NodeId>>,
        Vec<NodeId>,
        usize,
        usize,
        Vec<(u64, u64)>,
    );

    #[test]
    fn rebalance_table() {
        let m = set(&[1, 2, 3]);
        let (s1, s2, s3) = (Some(1), Some(2), Some(3));
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("balanced: nothing", 1, vec![s1, s2, s3], vec![2, 3], 0, 10, vec![]),
            ("one node leads all: moves to preferred leaders", 1, vec![s1; 6], vec![2, 3], 0, 10,
                vec![(2, 2), (3, 3), (5, 2), (6, 3)]),
            ("only the overloaded node acts", 2, vec![s1; 6], vec![1, 3], 0, 10, vec![]),
            ("bounded per round", 1, vec![s1; 6], vec![2, 3], 0, 1, vec![(2, 2)]),
            ("within slack: nothing", 1, vec![s1, s1, s1, s2, s3], vec![2, 3], 1, 10, vec![]),
            ("above slack: down to the share", 1, vec![s1, s1, s1, s1, s2, s3], vec![2, 3], 1, 10,
                vec![(2, 2), (3, 3)]),
            ("preferred not ready: the least loaded ready node", 1, vec![s1; 6], vec![3], 0, 10,
                vec![(3, 3), (6, 3)]),
            ("nobody ready: nothing", 1, vec![s1; 6], vec![], 0, 10, vec![]),
            ("restarted node 3 leads none: groups go to it", 1, vec![s1, s2, s1, s1, s2, s1],
                vec![2, 3], 0, 10, vec![(3, 3), (6, 3)]),
            ("unknown leaders do not count", 1, vec![s1, None, None, None], vec![2, 3], 0, 10, vec![]),
            ("never above the share on the receiving side", 1, vec![s1, s2, s1, s1, s2, s3], vec![2],
                0, 10, vec![]),
        ];
        for (case, me, leaders, ready, slack, max, want) in cases {
            let got: Vec<(u64, u64)> = rebalance(me, &m, &views(me, &leaders, &ready), slack, max)
                .into_iter()
                .map(|mv| (mv.group, mv.to))
                .collect();
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn a_single_member_never_moves() {
        let m = set(&[1]);
        assert!(rebalance(1, &m, &views(1, &[Some(1); 4], &[]), 0, 10).is_empty());
    }
}
