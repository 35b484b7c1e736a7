//! What the shared RPC server needs from the node that hosts it, and nothing more: the group a
//! message is for, where received snapshots go, and how a forwarded proposal is proposed. The
//! transport therefore depends on this trait, never on the node or on any state machine.

use std::path::Path;

use futures::future::BoxFuture;

use crate::raft::state_machine::Raft;
use openraft::raft::VoteResponse;

use crate::raft::types::{GroupId, Proposal, TypeConfig};
use crate::rpc::messages::{
    Acquaintance, Introduction, Proposed, QuiesceAnswer, QuiesceRequest, Refusal,
};

/// The node's side of the shared server.
pub trait Router: Send + Sync + 'static {
    /// The openraft instance of `group`, if the group runs on this node; `wake` wakes the
    /// group first if it was quiesced.
    fn raft(&self, group: GroupId, wake: bool) -> Option<Raft>;

    /// A leader's request that this node's replicas of idle groups quiesce: for each group
    /// listed, whether it did.
    fn quiesce(&self, req: &QuiesceRequest) -> Vec<QuiesceAnswer>;

    /// Wakes `group` if it was quiesced and, if this node leads it, renews its lease, so that
    /// the request that woke it is served at once.
    fn wake(&self, group: GroupId) -> BoxFuture<'_, ()>;

    /// Whether this node is stopping: it then takes no leadership.
    fn draining(&self) -> bool;

    /// A refusal of a pre-vote for `group`, when this node's replica sleeps under a leader whose
    /// node answers the liveness probe (or is this node): a member that missed the group's
    /// sleep (its node looked down for a moment) would otherwise win the pre-vote of members
    /// that heard no heartbeat for long, and depose a live leader. The leader wakes the group
    /// for that member once it answers again. `None`: let openraft decide.
    fn pre_vote_refusal(&self, group: GroupId) -> Option<VoteResponse<TypeConfig>>;

    /// The refusal of any vote or pre-vote by a replica whose data was erased and that has
    /// not caught up since; `None` when it may vote.
    fn erased_refusal(&self, group: GroupId) -> Option<VoteResponse<TypeConfig>>;

    /// Whether this node stopped itself after a storage failure: it then answers no liveness
    /// probe, so that its peers elect new leaders for the groups it led.
    fn fail_stopped(&self) -> bool;

    /// Whether this node serves: every configured group started and not draining. Peers learn
    /// it from the liveness probe, and move leadership or wake groups for this node only then.
    fn serving(&self) -> bool;

    /// What this node knows of a peer that introduces itself, remembering it when that
    /// peer's data dir is settled; an error when that cannot be recorded.
    fn meet(&self, intro: Introduction) -> Result<Acquaintance, String>;

    /// Where snapshots received from leaders are written before they are installed.
    fn snapshot_dir(&self) -> &Path;

    /// Proposes a proposal that a peer forwarded, on this node only: a forwarded proposal is
    /// never forwarded again, so that two nodes with different views of the leader cannot
    /// bounce it between them.
    fn propose(
        &self,
        group: GroupId,
        proposal: Proposal,
    ) -> BoxFuture<'_, Result<Proposed, Refusal>>;
}
