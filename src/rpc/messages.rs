//! The messages of raftnode's own node-to-node methods (those that are not openraft's): a
//! follower's forwarded proposal and read-index request, and the leader's answers. Plain serde types, shared by the method table and the router.

use serde::{Deserialize, Serialize};

use crate::raft::types::{GroupId, LogId, NodeId, Reply, TypeConfig};

/// Why a group's leader (or what a follower took for it) did not take a forwarded request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// This node does not lead the group; `leader` is whom it knows to.
    #[error("this node does not lead the group (leader: {leader:?})")]
    NotLeader {
        /// The leader this node knows of, if any.
        leader: Option<NodeId>,
        /// That leader's gRPC address.
        addr: Option<String>,
    },
    /// The group does not run on this node.
    #[error("the group is not running on this node")]
    GroupNotFound,
    /// The command does not decode as the group's state machine's command: the sender is
    /// another version or another program.
    #[error("the command is not one of this state machine's: {0}")]
    Invalid(String),
    /// The group cannot serve for now (no quorum, a lease not yet held, shutting down).
    #[error("{0}")]
    Unavailable(String),
    /// The leader has as many proposals in flight as it takes; the client should retry later.
    #[error("{0}")]
    Overloaded(String),
}

/// A forwarded proposal's outcome on the leader: where it was applied, and its response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposed {
    /// The log index at which it was applied.
    pub index: u64,
    /// The state machine's encoded response.
    pub reply: Reply,
}

/// A follower asking the leader up to where it must apply before a linearizable read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadIndexRequest {
    /// Confirm leadership by lease (no round trip) rather than by a quorum heartbeat.
    pub lease: bool,
}

/// The leader's answer: the read log id the reader's state machine must reach.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadIndexGrant {
    /// The leader that granted it.
    pub leader: NodeId,
    /// The inclusive log boundary to apply through.
    pub read_log_id: openraft::raft::linearizable_read::ReadLogId<TypeConfig>,
    /// What the leader had applied when it granted it.
    pub applied: Option<LogId>,
}

/// One group of a leader's quiesce request: the leader's term and its last (committed,
/// applied) log index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuiesceItem {
    /// The group.
    pub group: GroupId,
    /// The leader's term in it.
    pub term: u64,
    /// Its last log index, committed and applied.
    pub last_log: u64,
}

/// A leader's request that a member stop the timers of idle groups, for many groups at once:
/// one message per peer and round, whatever the number of groups.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuiesceRequest {
    /// The leader asking (this node leads every group listed).
    pub leader: NodeId,
    /// The groups.
    pub groups: Vec<QuiesceItem>,
}

/// A member's answer for one group of a quiesce request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuiesceAnswer {
    /// Its replica sleeps now.
    Agreed,
    /// Its replica keeps its timers (it is behind, follows another leader, or its node drains).
    Refused,
    /// The group does not run on this node (it is starting, or the group was never added
    /// here): the leader may sleep without it, as without a member whose node is down, and
    /// wakes the group when this node serves again.
    NotHere,
}

/// A node's answer to the liveness probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingReply {
    /// Whether it serves: its groups all started and it is not draining.
    pub serving: bool,
}

/// A node telling a peer which data dir it runs on: its incarnation, and whether its start-up
/// check has yet to settle (a node on a new data dir asks before it runs any group).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Introduction {
    /// The node speaking.
    pub node: NodeId,
    /// Its data dir's incarnation.
    pub incarnation: u64,
    /// Whether it is still asking (its data dir is new and not yet settled).
    pub pending: bool,
}

/// What a peer knows of the node that introduced itself, and of itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acquaintance {
    /// The incarnation the peer knows that node by, if it ever met it.
    pub known: Option<u64>,
    /// The peer's own incarnation.
    pub incarnation: u64,
    /// Whether the peer is itself on a new data dir and still asking.
    pub pending: bool,
    /// When the peer knew that node by another incarnation: the groups it runs with that node
    /// as a member, whose replicas there were lost with the old data dir.
    pub groups: Vec<GroupId>,
    /// The peer's cluster id, once it has one: a node on a new data dir takes it.
    #[serde(default)]
    pub cluster: Option<String>,
}
