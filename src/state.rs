//! What a [`StateMachine`] reads and writes: its own group's keys in the node's state engine.
//!
//! raftnode owns the storage so that it can write the group's apply record (the last applied
//! log id, the membership, the client sessions) in the same atomic commit as the data, and so
//! that it can build, stream and install snapshots of any size from a frozen view of the
//! engine. A state machine never sees another group's keys.
//!
//! [`StateMachine`]: crate::StateMachine

use std::collections::BTreeMap;
use std::io;

use crate::raft::types::GroupId;
use crate::storage::engine::{key, Engine, WriteSet, TAG_DATA};

/// The writes of one applied batch: reads see the batch's own earlier writes; nothing is
/// visible to readers until raftnode commits the batch, atomically, with its apply record.
pub struct Batch<'a> {
    engine: &'a Engine,
    group: GroupId,
    changes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> Batch<'a> {
    pub(crate) fn new(engine: &'a Engine, group: GroupId) -> Self {
        Batch {
            engine,
            group,
            changes: BTreeMap::new(),
        }
    }

    /// The value of `key`, as this batch has left it so far.
    pub fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        match self.changes.get(key) {
            Some(change) => Ok(change.clone()),
            None => self.engine.get(&self::key(self.group, TAG_DATA, key)),
        }
    }

    /// Whether `key` holds a value, as this batch has left it so far.
    pub fn contains(&self, key: &[u8]) -> io::Result<bool> {
        match self.changes.get(key) {
            Some(change) => Ok(change.is_some()),
            None => self.engine.contains(&self::key(self.group, TAG_DATA, key)),
        }
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.changes.insert(key.into(), Some(value.into()));
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.changes.insert(key.into(), None);
    }

    /// The batch's writes, for the engine.
    pub(crate) fn into_writes(self) -> io::Result<WriteSet> {
        let mut set = self.engine.batch()?;
        for (k, change) in self.changes {
            let k = key(self.group, TAG_DATA, &k);
            match change {
                Some(v) => set.put(self.engine, k, v),
                None => set.delete(self.engine, k),
            }
        }
        Ok(set)
    }
}

/// Read access to one group's applied state.
pub struct Reader<'a> {
    engine: &'a Engine,
    group: GroupId,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(engine: &'a Engine, group: GroupId) -> Self {
        Reader { engine, group }
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        self.engine.get(&self::key(self.group, TAG_DATA, key))
    }

    /// The keys that start with `prefix` and their values, in key order.
    pub fn scan(&self, prefix: &[u8]) -> impl Iterator<Item = io::Result<(Vec<u8>, Vec<u8>)>> + 'a {
        self.engine.scan(self.group, TAG_DATA, prefix)
    }
}
