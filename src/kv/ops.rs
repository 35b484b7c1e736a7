//! The store's operations, with their limits checked, on top of a node: what both client APIs
//! (HTTP and gRPC) call.

use crate::kv::store::{KvCommand, KvStore};
use crate::node::{Node, ReadMode, RequestError};
use crate::raft::types::GroupId;

/// The store's limits, from the binary's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvConfig {
    /// Largest key accepted, in bytes.
    pub max_key_bytes: usize,
    /// Largest value accepted, in bytes.
    pub max_value_bytes: usize,
}

impl KvConfig {
    /// The largest gRPC message the client service takes or sends: sized to the value limit,
    /// not to what nodes send each other. Up to twice the value limit still decodes, so that a
    /// value just over it gets the store's own error, which names the limit.
    pub fn max_message_bytes(&self) -> usize {
        self.max_value_bytes
            .saturating_mul(2)
            .saturating_add(self.max_key_bytes)
            .saturating_add(64 << 10)
    }
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
    /// The node's state engine could not be read.
    #[error("cannot read the state: {0}")]
    Read(#[source] std::io::Error),
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
    ) -> Result<Option<Vec<u8>>, KvError> {
        self.check_key(key)?;
        self.node
            .read(group, mode, |_: &KvStore, state| state.get(key.as_bytes()))
            .await?
            .map_err(KvError::Read)
    }
}
