//! The state machine a program embeds in raftnode: the one trait a library user implements.
//!
//! A group's log holds commands; every member applies the committed ones, in log order, to its
//! own copy of the state machine. raftnode owns everything else: the log, its storage, the
//! snapshots' files and their transfer, membership, and the last applied index. The state
//! machine sees only its own commands, and writes or reads its own snapshot as a byte stream,
//! so that a snapshot of any size never has to sit in memory whole.
//!
//! Commands and responses cross the network and sit in the log, so they are `serde` types;
//! raftnode encodes them with MessagePack with field names, which lets a later version add
//! optional fields without breaking the log written by an earlier one.
//!
//! ```
//! use std::io::{self, Read, Write};
//! use raftnode::{Committed, StateMachine};
//!
//! /// A counter that commands increment.
//! #[derive(Default)]
//! struct Counter(u64);
//!
//! impl StateMachine for Counter {
//!     type Command = u64;
//!     type Response = u64;
//!     type Snapshot = u64;
//!
//!     fn apply(&mut self, batch: Vec<Committed<u64>>) -> io::Result<Vec<u64>> {
//!         Ok(batch.into_iter().map(|c| { self.0 += c.command; self.0 }).collect())
//!     }
//!     fn snapshot(&self) -> u64 { self.0 }
//!     fn write_snapshot(value: u64, out: &mut dyn Write) -> io::Result<()> {
//!         out.write_all(&value.to_le_bytes())
//!     }
//!     fn restore(&mut self, input: &mut dyn Read) -> io::Result<()> {
//!         let mut b = [0; 8];
//!         input.read_exact(&mut b)?;
//!         self.0 = u64::from_le_bytes(b);
//!         Ok(())
//!     }
//! }
//! ```

use std::any::Any;
use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The replicated state of one Raft group, as the embedding program defines it.
///
/// raftnode calls `apply` with committed commands only, in log order, and never concurrently
/// with `restore` or another `apply`; reads ([`crate::Node::read`]) share the state with each
/// other, never with a writer. Everything here must be deterministic: every member applies the
/// same commands and must reach the same state.
pub trait StateMachine: Send + Sync + 'static {
    /// What a proposal asks of the state machine.
    type Command: Serialize + DeserializeOwned + Send + 'static;
    /// What applying a command answers to the one who proposed it.
    type Response: Serialize + DeserializeOwned + Send + 'static;
    /// A frozen view of the state, taken by [`StateMachine::snapshot`] and written out later
    /// by [`StateMachine::write_snapshot`] while new commands go on being applied.
    type Snapshot: Send + 'static;

    /// Applies a batch of committed commands, in order, and answers one response per command,
    /// in the same order. An error means the state machine cannot go on (its own storage
    /// failed): the group stops, on this node, rather than diverge. Errors of a command that
    /// the application can refuse belong in `Response` instead.
    fn apply(&mut self, batch: Vec<Committed<Self::Command>>) -> io::Result<Vec<Self::Response>>;

    /// Takes a consistent view of the current state. It runs with writes paused, so it should
    /// be quick: clone an `Arc`, open a read transaction, or copy a small value.
    fn snapshot(&self) -> Self::Snapshot;

    /// Writes a view taken by [`StateMachine::snapshot`] as bytes. It runs on a blocking
    /// thread, with writes going on; its bytes are checksummed and made durable by raftnode.
    fn write_snapshot(snapshot: Self::Snapshot, out: &mut dyn Write) -> io::Result<()>;

    /// Replaces the whole state with one read from bytes that `write_snapshot` wrote (on this
    /// node or another). It runs on a blocking thread, with reads and writes paused.
    fn restore(&mut self, input: &mut dyn Read) -> io::Result<()>;
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

/// Writes one frozen view out; the type-erased form of `StateMachine::write_snapshot`.
pub(crate) type SnapshotJob = Box<dyn FnOnce(&mut dyn Write) -> io::Result<()> + Send>;

/// A state machine behind its codec: what the group's machinery (storage, network, openraft)
/// works with, so that none of it is generic over the embedding program's types.
pub(crate) trait ErasedStateMachine: Send + Sync + 'static {
    /// Applies encoded commands; answers encoded responses, one per command: empty where
    /// `wanted` is false (on a follower nobody waits for them, so they are not encoded).
    fn apply(&mut self, batch: Vec<(u64, &[u8])>, wanted: &[bool]) -> io::Result<Vec<Vec<u8>>>;
    /// Whether `command` decodes as this state machine's command: checked before a peer's
    /// forwarded proposal enters the log, where an undecodable one would stop every member.
    fn check(&self, command: &[u8]) -> Result<(), String>;
    fn snapshot(&self) -> SnapshotJob;
    fn restore(&mut self, input: &mut dyn Read) -> io::Result<()>;
    fn as_any(&self) -> &dyn Any;
}

/// The typed state machine inside its erased form.
pub(crate) struct Typed<S>(pub S);

impl<S: StateMachine> ErasedStateMachine for Typed<S> {
    fn apply(&mut self, batch: Vec<(u64, &[u8])>, wanted: &[bool]) -> io::Result<Vec<Vec<u8>>> {
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
        let responses = self.0.apply(commands)?;
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

    fn snapshot(&self) -> SnapshotJob {
        let view = self.0.snapshot();
        Box::new(move |out| S::write_snapshot(view, out))
    }

    fn restore(&mut self, input: &mut dyn Read) -> io::Result<()> {
        self.0.restore(input)
    }

    fn as_any(&self) -> &dyn Any {
        &self.0
    }
}
