//! The openraft adapters, each thin and in its own file: the type configuration, the async
//! runtime that attributes openraft's tasks to their group, the per-group log store view of the
//! node-wide storage engine, and the state machine adapter around the program's state machine.
//! (The network adapter is with the transport, in `crate::rpc::network`.) Consensus itself is
//! openraft's; nothing here decides anything. `sessions` is the state machine adapter's table
//! of client requests, which makes a retried proposal take effect once.

pub mod log_store;
pub mod runtime;
pub mod sessions;
pub mod snapshot_data;
pub mod state_machine;
#[cfg(test)]
mod suite;
pub mod types;
