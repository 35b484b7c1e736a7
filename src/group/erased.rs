//! A replica whose data was erased here (an operator's purge, then the group added again)
//! rejoins under the same node id with an empty log. Were it to vote at once, a candidate that
//! lacks an acknowledged entry could win with it: the entry may have been on a majority only
//! thanks to this replica's erased copy. So it refuses every vote until it has caught up: until
//! its log reaches an index that a leader committed in its own term, which a leader can only do
//! after every entry acknowledged before it, erased ones included.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use openraft::async_runtime::WatchReceiver;
use tokio_util::sync::CancellationToken;

use crate::raft::state_machine::Raft;
use crate::raft::types::GroupId;
use crate::storage::Storage;

/// Whether a replica's log holds everything acknowledged before it was erased: it reaches
/// `committed` (term, index), as reported by a leader of `current_term`, in that same term.
pub fn caught_up(
    committed: Option<(u64, u64)>,
    current_term: u64,
    last_index: Option<u64>,
) -> bool {
    match (committed, last_index) {
        (Some((term, index)), Some(last)) => term == current_term && last >= index,
        _ => false,
    }
}

/// Watches an erased replica until it has caught up, then records that it may vote again.
pub async fn watch(
    raft: Raft,
    storage: Storage,
    group: GroupId,
    erased: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let mut rx = raft.metrics();
    loop {
        let done = {
            let m = rx.borrow_watched();
            let committed = m
                .cluster_committed
                .map(|c| (c.committed_leader_id().term, c.index));
            caught_up(committed, m.current_term, m.last_log_index)
        };
        if done {
            match storage.rejoined(group).await {
                Ok(()) => {
                    erased.store(false, Ordering::Release);
                    tracing::info!(
                        group,
                        "replica caught up after its data was erased: it votes again"
                    );
                }
                Err(e) => {
                    tracing::error!(group, error = %e, "cannot record that the erased replica caught up")
                }
            }
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::caught_up;

    #[test]
    fn only_a_commit_of_the_leader_s_own_term_that_the_log_reaches_counts() {
        // Nothing heard from a leader yet.
        assert!(!caught_up(None, 3, Some(10)));
        assert!(!caught_up(Some((3, 10)), 3, None));
        // Behind the leader's commit.
        assert!(!caught_up(Some((3, 10)), 3, Some(9)));
        // A commit of an older term: the new leader may not have committed its own entry yet,
        // so its commit index can trail what was acknowledged before.
        assert!(!caught_up(Some((2, 10)), 3, Some(12)));
        assert!(caught_up(Some((3, 10)), 3, Some(10)));
        assert!(caught_up(Some((3, 10)), 3, Some(11)));
    }
}
