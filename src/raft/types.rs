//! openraft's type configuration for raftnode, and the KV commands that travel in the log.

use serde::{Deserialize, Serialize};

/// A command in a group's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvRequest {
    pub op: KvOp,
    /// The W3C `traceparent` of the proposal, when its trace is sampled: replication and apply
    /// on every node then join the client's trace. The state machine never reads it.
    #[serde(default)]
    pub trace: Option<String>,
}

impl KvRequest {
    pub fn new(op: KvOp) -> Self {
        KvRequest { op, trace: None }
    }
}

/// What a command does. Keys are UTF-8 (they come from URL paths); values are bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp {
    Put {
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Delete {
        key: String,
    },
}

impl std::fmt::Display for KvRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.op {
            KvOp::Put { key, value } => write!(f, "put {key:?} ({} bytes)", value.len()),
            KvOp::Delete { key } => write!(f, "delete {key:?}"),
        }
    }
}

/// What applying a command reports back to the writer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvResponse {
    /// Whether the key held a value before this command.
    pub existed: bool,
}

openraft::declare_raft_types!(
    /// The type configuration shared by every group on the node.
    pub TypeConfig:
        D = KvRequest,
        R = KvResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        AsyncRuntime = crate::raft::runtime::LedgerRuntime,
);

pub type NodeId = u64;
pub type GroupId = u64;
pub type Raft = openraft::Raft<TypeConfig, crate::group::state_machine::KvStateMachine>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, Vec<u8>>;
pub type RaftError<E = openraft::errors::Infallible> = openraft::errors::RaftError<TypeConfig, E>;
