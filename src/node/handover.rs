//! Leadership hand-over before a group stops, and the choice of whom to hand it to.
//!
//! The choice is a plain function over the replication progress that openraft reports, so the
//! policy is tested without a cluster: prefer a voter whose matched log is our last log (it can
//! win at once), else the voter closest to it; never one that stopped answering.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::Instant as _;

use crate::group::Group;
use crate::raft::types::NodeId;

/// What the leader knows of one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Follower {
    /// The follower's node id.
    pub id: NodeId,
    /// The highest log index it has matched, if any.
    pub matched: Option<u64>,
    /// How long ago it last acknowledged a heartbeat, if ever.
    pub last_ack: Option<Duration>,
}

/// Picks the voter (other than `me`) with the highest matched log index, among those that
/// acknowledged a heartbeat within `fresh` (any, when `None`). Ties go to the lowest id, so
/// that a cluster-wide shutdown is deterministic.
pub fn pick_successor(
    me: NodeId,
    voters: &BTreeSet<NodeId>,
    followers: &[Follower],
    fresh: Option<Duration>,
) -> Option<NodeId> {
    followers
        .iter()
        .filter(|f| f.id != me && voters.contains(&f.id))
        .filter(|f| fresh.is_none_or(|fresh| f.last_ack.is_some_and(|a| a < fresh)))
        .map(|f| (f.id, f.matched.unwrap_or(0)))
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .map(|(id, _)| id)
}

/// What the leader of `g` knows of its followers, from openraft's metrics.
pub fn followers(g: &Group) -> (NodeId, BTreeSet<NodeId>, Vec<Follower>) {
    let m = g.raft.metrics().borrow_watched().clone();
    let voters = m.membership_config.membership().voter_ids().collect();
    let acks = m.heartbeat.as_ref();
    let followers = m
        .replication
        .as_ref()
        .map(|r| {
            r.iter()
                .map(|(id, l)| Follower {
                    id: *id,
                    matched: l.map(|l| l.index),
                    last_ack: acks
                        .and_then(|h| h.get(id).cloned().flatten())
                        .map(|t| t.elapsed()),
                })
                .collect()
        })
        .unwrap_or_default();
    (m.id, voters, followers)
}

/// For every group this node leads, asks openraft to transfer leadership to the best-caught-up
/// responsive voter, then waits (bounded by `wait`) until each group reports another leader.
pub async fn hand_over_leadership(groups: &[Arc<Group>], wait: Duration) {
    // Sleeping groups first wake, with a heartbeat round: the successor is chosen among the
    // voters that answered recently, which no member of a quiesced group has.
    let wakes = groups
        .iter()
        .filter(|g| g.is_quiesced() && g.is_leader())
        .map(|g| g.wake_for_work());
    let _ = tokio::time::timeout(wait / 4, futures::future::join_all(wakes)).await;
    let mut pending = Vec::new();
    for g in groups {
        if !g.is_leader() {
            continue;
        }
        // Only voters that acknowledged a heartbeat within an election timeout: handing over to
        // one that is gone (or no longer hosts the group) would only wait out the deadline.
        let fresh = Duration::from_millis(g.raft.config().election_timeout_min);
        let (me, voters, followers) = followers(g);
        let Some(to) = pick_successor(me, &voters, &followers, Some(fresh)) else {
            continue;
        };
        tracing::info!(group = g.id, to, "transferring leadership before stop");
        if let Err(e) = g.raft.trigger().transfer_leader(to).await {
            tracing::warn!(group = g.id, error = %e, "leader transfer request failed");
            continue;
        }
        pending.push((g.clone(), to));
    }
    let until = tokio::time::Instant::now() + wait;
    for (g, to) in pending {
        let mut rx = g.raft.metrics();
        let me = *g.raft.node_id();
        let heartbeat = Duration::from_millis(g.raft.config().heartbeat_interval);
        let moved = tokio::time::timeout_at(until, async {
            loop {
                let m = rx.borrow_and_update().clone();
                if m.current_leader.is_some_and(|l| l != me) {
                    return m.current_leader;
                }
                // A successor that stopped acknowledging (it went away, or stopped hosting the
                // group) will never take over: stop waiting for it.
                let stale = m
                    .heartbeat
                    .as_ref()
                    .and_then(|h| h.get(&to).cloned().flatten())
                    .is_some_and(|t| t.elapsed() > heartbeat * 3);
                if stale {
                    tracing::info!(
                        group = g.id,
                        to,
                        "successor stopped answering; not waiting for it"
                    );
                    return None;
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return None },
                    _ = tokio::time::sleep(heartbeat) => {}
                }
            }
        })
        .await;
        match moved {
            Ok(Some(to)) => tracing::info!(group = g.id, to, "leadership moved"),
            _ => tracing::warn!(
                group = g.id,
                "leadership did not move in time; stopping anyway"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(id: NodeId, matched: Option<u64>, ack_ms: Option<u64>) -> Follower {
        Follower {
            id,
            matched,
            last_ack: ack_ms.map(Duration::from_millis),
        }
    }

    #[test]
    fn successor_choice() {
        let voters = |ids: &[NodeId]| ids.iter().copied().collect::<BTreeSet<_>>();
        let fresh = Some(Duration::from_millis(1000));
        // (voters, followers, freshness, expected)
        let cases = [
            // The most caught-up voter wins; ties go to the lowest id.
            (
                voters(&[1, 2, 3, 4]),
                vec![
                    f(2, Some(10), Some(5)),
                    f(3, Some(12), Some(5)),
                    f(4, Some(12), Some(5)),
                ],
                fresh,
                Some(3),
            ),
            // Learners (not voters) and this node never.
            (
                voters(&[1, 2]),
                vec![
                    f(1, Some(99), Some(5)),
                    f(2, Some(10), Some(5)),
                    f(5, Some(99), Some(5)),
                ],
                fresh,
                Some(2),
            ),
            (voters(&[1]), vec![f(5, Some(99), Some(5))], fresh, None),
            // Unknown progress counts as behind.
            (
                voters(&[1, 2, 3]),
                vec![f(2, None, Some(5)), f(3, Some(1), Some(5))],
                fresh,
                Some(3),
            ),
            // A voter that stopped answering is skipped, however caught up...
            (
                voters(&[1, 2, 3]),
                vec![f(2, Some(50), Some(3000)), f(3, Some(40), Some(5))],
                fresh,
                Some(3),
            ),
            // ...as is one that never answered...
            (voters(&[1, 2]), vec![f(2, Some(50), None)], fresh, None),
            // ...unless freshness does not matter (an operator's explicit transfer).
            (voters(&[1, 2]), vec![f(2, Some(50), None)], None, Some(2)),
        ];
        for (voters, followers, fresh, expected) in cases {
            assert_eq!(
                pick_successor(1, &voters, &followers, fresh),
                expected,
                "{followers:?}"
            );
        }
    }
}
