//! openraft's type configuration for raftnode, and what travels in a group's log.
//!
//! The log holds opaque bytes: a [`Proposal`] carries a state machine's command as its codec
//! encoded it, and applying it answers a [`Reply`] with the encoded response. Storage, the wire
//! format and every openraft adapter are therefore the same for every state machine; only the
//! typed edge ([`crate::Node`]) knows the command and response types.

use serde::{Deserialize, Serialize};

/// One command in a group's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The state machine's command, encoded by [`crate::state_machine::codec`].
    #[serde(with = "serde_bytes")]
    pub command: Vec<u8>,
    /// The W3C `traceparent` of the proposal, when its trace is sampled: replication and apply
    /// on every node then join the caller's trace. The state machine never sees it.
    #[serde(default)]
    pub trace: Option<String>,
    /// Who proposed it, so that a copy proposed again after an unknown outcome is answered
    /// with the first one's reply instead of being applied twice. `None`: applied every time
    /// (what entries written before sessions existed do).
    #[serde(default)]
    pub request: Option<RequestId>,
}

/// A proposal's identity: its client and its number there. See [`crate::raft::sessions`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestId {
    /// The proposing client: random, one per group instance on the node that took the request.
    pub client: u64,
    /// The request's number at that client, counting up.
    pub seq: u64,
    /// The lowest number this client still waits for an answer to.
    pub first_open: u64,
}

impl std::fmt::Display for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "proposal ({} bytes)", self.command.len())
    }
}

/// About how many bytes `entry` takes in a message or a WAL record: what bounds replication
/// payloads and WAL records by size rather than by count.
pub fn entry_bytes(entry: &Entry) -> usize {
    // Log id, framing and the encoding's tags.
    const OVERHEAD: usize = 48;
    OVERHEAD
        + match &entry.payload {
            openraft::EntryPayload::Normal(p) => {
                p.command.len() + p.trace.as_ref().map_or(0, String::len)
            }
            openraft::EntryPayload::Membership(m) => {
                m.nodes().map(|(_, n)| n.addr.len() + 16).sum::<usize>()
                    + 16 * m.get_joint_config().len()
            }
            openraft::EntryPayload::Blank => 0,
        }
}

/// What applying a proposal answers: the state machine's response, encoded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply(#[serde(with = "serde_bytes")] pub Vec<u8>);

openraft::declare_raft_types!(
    /// The type configuration shared by every group on the node, whatever its state machine.
    pub TypeConfig:
        D = Proposal,
        R = Reply,
        NodeId = u64,
        Node = openraft::BasicNode,
        AsyncRuntime = crate::raft::runtime::LedgerRuntime,
);

pub use crate::ids::{GroupId, NodeId};
/// A log entry.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// A log entry's id: its term, leader and index.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A node's vote.
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// A membership and the log id that set it.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
/// The metadata of a snapshot: the last log id and membership it covers.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
/// An openraft error of a group's API.
pub type RaftError<E = openraft::errors::Infallible> = openraft::errors::RaftError<TypeConfig, E>;
