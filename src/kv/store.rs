//! The KV store as a [`StateMachine`]: keys and values, and the commands that change them.

use serde::{Deserialize, Serialize};
use std::io;

use crate::state_machine::{Batch, Committed, StateMachine};

/// What a write does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: String,
    },
}

/// What a write answers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvResponse {
    /// Whether the key held a value before the write.
    pub existed: bool,
}

/// The KV store: keys and values in the group's part of the node's state engine. It keeps
/// nothing in memory itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct KvStore;

impl StateMachine for KvStore {
    type Command = KvCommand;
    type Response = KvResponse;

    fn apply(
        &mut self,
        batch: Vec<Committed<KvCommand>>,
        state: &mut Batch<'_>,
    ) -> io::Result<Vec<KvResponse>> {
        batch
            .into_iter()
            .map(|c| {
                let (key, value) = match c.command {
                    KvCommand::Put { key, value } => (key, Some(value)),
                    KvCommand::Delete { key } => (key, None),
                };
                let existed = state.contains(key.as_bytes())?;
                match value {
                    Some(v) => state.put(key, v),
                    None => state.delete(key),
                }
                Ok(KvResponse { existed })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_machine::Reader;
    use crate::storage::engine::testing::temporary;

    fn put(index: u64, k: &str, v: &str) -> Committed<KvCommand> {
        Committed {
            index,
            command: KvCommand::Put {
                key: k.into(),
                value: v.into(),
            },
        }
    }

    fn delete(index: u64, k: &str) -> Committed<KvCommand> {
        Committed {
            index,
            command: KvCommand::Delete { key: k.into() },
        }
    }

    #[test]
    fn apply_answers_whether_the_key_existed_and_sees_its_own_batch() {
        let (_dir, engine) = temporary();
        let mut batch = Batch::new(&engine, 1);
        let r = KvStore
            .apply(
                vec![
                    put(1, "a", "1"),
                    put(2, "a", "2"),
                    delete(3, "a"),
                    delete(4, "a"),
                ],
                &mut batch,
            )
            .unwrap();
        let existed: Vec<bool> = r.iter().map(|r| r.existed).collect();
        assert_eq!(existed, [false, true, true, false]);
        let mut batch = Batch::new(&engine, 1);
        KvStore
            .apply(vec![put(5, "b", "x"), put(6, "c", "")], &mut batch)
            .unwrap();
        // Nothing is visible before the commit; then all of it is, to its group only.
        assert_eq!(Reader::new(&engine, 1).get(b"b").unwrap(), None);
        engine.commit(batch.into_writes().unwrap()).unwrap();
        assert_eq!(
            Reader::new(&engine, 1).get(b"b").unwrap(),
            Some(b"x".to_vec())
        );
        assert_eq!(Reader::new(&engine, 1).get(b"c").unwrap(), Some(Vec::new()));
        assert_eq!(Reader::new(&engine, 2).get(b"b").unwrap(), None);
        let keys: Vec<Vec<u8>> = Reader::new(&engine, 1)
            .scan(b"")
            .map(|p| p.unwrap().0)
            .collect();
        assert_eq!(keys, [b"b".to_vec(), b"c".to_vec()]);
    }
}
