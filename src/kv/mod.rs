//! The replicated key-value store that the `raftnode` binary serves: one implementation of
//! [`StateMachine`], with its client APIs on top of the node (HTTP routes and a gRPC service).
//! It uses the library as any embedding program would.
//!
//! Keys are UTF-8 (they come from URL paths); values are bytes. The state lives in memory;
//! durability comes from the Raft log and the snapshots raftnode keeps for it.

pub mod grpc;
pub mod http;

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::node::{Node, NodeBuilder, ReadMode, RequestError};
use crate::raft::types::GroupId;
use crate::state_machine::{Committed, StateMachine};

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

/// One group's keys and values. The map sits behind an `Arc`, so that a snapshot's view is a
/// pointer copy; the next write after it copies the map once (copy on write).
#[derive(Default)]
pub struct KvStore {
    data: Arc<BTreeMap<String, Bytes>>,
}

impl KvStore {
    /// The value of `key`, if any.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        self.data.get(key).cloned()
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl StateMachine for KvStore {
    type Command = KvCommand;
    type Response = KvResponse;
    type Snapshot = Arc<BTreeMap<String, Bytes>>;

    fn apply(&mut self, batch: Vec<Committed<KvCommand>>) -> io::Result<Vec<KvResponse>> {
        let data = Arc::make_mut(&mut self.data);
        Ok(batch
            .into_iter()
            .map(|c| KvResponse {
                existed: match c.command {
                    KvCommand::Put { key, value } => data.insert(key, Bytes::from(value)).is_some(),
                    KvCommand::Delete { key } => data.remove(&key).is_some(),
                },
            })
            .collect())
    }

    fn snapshot(&self) -> Self::Snapshot {
        self.data.clone()
    }

    /// A count, then each key and value as a MessagePack pair: streamed, never encoded whole.
    fn write_snapshot(view: Self::Snapshot, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(&(view.len() as u64).to_le_bytes())?;
        let mut out = out;
        for (k, v) in view.iter() {
            rmp_serde::encode::write(&mut out, &(k, serde_bytes::Bytes::new(v)))
                .map_err(io::Error::other)?;
        }
        Ok(())
    }

    fn restore(&mut self, input: &mut dyn Read) -> io::Result<()> {
        let mut n = [0u8; 8];
        input.read_exact(&mut n)?;
        let n = u64::from_le_bytes(n);
        let mut data = BTreeMap::new();
        let mut input = input;
        for _ in 0..n {
            let (k, v): (String, serde_bytes::ByteBuf) =
                rmp_serde::decode::from_read(&mut input).map_err(invalid)?;
            data.insert(k, Bytes::from(v.into_vec()));
        }
        self.data = Arc::new(data);
        Ok(())
    }
}

/// A node builder that serves the KV store: its state machine in every group, its gRPC service
/// on the shared server and its routes on the HTTP server.
pub fn node_builder(config: KvConfig) -> NodeBuilder<KvStore> {
    Node::builder()
        .state_machine(|_group| KvStore::default())
        .grpc_services(move |node| {
            let metrics = node.rpc_metrics();
            let kv = Kv::new(node, config);
            tonic::service::Routes::new(grpc::service(
                kv,
                metrics,
                crate::node::config::MAX_MESSAGE_BYTES,
            ))
        })
        .http_routes(move |node| http::routes(Kv::new(node, config)))
}

/// The store's limits, from the binary's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvConfig {
    /// Largest key accepted, in bytes.
    pub max_key_bytes: usize,
    /// Largest value accepted, in bytes.
    pub max_value_bytes: usize,
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig {
            max_key_bytes: 4096,
            max_value_bytes: 1 << 20,
        }
    }
}

/// Why a KV operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// A key or value is over its limit.
    #[error("{0}")]
    TooLarge(String),
    /// The node could not complete it.
    #[error(transparent)]
    Request(#[from] RequestError),
}

/// The store's operations, with their limits checked, on top of a node.
#[derive(Clone)]
pub struct Kv {
    node: Node<KvStore>,
    config: KvConfig,
}

impl Kv {
    /// The store served by `node`.
    pub fn new(node: Node<KvStore>, config: KvConfig) -> Kv {
        Kv { node, config }
    }

    /// The store's limits.
    pub fn config(&self) -> KvConfig {
        self.config
    }

    fn check_key(&self, key: &str) -> Result<(), KvError> {
        if key.is_empty() {
            return Err(KvError::BadRequest("key must not be empty".into()));
        }
        let max = self.config.max_key_bytes;
        if key.len() > max {
            return Err(KvError::TooLarge(format!(
                "key is {} bytes; the limit is {max} (max_key_bytes)",
                key.len()
            )));
        }
        Ok(())
    }

    /// Sets `key`; returns the log index the write was applied at.
    pub async fn put(&self, group: GroupId, key: String, value: Vec<u8>) -> Result<u64, KvError> {
        self.check_key(&key)?;
        let max = self.config.max_value_bytes;
        if value.len() > max {
            return Err(KvError::TooLarge(format!(
                "value is {} bytes; the limit is {max} (max_value_bytes)",
                value.len()
            )));
        }
        let applied = self
            .node
            .propose(group, KvCommand::Put { key, value })
            .await?;
        Ok(applied.index)
    }

    /// Removes `key`; returns the log index, and whether the key existed.
    pub async fn delete(&self, group: GroupId, key: String) -> Result<(u64, bool), KvError> {
        self.check_key(&key)?;
        let applied = self.node.propose(group, KvCommand::Delete { key }).await?;
        Ok((applied.index, applied.response.existed))
    }

    /// The value of `key`, as fresh as `mode` asks.
    pub async fn get(
        &self,
        group: GroupId,
        key: &str,
        mode: ReadMode,
    ) -> Result<Option<Bytes>, KvError> {
        self.check_key(key)?;
        Ok(self
            .node
            .read(group, mode, |kv: &KvStore| kv.get(key))
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(index: u64, k: &str, v: &str) -> Committed<KvCommand> {
        Committed {
            index,
            command: KvCommand::Put {
                key: k.into(),
                value: v.into(),
            },
        }
    }

    #[test]
    fn apply_answers_whether_the_key_existed() {
        let mut kv = KvStore::default();
        let r = kv
            .apply(vec![
                put(1, "a", "1"),
                put(2, "a", "2"),
                Committed {
                    index: 3,
                    command: KvCommand::Delete { key: "a".into() },
                },
                Committed {
                    index: 4,
                    command: KvCommand::Delete { key: "a".into() },
                },
            ])
            .unwrap();
        let existed: Vec<bool> = r.iter().map(|r| r.existed).collect();
        assert_eq!(existed, [false, true, true, false]);
        assert!(kv.is_empty());
    }

    #[test]
    fn a_snapshot_is_a_frozen_view_and_restores() {
        let mut kv = KvStore::default();
        kv.apply(vec![put(1, "a", "1"), put(2, "b", "")]).unwrap();
        let view = kv.snapshot();
        kv.apply(vec![put(3, "a", "changed")]).unwrap();
        let mut bytes = Vec::new();
        KvStore::write_snapshot(view, &mut bytes).unwrap();
        let mut restored = KvStore::default();
        restored.restore(&mut bytes.as_slice()).unwrap();
        assert_eq!(restored.get("a").as_deref(), Some(&b"1"[..]));
        assert_eq!(restored.get("b").as_deref(), Some(&b""[..]));
        assert_eq!(restored.len(), 2);
        // Truncated input is an error, never a partial state.
        let mut partial = KvStore::default();
        assert!(partial.restore(&mut &bytes[..bytes.len() - 1]).is_err());
    }
}
