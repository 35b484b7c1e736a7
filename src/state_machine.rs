//! The state machine a program embeds in raftnode: the one trait a library user implements.
//!
//! A group's log holds commands; every member applies the committed ones, in log order, to its
//! own copy of the state machine. raftnode owns everything else: the log, the state's storage
//! (one embedded engine per node, keyed by group), snapshots and their transfer, membership,
//! and the last applied index. The state machine reads and writes its group's keys through a
//! [`Batch`] that raftnode commits atomically with the applied index, and reads them through a
//! [`Reader`]; so its state may be far larger than memory, and a snapshot of any size is built
//! from a frozen view of the engine and streamed, never held whole.
//!
//! Commands and responses cross the network and sit in the log, so they are `serde` types;
//! raftnode encodes them with MessagePack with field names, which lets a later version add
//! optional fields without breaking the log written by an earlier one.
//!
//! ```
//! use std::io;
//! use raftnode::{Batch, Committed, StateMachine};
//!
//! /// A counter that commands increment, kept under one key.
//! struct Counter;
//!
//! impl StateMachine for Counter {
//!     type Command = u64;
//!     type Response = u64;
//!
//!     fn apply(&mut self, batch: Vec<Committed<u64>>, state: &mut Batch<'_>) -> io::Result<Vec<u64>> {
//!         let mut n = match state.get(b"n")? {
//!             Some(b) => u64::from_le_bytes(b.try_into().map_err(|_| io::ErrorKind::InvalidData)?),
//!             None => 0,
//!         };
//!         let answers = batch.into_iter().map(|c| { n += c.command; n }).collect();
//!         state.put(*b"n", n.to_le_bytes());
//!         Ok(answers)
//!     }
//! }
//! ```

use std::any::Any;
use std::io;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use crate::state::{Batch, Reader};

/// The replicated state of one Raft group, as the embedding program defines it.
///
/// raftnode calls `apply` with committed commands only, in log order, and never concurrently
/// with another `apply` or with `restored`; reads ([`crate::Node::read`]) share the state
/// machine with each other, never with a writer. Everything here must be deterministic: every
/// member applies the same commands and must reach the same state.
pub trait StateMachine: Send + Sync + 'static {
    /// What a proposal asks of the state machine.
    type Command: Serialize + DeserializeOwned + Send + 'static;
    /// What applying a command answers to the one who proposed it.
    type Response: Serialize + DeserializeOwned + Send + 'static;

    /// Applies a batch of committed commands, in order, writing through `state`, and answers
    /// one response per command, in the same order. raftnode commits the writes with the
    /// applied index, in one atomic write, after this returns. An error means the state
    /// machine cannot go on: the group stops, on this node, rather than diverge. Errors of a
    /// command that the application can refuse belong in `Response` instead.
    fn apply(
        &mut self,
        batch: Vec<Committed<Self::Command>>,
        state: &mut Batch<'_>,
    ) -> io::Result<Vec<Self::Response>>;

    /// Called when the group's state was replaced wholesale (a snapshot from the leader was
    /// installed), and once when the group opens, for a state machine that keeps something in
    /// memory derived from its keys. Most keep nothing, and need not implement it.
    fn restored(&mut self, _state: &Reader<'_>) -> io::Result<()> {
        Ok(())
    }
}

/// One committed command, with its place in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed<C> {
    /// The command's log index: increasing within a group, the same on every member.
    pub index: u64,
    /// The command, as proposed.
    pub command: C,
}

/// The encoding of commands and responses in the log and on the wire.
pub(crate) mod codec {
    use serde::de::DeserializeOwned;
    use serde::Serialize;

    /// Encodes with field names, so that types can grow optional fields over versions.
    pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
        rmp_serde::to_vec_named(value).map_err(|e| e.to_string())
    }

    pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
        rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// A state machine behind its codec: what the group's machinery (storage, network, openraft)
/// works with, so that none of it is generic over the embedding program's types.
pub(crate) trait ErasedStateMachine: Send + Sync + 'static {
    /// Applies encoded commands; answers encoded responses, one per command: empty where
    /// `wanted` is false (on a follower nobody waits for them, so they are not encoded).
    fn apply(
        &mut self,
        batch: Vec<(u64, &[u8])>,
        wanted: &[bool],
        state: &mut Batch<'_>,
    ) -> io::Result<Vec<Vec<u8>>>;
    /// Whether `command` decodes as this state machine's command: checked before a peer's
    /// forwarded proposal enters the log, where an undecodable one would stop every member.
    fn check(&self, command: &[u8]) -> Result<(), String>;
    fn restored(&mut self, state: &Reader<'_>) -> io::Result<()>;
    fn as_any(&self) -> &dyn Any;
}

/// The typed state machine inside its erased form.
pub(crate) struct Typed<S>(pub S);

impl<S: StateMachine> ErasedStateMachine for Typed<S> {
    fn apply(
        &mut self,
        batch: Vec<(u64, &[u8])>,
        wanted: &[bool],
        state: &mut Batch<'_>,
    ) -> io::Result<Vec<Vec<u8>>> {
        let n = batch.len();
        let mut commands = Vec::with_capacity(n);
        for (index, bytes) in batch {
            let command = codec::decode(bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the command at log index {index} does not decode: {e}"),
                )
            })?;
            commands.push(Committed { index, command });
        }
        let responses = self.0.apply(commands, state)?;
        if responses.len() != n {
            return Err(io::Error::other(format!(
                "the state machine answered {} responses to {n} commands",
                responses.len()
            )));
        }
        responses
            .iter()
            .zip(wanted)
            .map(|(r, wanted)| match wanted {
                true => codec::encode(r).map_err(io::Error::other),
                false => Ok(Vec::new()),
            })
            .collect()
    }

    fn check(&self, command: &[u8]) -> Result<(), String> {
        codec::decode::<S::Command>(command).map(drop)
    }

    fn restored(&mut self, state: &Reader<'_>) -> io::Result<()> {
        self.0.restored(state)
    }

    fn as_any(&self) -> &dyn Any {
        &self.0
    }
}
