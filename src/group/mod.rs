//! One Raft group: its openraft instance, its state machine and its owner in the ledger.
//! Starting a group wires openraft to the shared storage and peer channels; stopping it shuts
//! openraft down and then holds the group's owner to a zero count.

pub mod erased;
pub mod inflight;
pub mod quiesce;
pub mod requests;
pub mod stats;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::BasicNode;
use tokio_util::sync::CancellationToken;

use crate::ledger::{Leak, Owner};
use crate::raft::log_store::GroupLogStore;
use crate::raft::state_machine::{Raft, SmAdapter};
use crate::raft::types::{GroupId, NodeId};
use crate::rpc::network::{GroupNetworkFactory, NetworkDeps};
use crate::state_machine::ErasedStateMachine;
use crate::storage::Storage;
pub use stats::GroupStats;

/// Why a group did not start.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// Its state machine could not be restored from its snapshot.
    #[error("group {group}: cannot restore its state machine: {reason}")]
    Open {
        /// The group.
        group: GroupId,
        /// What failed.
        reason: String,
    },
    /// openraft refused to start it.
    #[error("group {group}: openraft failed to start: {reason}")]
    Raft {
        /// The group.
        group: GroupId,
        /// openraft's error.
        reason: String,
    },
    /// It could not be initialised with its first members.
    #[error("group {group}: cannot bootstrap: {reason}")]
    Bootstrap {
        /// The group.
        group: GroupId,
        /// openraft's error.
        reason: String,
    },
}

/// What every group of a node shares.
#[derive(Clone)]
pub struct GroupDeps {
    /// This node's id.
    pub node_id: NodeId,
    /// openraft's settings, the same for every group.
    pub raft_config: Arc<openraft::Config>,
    /// The node-wide storage engine.
    pub storage: Storage,
    /// What the network adapter needs.
    pub network: NetworkDeps,
    /// Quiesced groups woken on this node, node-wide (a counter that survives group stops).
    pub wakes: Arc<std::sync::atomic::AtomicU64>,
    /// The members the liveness probe watches, this node included.
    pub watched: Arc<std::collections::BTreeSet<NodeId>>,
    /// Whether idle groups quiesce (and the liveness probe runs).
    pub quiescence: bool,
    /// Proposals each group may hold in flight on this node.
    pub max_inflight_proposals: usize,
}

/// Whether a group sleeps here, and with whom.
#[derive(Debug, Default)]
struct Sleep {
    asleep: bool,
    /// When this node led the group to sleep: the members that agreed, caught up to its last
    /// entry. Nothing changes in a sleeping group, so they stay caught up until it wakes.
    agreed: std::collections::BTreeSet<NodeId>,
}

/// A running group.
pub struct Group {
    /// The group's id.
    pub id: GroupId,
    /// Its openraft instance.
    pub raft: Raft,
    /// Its state machine.
    pub sm: SmAdapter,
    /// Its proposal and leader-change counters.
    pub stats: Arc<GroupStats>,
    /// This node's numbering of the requests it proposes here.
    pub requests: Arc<requests::Requests>,
    /// Proposals in flight on this node for this group, and their bound.
    pub inflight: Arc<inflight::Inflight>,
    /// Whether this replica's data was erased and it has not caught up since: it votes for
    /// nobody meanwhile (see [`erased`]).
    erased: Arc<std::sync::atomic::AtomicBool>,
    /// Set while this node asks the leader's node whether it still leads (see
    /// `NodeCore::pre_vote_refusal`), so that one check runs at a time.
    pub leader_check: std::sync::atomic::AtomicBool,
    owner: Owner,
    /// Whether the group is quiesced here (openraft's tick off). Changed only with the tick,
    /// under this lock, so that a wake racing a quiesce can never leave the tick off while the
    /// flag says awake.
    quiesced: std::sync::Mutex<Sleep>,
    wakes: Arc<std::sync::atomic::AtomicU64>,
}

impl Group {
    /// Whether this replica's data was erased and it has not caught up since.
    pub fn is_erased(&self) -> bool {
        self.erased.load(Ordering::Acquire)
    }

    /// Starts the group under `owner` with `machine`. When `bootstrap` holds the members, and
    /// the group has no state yet, this node initialises the group with them.
    pub(crate) async fn start(
        deps: &GroupDeps,
        id: GroupId,
        owner: Owner,
        machine: Box<dyn ErasedStateMachine>,
        bootstrap: Option<BTreeMap<NodeId, BasicNode>>,
    ) -> Result<Group, GroupError> {
        let dir = deps.storage.snapshot_dir();
        let has_snapshot = crate::storage::snapshot_file::path(dir, id).exists();
        // Asked before anything of the group touches storage.
        let vote = deps.storage.with_group(id, |g| g.and_then(|g| g.vote));
        let committed_leader = vote
            .filter(|v| v.is_committed())
            .map(|v| v.leader_id().node_id);
        let asleep = quiesce::starts_asleep(&quiesce::StartFacts {
            bootstraps: bootstrap.is_some(),
            has_state: has_snapshot || deps.storage.has_group(id),
            committed_leader,
            leader_watched: committed_leader.is_some_and(|l| deps.watched.contains(&l)),
            quiescence: deps.quiescence,
        });
        let sm = if has_snapshot {
            // Restoring a snapshot reads a file of any size: on the blocking pool, as the
            // group's task. A group without one (the common case) costs no thread.
            let storage = deps.storage.clone();
            owner
                .spawn_blocking("sm-open", move || SmAdapter::open(id, &storage, machine))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
        } else {
            SmAdapter::open(id, &deps.storage, machine).map_err(|e| e.to_string())
        }
        .map_err(|reason| GroupError::Open { group: id, reason })?;
        let log = GroupLogStore::new(deps.storage.clone(), id, deps.network.max_append_bytes);
        let net = GroupNetworkFactory::new(id, owner.clone(), deps.network.clone());
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
        // Ten thousand replicas ticking (fifty times a second each) saturated a node before
        // any group had a leader, or while it restarted: see `quiesce::starts_asleep`.
        if asleep {
            raft.runtime_config().tick(false);
        }
        let stats = Arc::new(GroupStats::default());
        owner.spawn(
            "leader-watch",
            watch_leader(raft.clone(), stats.clone(), owner.token().clone()),
        );
        let is_erased = deps.storage.is_erased(id);
        let erased_flag = Arc::new(std::sync::atomic::AtomicBool::new(is_erased));
        if is_erased {
            tracing::warn!(
                group = id,
                "this replica's data was erased: it votes for nobody until it has caught up \
                 with a leader"
            );
            owner.spawn(
                "erased-watch",
                erased::watch(
                    raft.clone(),
                    deps.storage.clone(),
                    id,
                    erased_flag.clone(),
                    owner.token().clone(),
                ),
            );
        }
        let group = Group {
            id,
            raft,
            sm,
            stats,
            requests: Arc::new(requests::Requests::new(deps.node_id, id)),
            inflight: inflight::Inflight::new(deps.max_inflight_proposals),
            erased: erased_flag,
            leader_check: Default::default(),
            owner,
            quiesced: std::sync::Mutex::new(Sleep {
                asleep,
                agreed: Default::default(),
            }),
            wakes: deps.wakes.clone(),
        };
        if let Some(members) = bootstrap {
            if let Err(e) = group.bootstrap(members).await {
                let _ = group.stop(Duration::from_secs(1)).await;
                return Err(e);
            }
        }
        Ok(group)
    }

    async fn bootstrap(&self, members: BTreeMap<NodeId, BasicNode>) -> Result<(), GroupError> {
        let fail = |reason: String| GroupError::Bootstrap {
            group: self.id,
            reason,
        };
        if self
            .raft
            .is_initialized()
            .await
            .map_err(|e| fail(e.to_string()))?
        {
            return Ok(());
        }
        tracing::info!(group = self.id, members = ?members.keys().collect::<Vec<_>>(), "bootstrapping group");
        match self.owner.scope(self.raft.initialize(members)).await {
            // A concurrent initialisation by another path is not an error.
            Err(e) if e.api_error().is_none() => Err(fail(e.to_string())),
            _ => Ok(()),
        }
    }

    /// Whether the group is quiesced on this node.
    pub fn is_quiesced(&self) -> bool {
        self.sleep().asleep
    }

    /// When this node led the group to sleep and it still sleeps: the members that agreed,
    /// caught up to its last entry. `None` while it is awake.
    pub fn slept_with(&self) -> Option<std::collections::BTreeSet<NodeId>> {
        let s = self.sleep();
        s.asleep.then(|| s.agreed.clone())
    }

    fn sleep(&self) -> std::sync::MutexGuard<'_, Sleep> {
        self.quiesced.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the group if it was quiesced: its timers run again (a leader heartbeats at its
    /// next tick, a follower's election timer runs). Returns whether it was quiesced.
    pub fn wake(&self) -> bool {
        let mut q = self.sleep();
        if q.asleep {
            self.raft.runtime_config().tick(true);
            q.asleep = false;
            q.agreed.clear();
            self.wakes.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Wakes the group for work that just arrived, and when this node leads it, renews the
    /// leader's lease first (one heartbeat round, bounded by an election timeout): after a
    /// long sleep the lease is stale, and a write or lease read would be refused.
    ///
    /// Only a leader wakes for work: a follower's replica forwards it, and wakes when its leader
    /// sends the entries. Waking it here would start its election timer with a stale lease, and
    /// its first tick would campaign against a live leader.
    pub async fn wake_for_work(&self) {
        if !self.is_leader() || !self.wake() {
            return;
        }
        let bound = Duration::from_millis(self.raft.config().election_timeout_max);
        // Boxed: it is awaited inside every request's future, which it would otherwise deepen
        // past the compiler's layout limit.
        let renew = Box::pin(
            self.raft
                .ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex),
        );
        let _ = tokio::time::timeout(bound, renew).await;
    }

    /// Quiesces the group on this node (no heartbeats, no election timer), unless work arrived
    /// since its last log index was `last_log`. Returns whether it is quiesced now. The check and
    /// the switch happen under the same lock as [`Group::wake`], and a proposal counts itself
    /// before it wakes the group, so that no proposal lands on a group that goes to sleep.
    /// `agreed` are the members that agreed (empty on a follower).
    pub fn quiesce_if(
        &self,
        last_log: Option<u64>,
        agreed: std::collections::BTreeSet<NodeId>,
    ) -> bool {
        let mut q = self.sleep();
        if q.asleep {
            return true;
        }
        let idle = self.stats.proposals_pending.load(Ordering::Relaxed) <= 0
            && self.raft.metrics().borrow_watched().last_log_index == last_log;
        if idle {
            self.raft.runtime_config().tick(false);
            q.asleep = true;
            q.agreed = agreed;
            self.stats
                .answered_at_sleep
                .store(self.stats.answered(), Ordering::Relaxed);
        }
        idle
    }

    /// What this node knows of the group as a follower, for a leader's quiesce request.
    pub fn follower_facts(&self) -> quiesce::FollowerFacts {
        let m = self.raft.metrics().borrow_watched().clone();
        quiesce::FollowerFacts {
            leader: m.current_leader,
            term: m.current_term,
            last_log: m.last_log_index,
            committed: m.local_committed.map(|l| l.index),
        }
    }

    /// What this node knows of the group as its leader (`None` when it does not lead it),
    /// with `quiet_rounds` from the caller's own count.
    pub fn leader_facts(&self, quiet_rounds: u32) -> Option<quiesce::LeaderFacts> {
        let m = self.raft.metrics().borrow_watched().clone();
        if m.current_leader != Some(m.id) {
            return None;
        }
        Some(quiesce::LeaderFacts {
            me: m.id,
            term: m.current_term,
            voters: m.membership_config.membership().voter_ids().collect(),
            matched: m
                .replication
                .as_ref()
                .map(|r| r.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect())
                .unwrap_or_default(),
            last_log: m.last_log_index,
            committed: m.local_committed.map(|l| l.index),
            applied: m.last_applied.map(|l| l.index),
            pending: self.stats.proposals_pending.load(Ordering::Relaxed).max(0) as u64,
            written: self.stats.written_since_sleep(),
            quiet_rounds,
        })
    }

    /// The group's owner in the ledger.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Whether this node leads the group, as far as it knows.
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics().borrow_watched().clone();
        m.current_leader == Some(m.id)
    }

    /// Shuts openraft down (waiting at most `deadline`), then waits for the group's owner to
    /// reach zero within `deadline` more; what remains then is the group's leak. Two separate
    /// bounds, so that a slow shutdown never shortens the owner's own deadline into a false
    /// leak verdict; the shutdown plan budgets for both.
    pub async fn stop(&self, deadline: Duration) -> Option<Leak> {
        match tokio::time::timeout(deadline, self.raft.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(group = self.id, error = %e, "openraft shutdown reported an error")
            }
            Err(_) => tracing::warn!(group = self.id, "openraft did not shut down in time"),
        }
        self.owner.stop(deadline).await
    }
}

/// Counts leader changes as this node sees them, for `raftnode_raft_leader_changes_seen_total`:
/// a move from one known leader to another. A group's first election is not a change, so that a
/// group restarted a hundred times does not look like a flapping one. It watches openraft's
/// server metrics, which change only with the role, the vote or the membership: the full
/// metrics are sent on every core-loop turn, ticks included, and would wake this task about
/// fifty times a second per group for nothing.
async fn watch_leader(raft: Raft, stats: Arc<GroupStats>, stop: CancellationToken) {
    let mut rx = raft.server_metrics();
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
