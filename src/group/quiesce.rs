//! When an idle group may stop its timers, as plain functions. A quiesced group costs nothing
//! while nothing happens: its leader sends no heartbeats and its followers run no election
//! timers (openraft's tick is off on every member). That is safe only while every live member
//! (a majority of the voters among them) agrees on a fully replicated, fully applied log, and
//! only while the leader's node is alive: the node-level liveness probe wakes the groups of a
//! node that stops answering, and the groups led with a node that answers again.

use std::collections::{BTreeMap, BTreeSet};

use crate::ids::NodeId;
pub use crate::rpc::messages::{QuiesceItem, QuiesceRequest};

/// What the leader of a group knows, from its openraft metrics and counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderFacts {
    /// The leader's node.
    pub me: NodeId,
    /// Its term (named in the request, not part of the decision).
    pub term: u64,
    /// The group's voters.
    pub voters: BTreeSet<NodeId>,
    /// Every other member's matched log index (learners included).
    pub matched: BTreeMap<NodeId, Option<u64>>,
    /// The leader's last log index.
    pub last_log: Option<u64>,
    /// Its committed index.
    pub committed: Option<u64>,
    /// Its applied index.
    pub applied: Option<u64>,
    /// Proposals in flight.
    pub pending: u64,
    /// Whether a client's proposal was answered through this node since the group last slept.
    pub written: bool,
    /// Consecutive rounds in which the last log index did not move.
    pub quiet_rounds: u32,
}

/// Whether the leader asks its members to quiesce the group now: it has been quiet long
/// enough, nothing is in flight, and every entry is committed and applied. Whether it then
/// sleeps is [`may_quiesce`], with the members that answered.
pub fn may_ask(f: &LeaderFacts, rounds: u32) -> bool {
    let Some(last) = f.last_log else {
        return false;
    };
    f.quiet_rounds >= rounds_needed(f.written, rounds)
        && f.pending == 0
        && f.committed == Some(last)
        && f.applied == Some(last)
        && f.voters.contains(&f.me)
}

/// Whether the leader may quiesce the group now: [`may_ask`], and every member that takes part
/// (`present`: its node answers the liveness probe and runs the group) has every entry, these
/// voters with the leader being a majority. A member whose node is down, or that does not run
/// the group yet (its node is starting), is left out: the leader wakes the group when that node
/// serves again, and a group must not stay awake, heartbeating, for as long as one member is
/// gone.
pub fn may_quiesce(f: &LeaderFacts, rounds: u32, present: &BTreeSet<NodeId>) -> bool {
    let Some(last) = f.last_log else {
        return false;
    };
    let others: BTreeSet<NodeId> = members_to_ask(f, present);
    let caught_up_voters = f
        .voters
        .iter()
        .filter(|v| **v == f.me || others.contains(v))
        .count();
    may_ask(f, rounds)
        && caught_up_voters * 2 > f.voters.len()
        && others.iter().all(|n| f.matched.get(n) == Some(&Some(last)))
}

/// The members a quiescing leader asks: every other member (voter or learner) whose node
/// answers the liveness probe.
pub fn members_to_ask(f: &LeaderFacts, live: &BTreeSet<NodeId>) -> BTreeSet<NodeId> {
    f.voters
        .iter()
        .chain(f.matched.keys())
        .copied()
        .filter(|n| *n != f.me && live.contains(n))
        .collect()
}

/// Quiet rounds a group needs before it may sleep: `rounds` after a client's write (a group
/// written a moment ago is likely written again soon, and waking costs a heartbeat round), one when
/// nobody wrote it since it last slept here (a fresh group, or one woken to elect a new leader
/// or to catch a member up): nothing then suggests another write soon, and ten thousand such
/// groups heartbeating for three rounds each saturated this machine's nodes.
pub fn rounds_needed(written: bool, rounds: u32) -> u32 {
    if written {
        rounds
    } else {
        rounds.min(1)
    }
}

/// What a follower knows when its leader asks it to quiesce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerFacts {
    /// The leader it follows.
    pub leader: Option<NodeId>,
    /// Its term.
    pub term: u64,
    /// Its last log index.
    pub last_log: Option<u64>,
    /// Its committed index.
    pub committed: Option<u64>,
}

/// Whether a follower accepts: it follows that leader in that term, and has every entry the
/// leader has, committed. Anything else, and the follower keeps its timers, the leader hears
/// the refusal and keeps its own.
pub fn follower_accepts(f: &FollowerFacts, leader: NodeId, item: &QuiesceItem) -> bool {
    f.leader == Some(leader)
        && f.term == item.term
        && f.last_log == Some(item.last_log)
        && f.committed == Some(item.last_log)
}

/// What a replica knows of its group when it starts on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartFacts {
    /// This node initialises the group now (it elects at once).
    pub bootstraps: bool,
    /// The group has state here: a log, a vote or a snapshot.
    pub has_state: bool,
    /// The leader its stored vote names, when that vote is committed (this node, if it led).
    pub committed_leader: Option<NodeId>,
    /// Whether that leader is a member this node watches with the liveness probe (or this
    /// node itself).
    pub leader_watched: bool,
    /// Whether quiescence is on: without it, nothing would wake a sleeping replica whose
    /// leader died.
    pub quiescence: bool,
}

/// Whether a replica starts asleep (openraft's tick off). A replica that bootstraps elects, so
/// it starts awake. One without state has no membership, so its timer could never campaign:
/// its leader's first vote or entries wake it. One with state that knows its group's leader
/// starts asleep when quiescence is on: a restarted node of ten thousand groups otherwise ran
/// ten thousand election timers against leaders that sleep, and campaigned against every one of
/// them. If that leader's node is down, the probe sees it (every peer is presumed live at start
/// and declared down after the usual silence) and the group campaigns; if it is alive, it
/// wakes the group when it learns this node is back, or sends the entries that wake it. A
/// restarted leader (the vote names this node) sleeps too: it leads as before until work
/// wakes it, or a newer leader's first message makes it follow. Only a replica with state that
/// knows no leader (an election was under way), or whose leader the probe does not watch,
/// starts awake, so that an election still happens.
pub fn starts_asleep(f: &StartFacts) -> bool {
    if f.bootstraps {
        return false;
    }
    if !f.has_state {
        return true;
    }
    f.quiescence && f.committed_leader.is_some() && f.leader_watched
}

/// Which member of a quiesced group whose leader's node died campaigns at once. The others
/// wake one election timeout later (or at the new leader's first message), so that two
/// survivors do not split the vote by campaigning together. Every survivor computes the same
/// answer from the same membership: the first live voter after the dead leader, in id order
/// (wrapping), which spreads the new leaderships of one dead node over the survivors by group.
pub fn campaigner(
    group: u64,
    voters: &BTreeSet<NodeId>,
    dead: NodeId,
    live: &BTreeSet<NodeId>,
) -> Option<NodeId> {
    let candidates: Vec<NodeId> = voters
        .iter()
        .copied()
        .filter(|v| *v != dead && live.contains(v))
        .collect();
    if candidates.is_empty() {
        return None;
    }
    Some(candidates[(group as usize) % candidates.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    fn idle_leader() -> LeaderFacts {
        LeaderFacts {
            me: 1,
            term: 2,
            voters: set(&[1, 2, 3]),
            matched: [(2, Some(7)), (3, Some(7))].into_iter().collect(),
            last_log: Some(7),
            committed: Some(7),
            applied: Some(7),
            pending: 0,
            written: true,
            quiet_rounds: 3,
        }
    }

    /// A group nobody wrote since it last slept here (a fresh one, or one that elected a new
    /// leader), quiet for `rounds` rounds.
    fn unwritten_leader(rounds: u32) -> LeaderFacts {
        LeaderFacts {
            written: false,
            quiet_rounds: rounds,
            ..idle_leader()
        }
    }

    #[test]
    fn leader_table() {
        let live = set(&[1, 2, 3]);
        let cases: Vec<(&str, LeaderFacts, BTreeSet<NodeId>, bool)> = vec![
            ("idle and replicated", idle_leader(), live.clone(), true),
            (
                "not quiet long enough",
                LeaderFacts {
                    quiet_rounds: 2,
                    ..idle_leader()
                },
                live.clone(),
                false,
            ),
            (
                "a proposal in flight",
                LeaderFacts {
                    pending: 1,
                    ..idle_leader()
                },
                live.clone(),
                false,
            ),
            (
                "a follower behind",
                LeaderFacts {
                    matched: [(2, Some(7)), (3, Some(6))].into_iter().collect(),
                    ..idle_leader()
                },
                live.clone(),
                false,
            ),
            (
                "a follower never replicated",
                LeaderFacts {
                    matched: [(2, Some(7)), (3, None)].into_iter().collect(),
                    ..idle_leader()
                },
                live.clone(),
                false,
            ),
            (
                "a voter missing from replication",
                LeaderFacts {
                    matched: [(2, Some(7))].into_iter().collect(),
                    ..idle_leader()
                },
                live.clone(),
                false,
            ),
            (
                "not committed",
                LeaderFacts {
                    committed: Some(6),
                    ..idle_leader()
                },
                live.clone(),
                false,
            ),
            (
                "not applied",
                LeaderFacts {
                    applied: Some(6),
                    ..idle_leader()
                },
                live.clone(),
                false,
            ),
            // The leader wakes the group when the member's node answers again.
            ("a member's node down", idle_leader(), set(&[1, 2]), true),
            ("two members' nodes down", idle_leader(), set(&[1]), false),
            (
                "a member's node down, the other behind",
                LeaderFacts {
                    matched: [(2, Some(6)), (3, Some(7))].into_iter().collect(),
                    ..idle_leader()
                },
                set(&[1, 2]),
                false,
            ),
            (
                "a learner's node down",
                LeaderFacts {
                    matched: [(2, Some(7)), (3, Some(7)), (4, Some(5))]
                        .into_iter()
                        .collect(),
                    ..idle_leader()
                },
                live.clone(),
                true,
            ),
            (
                "unwritten, one quiet round",
                unwritten_leader(1),
                live.clone(),
                true,
            ),
            (
                "unwritten, not yet seen quiet",
                unwritten_leader(0),
                live.clone(),
                false,
            ),
            (
                "written, one quiet round",
                LeaderFacts {
                    quiet_rounds: 1,
                    ..idle_leader()
                },
                live.clone(),
                false,
            ),
            (
                "a learner behind",
                LeaderFacts {
                    matched: [(2, Some(7)), (3, Some(7)), (4, Some(5))]
                        .into_iter()
                        .collect(),
                    ..idle_leader()
                },
                set(&[1, 2, 3, 4]),
                false,
            ),
            (
                "empty log",
                LeaderFacts {
                    last_log: None,
                    ..idle_leader()
                },
                live.clone(),
                false,
            ),
            (
                "a single-member group",
                LeaderFacts {
                    voters: set(&[1]),
                    matched: BTreeMap::new(),
                    ..idle_leader()
                },
                set(&[1]),
                true,
            ),
        ];
        for (case, facts, live, want) in cases {
            assert_eq!(may_quiesce(&facts, 3, &live), want, "{case}");
        }
    }

    #[test]
    fn start_table() {
        let base = StartFacts {
            bootstraps: false,
            has_state: true,
            committed_leader: Some(2),
            leader_watched: true,
            quiescence: true,
        };
        #[rustfmt::skip]
        let cases = [
            ("restarted follower of a known leader", base, true),
            ("restarted leader", StartFacts { committed_leader: Some(1), ..base }, true),
            ("bootstrapper", StartFacts { bootstraps: true, has_state: false, committed_leader: None, ..base }, false),
            ("no state yet", StartFacts { has_state: false, committed_leader: None, ..base }, true),
            ("no state, quiescence off", StartFacts { has_state: false, committed_leader: None, quiescence: false, ..base }, true),
            ("an election was under way", StartFacts { committed_leader: None, ..base }, false),
            ("leader not watched by the probe", StartFacts { leader_watched: false, ..base }, false),
            ("quiescence off", StartFacts { quiescence: false, ..base }, false),
        ];
        for (case, facts, want) in cases {
            assert_eq!(starts_asleep(&facts), want, "{case}");
        }
    }

    #[test]
    fn follower_table() {
        let item = QuiesceItem {
            group: 1,
            term: 4,
            last_log: 9,
        };
        let ok = FollowerFacts {
            leader: Some(1),
            term: 4,
            last_log: Some(9),
            committed: Some(9),
        };
        let cases = [
            ("in step", ok, true),
            (
                "another leader",
                FollowerFacts {
                    leader: Some(2),
                    ..ok
                },
                false,
            ),
            ("no leader", FollowerFacts { leader: None, ..ok }, false),
            ("another term", FollowerFacts { term: 5, ..ok }, false),
            (
                "behind",
                FollowerFacts {
                    last_log: Some(8),
                    ..ok
                },
                false,
            ),
            (
                "ahead (uncommitted tail)",
                FollowerFacts {
                    last_log: Some(10),
                    ..ok
                },
                false,
            ),
            (
                "not yet told of the commit",
                FollowerFacts {
                    committed: Some(8),
                    ..ok
                },
                false,
            ),
        ];
        for (case, facts, want) in cases {
            assert_eq!(follower_accepts(&facts, 1, &item), want, "{case}");
        }
    }

    #[test]
    fn one_campaigner_per_group_spread_over_survivors() {
        let voters = set(&[1, 2, 3]);
        let live = set(&[2, 3]);
        let got: Vec<_> = (1..=4)
            .map(|g| campaigner(g, &voters, 1, &live).unwrap())
            .collect();
        assert_eq!(got, vec![3, 2, 3, 2]);
        assert_eq!(campaigner(1, &voters, 1, &set(&[])), None);
        // A voter that is itself down never campaigns.
        assert_eq!(campaigner(1, &voters, 1, &set(&[3])), Some(3));
    }
}
