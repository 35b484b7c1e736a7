//! A node's settings, with defaults that make a working single-node cluster, and their
//! validation. Field names are the `raftnode serve` flags' and config-file keys', so that an
//! error names the same thing whichever way a setting was given.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::node::error::NodeError;
use crate::node::placement;
use crate::raft::types::{GroupId, NodeId};

/// Everything a node is started with. Build it with `..Default::default()` or through the
/// [`crate::NodeBuilder`]'s methods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// This node's id, unique in the cluster; ids start at 1.
    pub node_id: NodeId,
    /// Where the shared gRPC server listens (Raft between nodes, and the program's services).
    pub grpc_addr: SocketAddr,
    /// Where the HTTP server listens (`/metrics`, health, status, group admin); none if `None`.
    pub http_addr: Option<SocketAddr>,
    /// The directory of the WAL, snapshots and the lock file.
    pub data_dir: PathBuf,
    /// Every member's gRPC address, this node included. Empty: this node alone, at
    /// `grpc_addr`. Members take turns, by group id, at bootstrapping fresh groups.
    pub peers: BTreeMap<NodeId, String>,
    /// Groups started with the node, each spanning all peers.
    pub groups: Vec<GroupId>,
    /// Minimum election timeout; the maximum is twice it.
    pub election_timeout_ms: u64,
    /// Leader heartbeat interval; under half the election timeout.
    pub heartbeat_ms: u64,
    /// A snapshot is built after this many log entries since the last one.
    pub snapshot_logs: u64,
    /// Log entries kept behind a snapshot, so that slightly lagging followers catch up by log.
    pub snapshot_keep_logs: u64,
    /// How long a proposal or read may wait for a leader before it fails.
    pub request_timeout_ms: u64,
    /// Bound on the whole graceful stop.
    pub shutdown_grace_ms: u64,
    /// How long a stopping owner may take to reach zero tasks, threads and connections before
    /// what remains counts as leaked.
    pub leak_deadline_ms: u64,
    /// Bound on the log entries one replication message carries, in bytes (at least one entry
    /// goes whatever its size). Its send timeout grows with its size.
    pub max_append_bytes: u64,
    /// WAL segment size at which a new segment starts.
    pub wal_segment_bytes: u64,
    /// WAL size past which the live state is checkpointed and old segments removed.
    pub wal_checkpoint_bytes: u64,
    /// Bytes of log entries kept in memory, node-wide; older entries are read from the WAL.
    pub log_cache_bytes: u64,
    /// Block cache of the state engine, node-wide: the applied state itself lives on disk.
    pub state_cache_bytes: u64,
    /// Label Raft metrics per group; off, `/metrics` exports node-wide aggregates (for
    /// thousands of groups).
    pub metrics_group_labels: bool,
    /// How often the leader balancer runs: a node that leads more than its share of the
    /// groups transfers some to the nodes that lead fewer. 0 turns it off.
    pub leader_balance_ms: u64,
    /// How long a group must be idle (no proposal, log fully replicated and applied) before
    /// its timers stop on every member, until work or a peer's failure wakes it. 0 keeps every
    /// group's timers running.
    pub quiesce_after_ms: u64,
    /// Connections each server (the shared gRPC server, the HTTP server) holds open at once;
    /// more are closed as they arrive and counted. Peers' connections count on the gRPC side.
    pub max_connections: usize,
    /// How long an HTTP client may take to send a request's headers, from the connection's
    /// start or the end of its previous response (so it also bounds an idle keep-alive).
    pub http_header_timeout_ms: u64,
    /// An HTTP connection on which no byte moves either way for this long is closed (a
    /// stalled upload, a client that stopped reading).
    pub http_idle_timeout_ms: u64,
    /// Concurrent calls (HTTP/2 streams) one gRPC connection may have open.
    pub grpc_max_concurrent_streams: u32,
    /// Proposals this node holds in flight at once, its clients' and those forwarded to it;
    /// more are refused (HTTP 429, gRPC RESOURCE_EXHAUSTED) with a hint to retry.
    pub max_inflight_proposals: usize,
    /// The same bound for each group.
    pub max_inflight_proposals_per_group: usize,
    /// A file of `token role [name]` lines: when set, every client request of both servers
    /// needs `Authorization: Bearer <token>` with a role that allows it. Re-read on
    /// [`crate::Node::reload_security`] and when the file changes.
    pub auth_token_file: Option<PathBuf>,
    /// Whether `/metrics`, `/healthz` and `/readyz` need a (read) token too.
    pub metrics_auth: bool,
    /// This node's certificate for peers (PEM, leaf first); it names `raftnode-node-<id>`.
    /// With its key and the peer CA, node-to-node traffic is mutual TLS.
    pub peer_cert_file: Option<PathBuf>,
    /// The key of `peer_cert_file` (PEM).
    pub peer_key_file: Option<PathBuf>,
    /// The CA (PEM) that signs every member's peer certificate.
    pub peer_ca_file: Option<PathBuf>,
    /// The certificate clients see on gRPC and HTTP (PEM); needs peer TLS, since clients and
    /// peers share the gRPC port.
    pub client_cert_file: Option<PathBuf>,
    /// The key of `client_cert_file` (PEM).
    pub client_key_file: Option<PathBuf>,
    /// A CA (PEM): when set, clients must present a certificate it signed.
    pub client_ca_file: Option<PathBuf>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_id: 1,
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 7070)),
            http_addr: None,
            data_dir: PathBuf::from("raftnode-data"),
            peers: BTreeMap::new(),
            groups: Vec::new(),
            election_timeout_ms: 1000,
            heartbeat_ms: 100,
            snapshot_logs: 10_000,
            snapshot_keep_logs: 1000,
            request_timeout_ms: 5000,
            shutdown_grace_ms: 10_000,
            leak_deadline_ms: 5000,
            max_append_bytes: DEFAULT_MAX_APPEND_BYTES,
            wal_segment_bytes: 64 << 20,
            wal_checkpoint_bytes: 256 << 20,
            log_cache_bytes: 64 << 20,
            state_cache_bytes: 32 << 20,
            metrics_group_labels: true,
            leader_balance_ms: 2000,
            quiesce_after_ms: 3000,
            max_connections: 1000,
            http_header_timeout_ms: 10_000,
            http_idle_timeout_ms: 60_000,
            grpc_max_concurrent_streams: 1024,
            max_inflight_proposals: 4096,
            max_inflight_proposals_per_group: 1024,
            auth_token_file: None,
            metrics_auth: false,
            peer_cert_file: None,
            peer_key_file: None,
            peer_ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            client_ca_file: None,
        }
    }
}

/// gRPC messages between nodes carry whole snapshots; allow them this large.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// A few MiB: large enough that small entries travel hundreds at a time, small enough that a
/// message of large values arrives well within its timeout on a slow link.
pub const DEFAULT_MAX_APPEND_BYTES: u64 = 4 << 20;

fn invalid(field: &'static str, reason: impl Into<String>) -> NodeError {
    NodeError::Config {
        field,
        reason: reason.into(),
    }
}

fn positive(field: &'static str, v: u64) -> Result<u64, NodeError> {
    if v == 0 {
        Err(invalid(field, "must be greater than 0"))
    } else {
        Ok(v)
    }
}

impl NodeConfig {
    /// Checks every setting and fills what defaults from others (the peers). Returns the
    /// validated settings and openraft's configuration for every group.
    pub fn validate(mut self) -> Result<(NodeConfig, openraft::Config), NodeError> {
        positive("node_id", self.node_id)?;
        if self.peers.is_empty() {
            self.peers.insert(self.node_id, self.grpc_addr.to_string());
        }
        if self.peers.contains_key(&0) {
            return Err(invalid("peers", "node ids start at 1"));
        }
        if !self.peers.contains_key(&self.node_id) {
            return Err(invalid(
                "peers",
                format!(
                    "must include this node (node_id {}) with its gRPC address",
                    self.node_id
                ),
            ));
        }
        if self.groups.contains(&0) {
            return Err(invalid("groups", "group ids start at 1"));
        }
        self.groups.sort_unstable();
        self.groups.dedup();
        let election = positive("election_timeout_ms", self.election_timeout_ms)?;
        let heartbeat = positive("heartbeat_ms", self.heartbeat_ms)?;
        if heartbeat * 2 >= election {
            return Err(invalid(
                "heartbeat_ms",
                format!("{heartbeat} must be under half of election_timeout_ms ({election})"),
            ));
        }
        positive("snapshot_logs", self.snapshot_logs)?;
        positive("request_timeout_ms", self.request_timeout_ms)?;
        positive("shutdown_grace_ms", self.shutdown_grace_ms)?;
        positive("leak_deadline_ms", self.leak_deadline_ms)?;
        let append = positive("max_append_bytes", self.max_append_bytes)?;
        if append > (MAX_MESSAGE_BYTES / 4) as u64 {
            return Err(invalid(
                "max_append_bytes",
                format!("{append} is over the limit of {}", MAX_MESSAGE_BYTES / 4),
            ));
        }
        positive("wal_segment_bytes", self.wal_segment_bytes)?;
        positive("wal_checkpoint_bytes", self.wal_checkpoint_bytes)?;
        positive("max_connections", self.max_connections as u64)?;
        positive("http_header_timeout_ms", self.http_header_timeout_ms)?;
        positive("http_idle_timeout_ms", self.http_idle_timeout_ms)?;
        positive(
            "grpc_max_concurrent_streams",
            u64::from(self.grpc_max_concurrent_streams),
        )?;
        positive("max_inflight_proposals", self.max_inflight_proposals as u64)?;
        positive(
            "max_inflight_proposals_per_group",
            self.max_inflight_proposals_per_group as u64,
        )?;
        if self.metrics_auth && self.auth_token_file.is_none() {
            return Err(invalid(
                "metrics_auth",
                "needs auth_token_file: without tokens there is nothing to check",
            ));
        }
        self.tls_files()?;
        let raft = openraft::Config {
            cluster_name: "raftnode".to_string(),
            election_timeout_min: election,
            election_timeout_max: election * 2,
            heartbeat_interval: heartbeat,
            install_snapshot_timeout: 10_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_logs),
            max_in_snapshot_log_to_keep: self.snapshot_keep_logs,
            enable_pre_vote: Some(true),
            // openraft keeps six ring buffers of this many entries per group for latency
            // statistics that only its `runtime-stats` feature (off here) records: at the
            // default of 1,024 they were reserved for nothing, up to 144 KiB per group.
            log_stage_capacity: Some(1),
            ..Default::default()
        }
        .validate()
        .map_err(|e| invalid("election_timeout_ms", e.to_string()))?;
        Ok((self, raft))
    }

    /// Whether this node bootstraps fresh group `group`: members take turns by group id
    /// ([`placement::preferred_leader`]), so that exactly one node does, and the first leaders
    /// are spread over the members.
    pub fn is_bootstrapper(&self, group: GroupId) -> bool {
        let members = self.peers.keys().copied().collect();
        placement::preferred_leader(group, &members) == Some(self.node_id)
    }

    /// How often the leader balancer runs; `None` when it is off.
    pub fn leader_balance(&self) -> Option<Duration> {
        (self.leader_balance_ms > 0).then(|| Duration::from_millis(self.leader_balance_ms))
    }

    /// How often the quiescer's rounds run; `None` when quiescence is off. Two heartbeats: a
    /// group nobody wrote sleeps at its first quiet round, and every round it stays awake
    /// costs ticks and heartbeats, thousands of times over when a node's death wakes its groups.
    pub fn quiesce_round(&self) -> Option<Duration> {
        (self.quiesce_after_ms > 0).then(|| Duration::from_millis(self.quiesce_round_ms()))
    }

    fn quiesce_round_ms(&self) -> u64 {
        (self.heartbeat_ms * 2).min(self.quiesce_after_ms).max(1)
    }

    /// Quiet rounds a group written by a client waits before it sleeps: `quiesce_after_ms` of
    /// them, rounded up.
    pub fn quiet_rounds(&self) -> u32 {
        let round = self.quiesce_round_ms();
        u32::try_from(self.quiesce_after_ms.div_ceil(round).max(1)).unwrap_or(u32::MAX)
    }

    /// The request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The bound on the whole graceful stop.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// The leak deadline of a stopping owner.
    pub fn leak_deadline(&self) -> Duration {
        Duration::from_millis(self.leak_deadline_ms)
    }

    /// The minimum election timeout.
    pub fn election_timeout(&self) -> Duration {
        Duration::from_millis(self.election_timeout_ms)
    }

    /// The TLS files, when TLS is on; an error when they are given only in part.
    pub fn tls_files(&self) -> Result<Option<crate::tls::TlsFiles>, NodeError> {
        let peer = (
            &self.peer_cert_file,
            &self.peer_key_file,
            &self.peer_ca_file,
        );
        let client = (&self.client_cert_file, &self.client_key_file);
        let peer = match peer {
            (Some(c), Some(k), Some(ca)) => Some((c.clone(), k.clone(), ca.clone())),
            (None, None, None) => None,
            _ => {
                return Err(invalid(
                    "peer_cert_file",
                    "peer TLS needs all of peer_cert_file, peer_key_file and peer_ca_file",
                ))
            }
        };
        let client = match client {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "client_cert_file",
                    "client TLS needs both client_cert_file and client_key_file",
                ))
            }
        };
        if self.client_ca_file.is_some() && client.is_none() {
            return Err(invalid(
                "client_ca_file",
                "needs client_cert_file and client_key_file: clients check the server first",
            ));
        }
        match peer {
            None if client.is_some() => Err(invalid(
                "client_cert_file",
                "client TLS needs peer TLS (peer_cert_file, peer_key_file, peer_ca_file): \
                 clients and peers share the gRPC port",
            )),
            None => Ok(None),
            Some((peer_cert, peer_key, peer_ca)) => Ok(Some(crate::tls::TlsFiles {
                peer_cert,
                peer_key,
                peer_ca,
                client,
                client_ca: self.client_ca_file.clone(),
            })),
        }
    }

    /// What the HTTP server lets one client hold.
    pub fn http_limits(&self) -> crate::http::HttpLimits {
        crate::http::HttpLimits {
            max_connections: self.max_connections,
            header_timeout: Duration::from_millis(self.http_header_timeout_ms),
            idle_timeout: Duration::from_millis(self.http_idle_timeout_ms),
        }
    }

    /// The other members and their gRPC addresses.
    pub fn other_peers(&self) -> Vec<(NodeId, String)> {
        self.peers
            .iter()
            .filter(|(id, _)| **id != self.node_id)
            .map(|(id, a)| (*id, a.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_make_a_single_node_cluster() {
        let (c, raft) = NodeConfig::default().validate().unwrap();
        assert_eq!(c.peers.get(&1).map(String::as_str), Some("127.0.0.1:7070"));
        assert!(c.is_bootstrapper(1) && c.is_bootstrapper(2));
        assert_eq!(raft.heartbeat_interval, 100);
    }

    #[test]
    fn errors_name_the_field() {
        let cases: Vec<(NodeConfig, &str)> = vec![
            (
                NodeConfig {
                    node_id: 0,
                    ..Default::default()
                },
                "node_id",
            ),
            (
                NodeConfig {
                    node_id: 3,
                    peers: BTreeMap::from([(1, "a:1".to_string())]),
                    ..Default::default()
                },
                "peers",
            ),
            (
                NodeConfig {
                    heartbeat_ms: 600,
                    ..Default::default()
                },
                "heartbeat_ms",
            ),
            (
                NodeConfig {
                    groups: vec![0],
                    ..Default::default()
                },
                "groups",
            ),
            (
                NodeConfig {
                    leak_deadline_ms: 0,
                    ..Default::default()
                },
                "leak_deadline_ms",
            ),
        ];
        for (c, field) in cases {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(&format!("`{field}`")), "{e} should name {field}");
        }
    }

    #[test]
    fn groups_are_sorted_and_deduplicated() {
        let (c, _) = NodeConfig {
            groups: vec![3, 1, 3, 2],
            ..Default::default()
        }
        .validate()
        .unwrap();
        assert_eq!(c.groups, vec![1, 2, 3]);
    }
}
