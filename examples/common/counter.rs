//! The counter both examples replicate: one number per group, kept under one key of the
//! group's state, with a copy in memory for reads.

use std::io;

use raftnode::{Batch, Committed, Reader, StateMachine};

/// The replicated state: one number. A command adds to it; the response is the new value.
#[derive(Default)]
pub struct Counter(pub u64);

impl StateMachine for Counter {
    type Command = u64;
    type Response = u64;

    fn apply(&mut self, batch: Vec<Committed<u64>>, state: &mut Batch<'_>) -> io::Result<Vec<u64>> {
        let answers = batch
            .into_iter()
            .map(|c| {
                self.0 += c.command;
                self.0
            })
            .collect();
        // The key is the durable copy, committed with the applied index; the field is a
        // cache of it for reads.
        state.put(*b"n", self.0.to_le_bytes());
        Ok(answers)
    }

    /// At the group's start, and after a snapshot from the leader replaced the state.
    fn restored(&mut self, state: &Reader<'_>) -> io::Result<()> {
        self.0 = match state.get(b"n")? {
            Some(bytes) => u64::from_le_bytes(
                bytes
                    .try_into()
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not a u64"))?,
            ),
            None => 0,
        };
        Ok(())
    }
}
