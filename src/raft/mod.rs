//! The openraft adapters, each thin and in its own file: the type configuration, the async
//! runtime that attributes openraft's tasks to their group, and the per-group log store view of
//! the node-wide storage engine. Consensus itself is openraft's; nothing here decides anything.

pub mod log_store;
pub mod runtime;
pub mod types;
