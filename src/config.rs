//! `raftnode serve`'s settings: flags, `RAFTNODE_*` (or `OTEL_*`) variables and a TOML file,
//! merged in that order of precedence, then resolved into validated [`Settings`].
//!
//! Every setting is declared once, in the table below: its flag (the field's name in kebab
//! case), its variable, its file key (the field's name), its help, and where its value goes.
//! The struct that clap and serde read, the file merge and the resolution are generated from
//! it, so that a flag, its variable and its file key can never drift apart. Range checks live
//! with the settings they guard ([`NodeConfig::validate`] for the node's), and name the same key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::kv::KvConfig;
use crate::node::{NodeConfig, NodeError};
use crate::otel::settings::{TraceOptions, TraceSettings};
use crate::raft::types::{GroupId, NodeId};

/// Why the settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file cannot be read or parsed.
    #[error("config file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A setting is out of range or inconsistent with another.
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// The setting's file key.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// How log lines look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Validated settings of `raftnode serve`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The node's own settings.
    pub node: NodeConfig,
    /// The KV store's limits.
    pub kv: KvConfig,
    /// tokio worker threads (0: one per CPU).
    pub worker_threads: usize,
    /// Whether the ledger counts.
    pub ledger_accounting: bool,
    /// How log lines look.
    pub log_format: LogFormat,
    /// The trace settings as given.
    pub trace: TraceOptions,
    /// The trace export, when an endpoint is set.
    pub tracing: Option<TraceSettings>,
}

impl Default for Settings {
    /// The binary's defaults: the node's, plus an HTTP server on 127.0.0.1:8080 and group 1.
    fn default() -> Self {
        Settings {
            node: NodeConfig {
                http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
                groups: vec![1],
                ..NodeConfig::default()
            },
            kv: KvConfig::default(),
            worker_threads: 0,
            ledger_accounting: true,
            log_format: LogFormat::Text,
            trace: TraceOptions::default(),
            tracing: None,
        }
    }
}

fn addr(field: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|_| invalid(field, format!("{s:?} is not an IP:port socket address")))
}

fn positive(field: &'static str, v: usize) -> Result<usize, ConfigError> {
    if v == 0 {
        Err(invalid(field, "must be greater than 0"))
    } else {
        Ok(v)
    }
}

/// A size between 1 and `max`.
fn bounded(field: &'static str, v: usize, max: usize) -> Result<usize, ConfigError> {
    if positive(field, v)? > max {
        return Err(invalid(field, format!("{v} is over the limit of {max}")));
    }
    Ok(v)
}

/// Largest key and value a client may be allowed to write: one entry must fit, with room to
/// spare, in a single WAL record and a single message between nodes.
const KEY_BYTES_LIMIT: usize = 1 << 20;
const VALUE_BYTES_LIMIT: usize = 32 << 20;

/// Parses `1=host:port,2=host:port`.
pub fn parse_peers(s: &str) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    let mut peers = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| invalid("peers", format!("{part:?} is not ID=HOST:PORT")))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| invalid("peers", format!("{id:?} is not a node id")))?;
        let addr = addr.trim();
        if id == 0 {
            return Err(invalid("peers", "node ids start at 1"));
        }
        if addr
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(invalid("peers", format!("{addr:?} is not HOST:PORT")));
        }
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(invalid("peers", format!("node {id} is listed twice")));
        }
    }
    if peers.is_empty() {
        return Err(invalid("peers", "lists no member"));
    }
    Ok(peers)
}

/// Declares every setting once: `name: type, env "VAR" [, value_name "V"] [, delimiter ','] =>
/// |settings, value| where the value goes;`.
macro_rules! settings {
    ($(
        $(#[$meta:meta])*
        $field:ident: $ty:ty, env $env:literal $(, value_name $vn:literal)? $(, delimiter $del:literal)?
            => |$s:ident, $v:ident| $apply:expr;
    )*) => {
        /// Options of `raftnode serve`. Every field is optional here; defaults apply in
        /// [`Settings`].
        #[derive(Clone, Debug, Default, Deserialize, clap::Args)]
        #[serde(deny_unknown_fields)]
        pub struct ServeOptions {
            /// TOML file with any of the options below (keys use underscores: `node_id = 2`).
            /// Flags override variables, which override the file.
            #[arg(long, env = "RAFTNODE_CONFIG", value_name = "FILE")]
            #[serde(skip)]
            pub config: Option<PathBuf>,
            $(
                $(#[$meta])*
                #[arg(long, env = $env $(, value_name = $vn)? $(, value_delimiter = $del)?)]
                pub $field: Option<$ty>,
            )*
        }

        impl ServeOptions {
            /// Takes each option from `self` when set, otherwise from `lower`.
            fn overlay(self, lower: ServeOptions) -> ServeOptions {
                ServeOptions {
                    config: self.config,
                    $( $field: self.$field.or(lower.$field), )*
                }
            }

            /// Puts every option that is set into `settings`.
            fn apply(self, settings: &mut Settings) -> Result<(), ConfigError> {
                $(
                    if let Some($v) = self.$field {
                        let $s = &mut *settings;
                        $apply;
                    }
                )*
                Ok(())
            }
        }
    };
}

settings! {
    /// This node's id, a positive integer unique in the cluster. [default: 1]
    node_id: NodeId, env "RAFTNODE_NODE_ID" => |s, v| s.node.node_id = v;

    /// Address the shared gRPC server (Raft and KV) listens on. [default: 127.0.0.1:7070]
    grpc_addr: String, env "RAFTNODE_GRPC_ADDR", value_name "ADDR"
        => |s, v| s.node.grpc_addr = addr("grpc_addr", &v)?;

    /// Address of the HTTP API, /metrics and health checks. [default: 127.0.0.1:8080]
    http_addr: String, env "RAFTNODE_HTTP_ADDR", value_name "ADDR"
        => |s, v| s.node.http_addr = Some(addr("http_addr", &v)?);

    /// Directory of the WAL, snapshots and the lock file. [default: ./raftnode-data]
    data_dir: PathBuf, env "RAFTNODE_DATA_DIR", value_name "DIR" => |s, v| s.node.data_dir = v;

    /// gRPC addresses of all members, this node included: `1=host:port,2=host:port`. Members
    /// take turns, by group id, at bootstrapping (and first leading) fresh groups. [default: this
    /// node alone]
    peers: String, env "RAFTNODE_PEERS", value_name "ID=ADDR,..."
        => |s, v| s.node.peers = parse_peers(&v)?;

    /// Groups this node hosts, each spanning all peers. [default: 1]
    groups: Vec<GroupId>, env "RAFTNODE_GROUPS", value_name "ID,...", delimiter ','
        => |s, v| s.node.groups = v;

    /// Minimum election timeout; the maximum is twice this. [default: 1000]
    election_timeout_ms: u64, env "RAFTNODE_ELECTION_TIMEOUT_MS", value_name "MS"
        => |s, v| s.node.election_timeout_ms = v;

    /// Leader heartbeat interval; must be under half the election timeout. [default: 100]
    heartbeat_ms: u64, env "RAFTNODE_HEARTBEAT_MS", value_name "MS"
        => |s, v| s.node.heartbeat_ms = v;

    /// Build a snapshot after this many log entries since the last one. [default: 10000]
    snapshot_logs: u64, env "RAFTNODE_SNAPSHOT_LOGS", value_name "N"
        => |s, v| s.node.snapshot_logs = v;

    /// Log entries kept behind a snapshot so that slightly lagging followers catch up by log.
    /// [default: 1000]
    snapshot_keep_logs: u64, env "RAFTNODE_SNAPSHOT_KEEP_LOGS", value_name "N"
        => |s, v| s.node.snapshot_keep_logs = v;

    /// Largest key accepted, in bytes, at most 1 MiB. [default: 4096]
    max_key_bytes: usize, env "RAFTNODE_MAX_KEY_BYTES", value_name "BYTES"
        => |s, v| s.kv.max_key_bytes = bounded("max_key_bytes", v, KEY_BYTES_LIMIT)?;

    /// Largest value accepted, in bytes, at most 32 MiB. [default: 1048576]
    max_value_bytes: usize, env "RAFTNODE_MAX_VALUE_BYTES", value_name "BYTES"
        => |s, v| s.kv.max_value_bytes = bounded("max_value_bytes", v, VALUE_BYTES_LIMIT)?;

    /// How long a client request may wait for a leader before it fails with 503. [default: 5000]
    request_timeout_ms: u64, env "RAFTNODE_REQUEST_TIMEOUT_MS", value_name "MS"
        => |s, v| s.node.request_timeout_ms = v;

    /// Bound on the whole graceful shutdown; past it the process exits non-zero. [default: 10000]
    shutdown_grace_ms: u64, env "RAFTNODE_SHUTDOWN_GRACE_MS", value_name "MS"
        => |s, v| s.node.shutdown_grace_ms = v;

    /// How long a stopping owner may take to reach zero tasks, threads and connections before
    /// what remains counts as leaked. [default: 5000]
    leak_deadline_ms: u64, env "RAFTNODE_LEAK_DEADLINE_MS", value_name "MS"
        => |s, v| s.node.leak_deadline_ms = v;

    /// Bound on the log entries one replication message carries, in bytes; a larger entry
    /// travels alone. Messages get more time the larger they are. [default: 4194304]
    max_append_bytes: u64, env "RAFTNODE_MAX_APPEND_BYTES", value_name "BYTES"
        => |s, v| s.node.max_append_bytes = v;

    /// WAL segment size at which a new segment starts. [default: 67108864]
    wal_segment_bytes: u64, env "RAFTNODE_WAL_SEGMENT_BYTES", value_name "BYTES"
        => |s, v| s.node.wal_segment_bytes = v;

    /// WAL size past which the live state is checkpointed and old segments removed.
    /// [default: 268435456]
    wal_checkpoint_bytes: u64, env "RAFTNODE_WAL_CHECKPOINT_BYTES", value_name "BYTES"
        => |s, v| s.node.wal_checkpoint_bytes = v;

    /// Bytes of recent log entries kept in memory, for the whole node; older entries are read
    /// back from the WAL. Entries not yet written stay in memory regardless. [default: 67108864]
    log_cache_bytes: u64, env "RAFTNODE_LOG_CACHE_BYTES", value_name "BYTES"
        => |s, v| s.node.log_cache_bytes = v;

    /// Block cache of the state engine, for the whole node: the applied state lives on disk,
    /// and this bounds what of it is kept in memory. [default: 33554432]
    state_cache_bytes: u64, env "RAFTNODE_STATE_CACHE_BYTES", value_name "BYTES"
        => |s, v| s.node.state_cache_bytes = v;

    /// tokio worker threads (0: one per CPU). [default: 0]
    worker_threads: usize, env "RAFTNODE_WORKER_THREADS", value_name "N"
        => |s, v| s.worker_threads = v;

    /// Label Raft metrics per group; turn off (false) for thousands of groups to export
    /// node-wide aggregates instead. [default: true]
    metrics_group_labels: bool, env "RAFTNODE_METRICS_GROUP_LABELS", value_name "BOOL"
        => |s, v| s.node.metrics_group_labels = v;

    /// How often a node that leads more than its share of the groups transfers leadership to
    /// nodes that lead fewer, at start and after restarts; 0 turns the balancer off.
    /// [default: 2000]
    leader_balance_ms: u64, env "RAFTNODE_LEADER_BALANCE_MS", value_name "MS"
        => |s, v| s.node.leader_balance_ms = v;

    /// How long a group must be idle (no writes, log fully replicated) before its heartbeats
    /// and election timers stop on every member; work, or the failure of a peer node, wakes it.
    /// Idle groups then cost nearly nothing. 0 keeps every group's timers running.
    /// [default: 3000]
    quiesce_after_ms: u64, env "RAFTNODE_QUIESCE_AFTER_MS", value_name "MS"
        => |s, v| s.node.quiesce_after_ms = v;

    /// Connections each server (gRPC, HTTP) holds open at once; more are closed as they arrive
    /// and counted in raftnode_limit_refusals_total. Peer connections count on the gRPC side.
    /// [default: 1000]
    max_connections: usize, env "RAFTNODE_MAX_CONNECTIONS", value_name "N"
        => |s, v| s.node.max_connections = v;

    /// How long an HTTP client may take to send a request's headers, counted from the
    /// connection's start or the end of its previous response; it also closes idle keep-alive
    /// connections. [default: 10000]
    http_header_timeout_ms: u64, env "RAFTNODE_HTTP_HEADER_TIMEOUT_MS", value_name "MS"
        => |s, v| s.node.http_header_timeout_ms = v;

    /// An HTTP connection on which no byte moves either way for this long is closed.
    /// [default: 60000]
    http_idle_timeout_ms: u64, env "RAFTNODE_HTTP_IDLE_TIMEOUT_MS", value_name "MS"
        => |s, v| s.node.http_idle_timeout_ms = v;

    /// Concurrent calls (HTTP/2 streams) one gRPC connection may have open. [default: 1024]
    grpc_max_concurrent_streams: u32, env "RAFTNODE_GRPC_MAX_CONCURRENT_STREAMS", value_name "N"
        => |s, v| s.node.grpc_max_concurrent_streams = v;

    /// Proposals (writes) this node holds in flight at once, from its clients and forwarded
    /// by its peers; more are refused with HTTP 429 or gRPC RESOURCE_EXHAUSTED and a retry
    /// hint. [default: 4096]
    max_inflight_proposals: usize, env "RAFTNODE_MAX_INFLIGHT_PROPOSALS", value_name "N"
        => |s, v| s.node.max_inflight_proposals = v;

    /// The same bound for each group. [default: 1024]
    max_inflight_proposals_per_group: usize, env "RAFTNODE_MAX_INFLIGHT_PROPOSALS_PER_GROUP",
        value_name "N" => |s, v| s.node.max_inflight_proposals_per_group = v;

    /// File of `token role [name]` lines (roles: read, write, admin). When set, every client
    /// request needs `Authorization: Bearer <token>` (gRPC: `authorization` metadata) whose role
    /// allows it; refusals are 401/403 and counted in raftnode_auth_failures_total. Re-read on
    /// SIGHUP and when it changes. [default: none: clients are not authenticated]
    auth_token_file: PathBuf, env "RAFTNODE_AUTH_TOKEN_FILE", value_name "FILE"
        => |s, v| s.node.auth_token_file = Some(v);

    /// Require a read token for /metrics, /healthz and /readyz too. [default: false]
    metrics_auth: bool, env "RAFTNODE_METRICS_AUTH", value_name "BOOL"
        => |s, v| s.node.metrics_auth = v;

    /// This node's certificate for peers (PEM, leaf first), naming it as the DNS name
    /// raftnode-node-N, N its node id. With --peer-key-file and --peer-ca-file, node-to-node traffic is
    /// mutual TLS: only members with a certificate of that CA that names their node id are
    /// heard. Re-read on SIGHUP and when it changes. [default: none: plain text, with a
    /// warning]
    peer_cert_file: PathBuf, env "RAFTNODE_PEER_CERT_FILE", value_name "FILE"
        => |s, v| s.node.peer_cert_file = Some(v);

    /// The key of --peer-cert-file (PEM).
    peer_key_file: PathBuf, env "RAFTNODE_PEER_KEY_FILE", value_name "FILE"
        => |s, v| s.node.peer_key_file = Some(v);

    /// The CA (PEM) that signs every member's peer certificate.
    peer_ca_file: PathBuf, env "RAFTNODE_PEER_CA_FILE", value_name "FILE"
        => |s, v| s.node.peer_ca_file = Some(v);

    /// The certificate (PEM) clients see on gRPC and HTTP; with --client-key-file, clients
    /// talk TLS. Needs peer TLS: clients and peers share the gRPC port. [default: none]
    client_cert_file: PathBuf, env "RAFTNODE_CLIENT_CERT_FILE", value_name "FILE"
        => |s, v| s.node.client_cert_file = Some(v);

    /// The key of --client-cert-file (PEM).
    client_key_file: PathBuf, env "RAFTNODE_CLIENT_KEY_FILE", value_name "FILE"
        => |s, v| s.node.client_key_file = Some(v);

    /// A CA (PEM): when set, clients must present a certificate it signed. [default: none]
    client_ca_file: PathBuf, env "RAFTNODE_CLIENT_CA_FILE", value_name "FILE"
        => |s, v| s.node.client_ca_file = Some(v);

    /// Count tasks, threads and connections per owner. Turn off only to measure what the
    /// accounting costs: leaks then go undetected. [default: true]
    ledger_accounting: bool, env "RAFTNODE_LEDGER_ACCOUNTING", value_name "BOOL"
        => |s, v| s.ledger_accounting = v;

    /// Log line format. In JSON, lines inside a traced request carry `trace_id` and `span_id`.
    /// [default: text]
    log_format: LogFormat, env "RAFTNODE_LOG_FORMAT" => |s, v| s.log_format = v;

    /// OpenTelemetry collector that receives traces over OTLP, such as http://127.0.0.1:4317
    /// (grpc) or http://127.0.0.1:4318 (http/protobuf, which posts to /v1/traces). Plain HTTP
    /// only; run a local agent for TLS. Tracing is off when this is unset.
    otlp_endpoint: String, env "OTEL_EXPORTER_OTLP_ENDPOINT", value_name "URL"
        => |s, v| s.trace.otlp_endpoint = Some(v);

    /// OTLP transport: `grpc` or `http/protobuf`. [default: grpc]
    otlp_protocol: String, env "OTEL_EXPORTER_OTLP_PROTOCOL", value_name "PROTOCOL"
        => |s, v| s.trace.otlp_protocol = Some(v);

    /// Bound on one export call; a slow collector costs dropped spans, never slower writes.
    /// [default: 10000]
    otlp_timeout_ms: u64, env "OTEL_EXPORTER_OTLP_TIMEOUT", value_name "MS"
        => |s, v| s.trace.otlp_timeout_ms = Some(v);

    /// `service.name` of the exported spans. [default: raftnode]
    otel_service_name: String, env "OTEL_SERVICE_NAME", value_name "NAME"
        => |s, v| s.trace.otel_service_name = Some(v);

    /// Extra resource attributes, `key=value,...` (values may be percent-encoded). The node id
    /// is added as `raftnode.node_id` and `service.instance.id`.
    otel_resource_attributes: String, env "OTEL_RESOURCE_ATTRIBUTES", value_name "K=V,..."
        => |s, v| s.trace.otel_resource_attributes = Some(v);

    /// Sampler: always_on, always_off, traceidratio, parentbased_always_on,
    /// parentbased_always_off or parentbased_traceidratio. The parent-based ones follow an
    /// incoming `traceparent`. [default: parentbased_always_on]
    otel_traces_sampler: String, env "OTEL_TRACES_SAMPLER", value_name "SAMPLER"
        => |s, v| s.trace.otel_traces_sampler = Some(v);

    /// The ratio, 0.0 to 1.0, of the traceidratio samplers. [default: 1.0]
    otel_traces_sampler_arg: String, env "OTEL_TRACES_SAMPLER_ARG", value_name "RATIO"
        => |s, v| s.trace.otel_traces_sampler_arg = Some(v);

    /// Spans buffered for export. When the collector cannot keep up, further spans are dropped
    /// and counted in raftnode_trace_spans_dropped_total. [default: 2048]
    otel_queue_size: usize, env "OTEL_BSP_MAX_QUEUE_SIZE", value_name "N"
        => |s, v| s.trace.otel_queue_size = Some(v);

    /// Longest time a finished span waits before it is exported in a batch. [default: 5000]
    otel_batch_delay_ms: u64, env "OTEL_BSP_SCHEDULE_DELAY", value_name "MS"
        => |s, v| s.trace.otel_batch_delay_ms = Some(v);
}

impl ServeOptions {
    /// Reads the TOML file named by `--config`, if any, under these options.
    pub fn with_file(self) -> Result<ServeOptions, ConfigError> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let file = Self::read_file(&path)?;
        Ok(self.overlay(file))
    }

    fn read_file(path: &Path) -> Result<ServeOptions, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            reason: e.to_string().trim_end().replace('\n', " "),
        })
    }
}

impl Settings {
    /// Resolves and validates the options: a bad value is an error that names its key.
    pub fn resolve(o: ServeOptions) -> Result<Settings, ConfigError> {
        let mut s = Settings::default();
        o.apply(&mut s)?;
        s.node = match s.node.validate() {
            Ok((node, _)) => node,
            Err(NodeError::Config { field, reason }) => return Err(invalid(field, reason)),
            Err(e) => return Err(invalid("node", e.to_string())),
        };
        s.tracing = TraceSettings::resolve(&s.trace).map_err(|e| invalid(e.field, e.reason))?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_make_a_single_node_cluster() {
        let s = Settings::resolve(ServeOptions::default()).unwrap();
        assert_eq!(s.node.node_id, 1);
        assert_eq!(
            s.node.peers.get(&1).map(String::as_str),
            Some("127.0.0.1:7070")
        );
        assert_eq!(s.node.groups, vec![1]);
        assert_eq!(s.node.http_addr, Some("127.0.0.1:8080".parse().unwrap()));
        assert!(s.node.is_bootstrapper(1));
        assert!(s.tracing.is_none());
    }

    #[test]
    fn peers_parse_and_reject() {
        let p = parse_peers("1=a:1, 2=b:2").unwrap();
        assert_eq!(p.len(), 2);
        for bad in ["1", "x=a:1", "1=a", "1=a:1,1=b:2", "0=a:1", "1=:5", ""] {
            assert!(parse_peers(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                ServeOptions {
                    node_id: Some(3),
                    peers: Some("1=a:1".into()),
                    ..Default::default()
                },
                "peers",
            ),
            (
                ServeOptions {
                    heartbeat_ms: Some(600),
                    ..Default::default()
                },
                "heartbeat_ms",
            ),
            (
                ServeOptions {
                    grpc_addr: Some("nowhere".into()),
                    ..Default::default()
                },
                "grpc_addr",
            ),
            (
                ServeOptions {
                    max_value_bytes: Some(0),
                    ..Default::default()
                },
                "max_value_bytes",
            ),
            (
                ServeOptions {
                    max_value_bytes: Some(64 << 20),
                    ..Default::default()
                },
                "max_value_bytes",
            ),
            (
                ServeOptions {
                    max_append_bytes: Some(1 << 30),
                    ..Default::default()
                },
                "max_append_bytes",
            ),
            (
                ServeOptions {
                    otel_traces_sampler: Some("sometimes".into()),
                    otlp_endpoint: Some("http://c:1".into()),
                    ..Default::default()
                },
                "otel_traces_sampler",
            ),
        ];
        for (o, field) in cases {
            let e = Settings::resolve(o).unwrap_err().to_string();
            assert!(e.contains(&format!("`{field}`")), "{e} should name {field}");
        }
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "node_id = 2\nheartbeat_ms = 50\ngroups = [4, 5]\n").unwrap();
        let o = ServeOptions {
            config: Some(path.clone()),
            node_id: Some(7),
            ..Default::default()
        }
        .with_file()
        .unwrap();
        assert_eq!((o.node_id, o.heartbeat_ms), (Some(7), Some(50)));
        assert_eq!(o.groups, Some(vec![4, 5]));
        std::fs::write(&path, "nodeid = 2\n").unwrap();
        let e = ServeOptions {
            config: Some(path),
            ..Default::default()
        }
        .with_file()
        .unwrap_err()
        .to_string();
        assert!(e.contains("nodeid"), "{e}");
    }

    #[test]
    fn the_file_can_turn_tracing_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "otlp_endpoint = \"http://collector:4318\"\notlp_protocol = \"http/protobuf\"\n\
             otel_traces_sampler = \"traceidratio\"\notel_traces_sampler_arg = \"0.25\"\n",
        )
        .unwrap();
        let o = ServeOptions {
            config: Some(path),
            ..Default::default()
        }
        .with_file()
        .unwrap();
        let t = Settings::resolve(o).unwrap().tracing.unwrap();
        assert_eq!(t.endpoint.to_string(), "http://collector:4318/v1/traces");
        assert_eq!(
            t.sampler.root,
            crate::otel::settings::SamplerKind::Ratio(0.25)
        );
        assert!(!t.sampler.parent_based);
    }
}
