//! One Raft group: its openraft instance, its state machine and its owner in the ledger.
//! Starting a group wires openraft to the shared storage and peer channels; stopping it shuts
//! openraft down and then holds the group's owner to a zero count.

pub mod state_machine;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::BasicNode;
use tokio_util::sync::CancellationToken;

use crate::ledger::{Leak, Owner};
use crate::raft::log_store::GroupLogStore;
use crate::raft::types::{GroupId, NodeId, Raft};
use crate::rpc::network::GroupNetworkFactory;
use crate::rpc::peers::Peers;
use crate::storage::Storage;
pub use state_machine::KvStateMachine;

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("group {group}: cannot open its state: {source}")]
    Open {
        group: GroupId,
        source: std::io::Error,
    },
    #[error("group {group}: openraft failed to start: {reason}")]
    Raft { group: GroupId, reason: String },
    #[error("group {group}: cannot bootstrap: {reason}")]
    Bootstrap { group: GroupId, reason: String },
}

/// What every group of a node shares.
#[derive(Clone)]
pub struct GroupDeps {
    pub node_id: NodeId,
    pub raft_config: Arc<openraft::Config>,
    pub storage: Storage,
    pub peers: Peers,
    pub max_message_bytes: usize,
    pub rpc_metrics: Arc<crate::metrics::RpcMetrics>,
}

/// Figures of one group that openraft's metrics do not carry.
#[derive(Default)]
pub struct GroupStats {
    pub proposals_committed: AtomicU64,
    pub proposals_failed: AtomicU64,
    pub proposals_pending: AtomicI64,
    pub leader_changes: AtomicU64,
}

impl GroupStats {
    /// Counts one proposal from submission to its outcome; `None` means it was never proposed
    /// here (redirected to the leader), which is neither a commit nor a failure.
    pub fn proposal(&self) -> ProposalGuard<'_> {
        self.proposals_pending.fetch_add(1, Ordering::Relaxed);
        ProposalGuard { stats: self }
    }
}

pub struct ProposalGuard<'a> {
    stats: &'a GroupStats,
}

impl ProposalGuard<'_> {
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

pub struct Group {
    pub id: GroupId,
    pub raft: Raft,
    pub sm: KvStateMachine,
    pub stats: Arc<GroupStats>,
    owner: Owner,
}

impl Group {
    /// Starts the group under `owner`. When `bootstrap` holds the members, and the group has no
    /// state yet, this node initialises the group with them.
    pub async fn start(
        deps: &GroupDeps,
        id: GroupId,
        owner: Owner,
        bootstrap: Option<BTreeMap<NodeId, BasicNode>>,
    ) -> Result<Group, GroupError> {
        let sm = KvStateMachine::open(id, deps.storage.snapshot_dir().to_path_buf())
            .map_err(|source| GroupError::Open { group: id, source })?;
        let log = GroupLogStore::new(deps.storage.clone(), id);
        let net = GroupNetworkFactory::new(id, owner.clone(), deps.clone());
        // In a task of its own, outside the caller's span: openraft parents its long-lived
        // core span (and so every log line of the group) on the span current at creation,
        // which would keep a `group.start` span open for the group's whole life.
        let raft = owner
            .spawn(
                "raft-new",
                Raft::new(deps.node_id, deps.raft_config.clone(), net, log, sm.clone()),
            )
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|reason| GroupError::Raft { group: id, reason })?;
        let stats = Arc::new(GroupStats::default());
        owner.spawn(
            "leader-watch",
            watch_leader(raft.clone(), stats.clone(), owner.token().clone()),
        );
        let group = Group {
            id,
            raft,
            sm,
            stats,
            owner,
        };
        if let Some(members) = bootstrap {
            let initialized =
                group
                    .raft
                    .is_initialized()
                    .await
                    .map_err(|e| GroupError::Bootstrap {
                        group: id,
                        reason: e.to_string(),
                    })?;
            if !initialized {
                tracing::info!(group = id, members = ?members.keys().collect::<Vec<_>>(), "bootstrapping group");
                if let Err(e) = group.owner.scope(group.raft.initialize(members)).await {
                    // A concurrent initialisation by another path is not an error.
                    if e.api_error().is_none() {
                        let _ = group.stop(Duration::from_secs(1)).await;
                        return Err(GroupError::Bootstrap {
                            group: id,
                            reason: e.to_string(),
                        });
                    }
                }
            }
        }
        Ok(group)
    }

    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Shuts openraft down, then waits for the group's owner to reach zero within `deadline`.
    pub async fn stop(&self, deadline: Duration) -> Option<Leak> {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(group = self.id, error = %e, "openraft shutdown reported an error");
        }
        self.owner.stop(deadline).await
    }
}

/// Counts leader changes as this node sees them, for `raftnode_raft_leader_changes_seen_total`:
/// a move from one known leader to another. A group's first election is not a change, so that a
/// group restarted a hundred times does not look like a flapping one.
async fn watch_leader(raft: Raft, stats: Arc<GroupStats>, stop: CancellationToken) {
    let mut rx = raft.metrics();
    let mut known = rx.borrow_watched().current_leader;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
        let now = rx.borrow_watched().current_leader;
        if let Some(now) = now {
            if known.is_some_and(|k| k != now) {
                stats.leader_changes.fetch_add(1, Ordering::Relaxed);
            }
            known = Some(now);
        }
    }
}
