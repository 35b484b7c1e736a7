//! What the shared RPC server needs from the node that hosts it, and nothing more: the group a
//! message is for, where received snapshots go, and how a forwarded proposal is proposed. The
//! transport therefore depends on this trait, never on the node or on any state machine.

use std::path::Path;

use futures::future::BoxFuture;

use crate::raft::state_machine::Raft;
use crate::raft::types::{GroupId, Proposal};
use crate::rpc::messages::{Proposed, Refusal};

/// The node's side of the shared server.
pub trait Router: Send + Sync + 'static {
    /// The openraft instance of `group`, if the group runs on this node.
    fn raft(&self, group: GroupId) -> Option<Raft>;

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
