//! Leadership hand-over before a group stops, and the choice of whom to hand it to.
//!
//! The choice is a plain function over the replication progress that openraft reports, so the
//! policy is tested without a cluster: prefer a voter whose matched log is our last log (it can
//! win at once), else the voter closest to it.

use openraft::async_runtime::WatchReceiver;
use openraft::Instant as _;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::group::Group;
use crate::raft::types::NodeId;

/// Picks the voter (other than `me`) with the highest matched log index. Ties go to the lowest
/// id, so that a cluster-wide shutdown is deterministic.
pub fn pick_successor(
    me: NodeId,
    voters: impl IntoIterator<Item = NodeId>,
    matched: &BTreeMap<NodeId, Option<u64>>,
) -> Option<NodeId> {
    voters
        .into_iter()
        .filter(|v| *v != me)
        .filter_map(|v| matched.get(&v).map(|m| (v, m.unwrap_or(0))))
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .map(|(v, _)| v)
}

/// For every group this node leads, asks openraft to transfer leadership to the best-caught-up
/// voter, then waits (bounded by `wait`) until each group reports another leader.
pub async fn hand_over_leadership(groups: &[Arc<Group>], wait: Duration) {
    let mut pending = Vec::new();
    for g in groups {
        let m = g.raft.metrics().borrow_watched().clone();
        if m.current_leader != Some(m.id) {
            continue;
        }
        // Only voters that acknowledged a heartbeat within an election timeout: handing over to
        // one that is gone (or no longer hosts the group) would only wait out the deadline.
        let fresh = Duration::from_millis(g.raft.config().election_timeout_min);
        let responsive = |id: &NodeId| {
            m.heartbeat
                .as_ref()
                .and_then(|h| h.get(id).cloned().flatten())
                .is_some_and(|t| t.elapsed() < fresh)
        };
        let matched: BTreeMap<NodeId, Option<u64>> = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .filter(|(id, _)| responsive(id))
                    .map(|(id, l)| (*id, l.map(|l| l.index)))
                    .collect()
            })
            .unwrap_or_default();
        let voters = m.membership_config.membership().voter_ids();
        let Some(to) = pick_successor(m.id, voters, &matched) else {
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

    #[test]
    fn prefers_the_most_caught_up_voter() {
        let matched = BTreeMap::from([(2, Some(10)), (3, Some(12)), (4, Some(12))]);
        assert_eq!(pick_successor(1, [1, 2, 3, 4], &matched), Some(3));
    }

    #[test]
    fn ignores_non_voters_and_self() {
        let matched = BTreeMap::from([(2, Some(10)), (5, Some(99))]);
        assert_eq!(pick_successor(1, [1, 2], &matched), Some(2));
        assert_eq!(pick_successor(1, [1], &matched), None);
    }

    #[test]
    fn unknown_progress_counts_as_behind() {
        let matched = BTreeMap::from([(2, None), (3, Some(1))]);
        assert_eq!(pick_successor(1, [2, 3], &matched), Some(3));
    }
}
