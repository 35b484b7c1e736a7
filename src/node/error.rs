//! The node's errors: why it did not start or stop cleanly, why a group operation failed, and
//! why a proposal or a read did not complete. Each names what it is about.

use std::path::PathBuf;
use std::time::Duration;

use crate::group::GroupError;
use crate::raft::types::GroupId;

/// Why a node did not start, or did not stop within its grace.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A setting is out of range or inconsistent with another.
    #[error("invalid `{field}`: {reason}")]
    Config {
        /// The setting, as its flag and config-file key name it.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The data dir cannot be used.
    #[error("data dir {path}: {reason}")]
    DataDir {
        /// The data dir.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// Another process holds the data dir.
    #[error("data dir {path} is in use by another raftnode process (lock file {lock} is held)")]
    Locked {
        /// The data dir.
        path: PathBuf,
        /// Its lock file.
        lock: PathBuf,
    },
    /// The storage engine did not recover.
    #[error("storage recovery failed: {0}")]
    Storage(#[from] crate::storage::StorageError),
    /// A listening address could not be bound.
    #[error("cannot listen on {what} address {addr}: {source}")]
    Bind {
        /// `gRPC` or `HTTP`.
        what: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A configured group did not start.
    #[error(transparent)]
    Group(#[from] GroupOpError),
    /// The metrics registry refused a family (two families of one name).
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The graceful stop ran past its grace.
    #[error("graceful shutdown did not finish within {0:?}")]
    ShutdownTimeout(Duration),
}

/// Why a group could not be started or stopped on this node.
#[derive(Debug, thiserror::Error)]
pub enum GroupOpError {
    /// The group does not run here.
    #[error("group {0} is not running on this node")]
    NotFound(GroupId),
    /// The node is stopping.
    #[error("node is shutting down")]
    Draining,
    /// The group failed to start.
    #[error(transparent)]
    Start(#[from] GroupError),
    /// The shared gRPC server could not listen again after a restart.
    #[error("cannot restart the gRPC server on {addr}: {source}")]
    RpcRestart {
        /// Its address.
        addr: std::net::SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The group's data was purged on this node, and the caller did not say whether the group
    /// is created anew on every member or this replica rejoins a group its peers still run.
    #[error(
        "group {0}'s data was purged on this node: add it with ?fresh=true if the group is \
         created anew on every member, or with ?rejoin=true if this replica rejoins a group its \
         peers still run (it then votes for nobody until it has caught up)"
    )]
    Purged(GroupId),
    /// The group stopped, but its data could not be removed.
    #[error("group {group}: cannot purge its data: {reason}")]
    Purge {
        /// The group.
        group: GroupId,
        /// What failed.
        reason: String,
    },
}

/// Why a proposal or a read did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The group does not run on this node.
    #[error("group {0} is not running on this node")]
    GroupNotFound(GroupId),
    /// No leader could be reached within the request timeout. A proposal that fails so may
    /// still have been applied.
    #[error("group {0} has no leader reachable within the request timeout")]
    NoLeader(GroupId),
    /// The node is stopping and takes no new requests.
    #[error("node is shutting down")]
    Draining,
    /// The leader refused the command: it does not decode as its state machine's command.
    #[error("the leader refused the command: {0}")]
    Rejected(String),
    /// The command or the response could not be encoded or decoded here.
    #[error("{0}")]
    Codec(String),
    /// This node's storage failed (a write or fsync error); it takes no writes until it
    /// restarts. Every write it acknowledged before is on disk.
    #[error("this node's storage failed; it takes no writes until it restarts")]
    StorageFailed,
    /// The node, or the group's leader, holds as many proposals in flight as it takes
    /// (`max_inflight_proposals`, `max_inflight_proposals_per_group`); retry after a pause.
    /// Nothing was proposed.
    #[error("overloaded: {0}")]
    Overloaded(String),
}

/// How long a client refused for overload should wait before it retries.
pub const OVERLOAD_RETRY_AFTER: Duration = Duration::from_secs(1);
