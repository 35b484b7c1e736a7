//! The two ids everything is keyed by, in a module of their own so that any layer can name them
//! without depending on another.

/// A node's id, unique in the cluster; ids start at 1.
pub type NodeId = u64;
/// A Raft group's id, unique in the cluster; ids start at 1.
pub type GroupId = u64;
