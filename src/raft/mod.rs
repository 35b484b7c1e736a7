//! The openraft adapters, each thin and in its own file: the type configuration, the async
//! runtime that attributes openraft's tasks to their group, the per-group log store view of the
//! node-wide storage engine, the state machine adapter around the program's state machine, and
//! the network adapter over the shared peer channels. Consensus itself is openraft's; nothing
//! here decides anything.

pub mod log_store;
pub mod network;
pub mod runtime;
pub mod state_machine;
pub mod types;
