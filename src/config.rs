//! Node configuration: one options struct read from flags, `RAFTNODE_*` variables and a TOML
//! file, merged in that order of precedence, then resolved into validated [`Settings`].
//!
//! The same struct serves clap and serde so that a flag, its variable and its file key can
//! never drift apart: the file key is the flag's name with underscores.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::raft::types::{GroupId, NodeId};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("invalid `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
}

pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Options of `raftnode serve`. Every field is optional here; defaults apply in [`Settings`].
#[derive(Clone, Debug, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct ServeOptions {
    /// TOML file with any of the options below (keys use underscores: `node_id = 2`).
    /// Flags override variables, which override the file.
    #[arg(long, env = "RAFTNODE_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// This node's id, a positive integer unique in the cluster. [default: 1]
    #[arg(long, env = "RAFTNODE_NODE_ID")]
    pub node_id: Option<NodeId>,

    /// Address the shared gRPC server (Raft and KV) listens on. [default: 127.0.0.1:7070]
    #[arg(long, env = "RAFTNODE_GRPC_ADDR", value_name = "ADDR")]
    pub grpc_addr: Option<String>,

    /// Address of the HTTP API, /metrics and health checks. [default: 127.0.0.1:8080]
    #[arg(long, env = "RAFTNODE_HTTP_ADDR", value_name = "ADDR")]
    pub http_addr: Option<String>,

    /// Directory of the WAL, snapshots and the lock file. [default: ./raftnode-data]
    #[arg(long, env = "RAFTNODE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// gRPC addresses of all members, this node included: `1=host:port,2=host:port`. The lowest
    /// id bootstraps each group on a fresh data dir. [default: this node alone]
    #[arg(long, env = "RAFTNODE_PEERS", value_name = "ID=ADDR,...")]
    pub peers: Option<String>,

    /// Groups this node hosts, each spanning all peers. [default: 1]
    #[arg(
        long,
        env = "RAFTNODE_GROUPS",
        value_delimiter = ',',
        value_name = "ID,..."
    )]
    pub groups: Option<Vec<GroupId>>,

    /// Minimum election timeout; the maximum is twice this. [default: 1000]
    #[arg(long, env = "RAFTNODE_ELECTION_TIMEOUT_MS", value_name = "MS")]
    pub election_timeout_ms: Option<u64>,

    /// Leader heartbeat interval; must be under half the election timeout. [default: 100]
    #[arg(long, env = "RAFTNODE_HEARTBEAT_MS", value_name = "MS")]
    pub heartbeat_ms: Option<u64>,

    /// Build a snapshot after this many log entries since the last one. [default: 10000]
    #[arg(long, env = "RAFTNODE_SNAPSHOT_LOGS", value_name = "N")]
    pub snapshot_logs: Option<u64>,

    /// Log entries kept behind a snapshot so that slightly lagging followers catch up by log.
    /// [default: 1000]
    #[arg(long, env = "RAFTNODE_SNAPSHOT_KEEP_LOGS", value_name = "N")]
    pub snapshot_keep_logs: Option<u64>,

    /// Largest key accepted, in bytes. [default: 4096]
    #[arg(long, env = "RAFTNODE_MAX_KEY_BYTES", value_name = "BYTES")]
    pub max_key_bytes: Option<usize>,

    /// Largest value accepted, in bytes. [default: 1048576]
    #[arg(long, env = "RAFTNODE_MAX_VALUE_BYTES", value_name = "BYTES")]
    pub max_value_bytes: Option<usize>,

    /// How long a client request may wait for a leader before it fails with 503. [default: 5000]
    #[arg(long, env = "RAFTNODE_REQUEST_TIMEOUT_MS", value_name = "MS")]
    pub request_timeout_ms: Option<u64>,

    /// Bound on the whole graceful shutdown; past it the process exits non-zero. [default: 10000]
    #[arg(long, env = "RAFTNODE_SHUTDOWN_GRACE_MS", value_name = "MS")]
    pub shutdown_grace_ms: Option<u64>,

    /// How long a stopping owner may take to reach zero tasks, threads and connections before
    /// what remains counts as leaked. [default: 5000]
    #[arg(long, env = "RAFTNODE_LEAK_DEADLINE_MS", value_name = "MS")]
    pub leak_deadline_ms: Option<u64>,

    /// WAL segment size at which a new segment starts. [default: 67108864]
    #[arg(long, env = "RAFTNODE_WAL_SEGMENT_BYTES", value_name = "BYTES")]
    pub wal_segment_bytes: Option<u64>,

    /// WAL size past which the live state is checkpointed and old segments removed.
    /// [default: 268435456]
    #[arg(long, env = "RAFTNODE_WAL_CHECKPOINT_BYTES", value_name = "BYTES")]
    pub wal_checkpoint_bytes: Option<u64>,

    /// tokio worker threads (0: one per CPU). [default: 0]
    #[arg(long, env = "RAFTNODE_WORKER_THREADS", value_name = "N")]
    pub worker_threads: Option<usize>,

    /// Label Raft metrics per group; turn off (false) for thousands of groups to export
    /// node-wide aggregates instead. [default: true]
    #[arg(long, env = "RAFTNODE_METRICS_GROUP_LABELS", value_name = "BOOL")]
    pub metrics_group_labels: Option<bool>,

    /// Count tasks, threads and connections per owner. Turn off only to measure what the
    /// accounting costs: leaks then go undetected. [default: true]
    #[arg(long, env = "RAFTNODE_LEDGER_ACCOUNTING", value_name = "BOOL")]
    pub ledger_accounting: Option<bool>,

    /// Log line format. In JSON, lines inside a traced request carry `trace_id` and `span_id`.
    /// [default: text]
    #[arg(long, env = "RAFTNODE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// OpenTelemetry collector that receives traces over OTLP, such as http://127.0.0.1:4317
    /// (grpc) or http://127.0.0.1:4318 (http/protobuf, which posts to /v1/traces). Plain HTTP
    /// only; run a local agent for TLS. Tracing is off when this is unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// OTLP transport: `grpc` or `http/protobuf`. [default: grpc]
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", value_name = "PROTOCOL")]
    pub otlp_protocol: Option<String>,

    /// Bound on one export call; a slow collector costs dropped spans, never slower writes.
    /// [default: 10000]
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TIMEOUT", value_name = "MS")]
    pub otlp_timeout_ms: Option<u64>,

    /// `service.name` of the exported spans. [default: raftnode]
    #[arg(long, env = "OTEL_SERVICE_NAME", value_name = "NAME")]
    pub otel_service_name: Option<String>,

    /// Extra resource attributes, `key=value,...` (values may be percent-encoded). The node id
    /// is added as `raftnode.node_id` and `service.instance.id`.
    #[arg(long, env = "OTEL_RESOURCE_ATTRIBUTES", value_name = "K=V,...")]
    pub otel_resource_attributes: Option<String>,

    /// Sampler: always_on, always_off, traceidratio, parentbased_always_on,
    /// parentbased_always_off or parentbased_traceidratio. The parent-based ones follow an
    /// incoming `traceparent`. [default: parentbased_always_on]
    #[arg(long, env = "OTEL_TRACES_SAMPLER", value_name = "SAMPLER")]
    pub otel_traces_sampler: Option<String>,

    /// The ratio, 0.0 to 1.0, of the traceidratio samplers. [default: 1.0]
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", value_name = "RATIO")]
    pub otel_traces_sampler_arg: Option<String>,

    /// Spans buffered for export. When the collector cannot keep up, further spans are dropped
    /// and counted in raftnode_trace_spans_dropped_total. [default: 2048]
    #[arg(long, env = "OTEL_BSP_MAX_QUEUE_SIZE", value_name = "N")]
    pub otel_queue_size: Option<usize>,

    /// Longest time a finished span waits before it is exported in a batch. [default: 5000]
    #[arg(long, env = "OTEL_BSP_SCHEDULE_DELAY", value_name = "MS")]
    pub otel_batch_delay_ms: Option<u64>,
}

/// Takes each field from `self` when set, otherwise from `lower`.
macro_rules! overlay {
    ($hi:expr, $lo:expr, $($f:ident),* $(,)?) => {
        ServeOptions { config: $hi.config.clone(), $($f: $hi.$f.clone().or($lo.$f.clone()),)* }
    };
}

impl ServeOptions {
    /// Reads the TOML file named by `--config`, if any, under these options.
    pub fn with_file(self) -> Result<ServeOptions, ConfigError> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let file = Self::read_file(&path)?;
        Ok(overlay!(
            self,
            file,
            node_id,
            grpc_addr,
            http_addr,
            data_dir,
            peers,
            groups,
            election_timeout_ms,
            heartbeat_ms,
            snapshot_logs,
            snapshot_keep_logs,
            max_key_bytes,
            max_value_bytes,
            request_timeout_ms,
            shutdown_grace_ms,
            leak_deadline_ms,
            wal_segment_bytes,
            wal_checkpoint_bytes,
            worker_threads,
            metrics_group_labels,
            ledger_accounting,
            log_format,
            otlp_endpoint,
            otlp_protocol,
            otlp_timeout_ms,
            otel_service_name,
            otel_resource_attributes,
            otel_traces_sampler,
            otel_traces_sampler_arg,
            otel_queue_size,
            otel_batch_delay_ms,
        ))
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

/// Validated configuration of a node.
#[derive(Clone, Debug)]
pub struct Settings {
    pub node_id: NodeId,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub peers: BTreeMap<NodeId, String>,
    pub groups: Vec<GroupId>,
    pub election_timeout: Duration,
    pub heartbeat: Duration,
    pub snapshot_logs: u64,
    pub snapshot_keep_logs: u64,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
    pub leak_deadline: Duration,
    pub wal_segment_bytes: u64,
    pub wal_checkpoint_bytes: u64,
    pub worker_threads: usize,
    pub metrics_group_labels: bool,
    pub ledger_accounting: bool,
    pub log_format: LogFormat,
    /// `None` when no OTLP endpoint is configured: tracing is off.
    pub tracing: Option<crate::otel::TraceSettings>,
}

/// gRPC messages carry whole snapshots; allow them this large.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

fn parse_addr(field: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|_| invalid(field, format!("{s:?} is not an IP:port socket address")))
}

pub(crate) fn positive(field: &'static str, v: u64) -> Result<u64, ConfigError> {
    if v == 0 {
        Err(invalid(field, "must be greater than 0"))
    } else {
        Ok(v)
    }
}

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
    Ok(peers)
}

impl Settings {
    pub fn resolve(o: ServeOptions) -> Result<Settings, ConfigError> {
        let tracing = crate::otel::TraceSettings::resolve(&o)?;
        let node_id = positive("node_id", o.node_id.unwrap_or(1))?;
        let grpc_addr = parse_addr(
            "grpc_addr",
            o.grpc_addr.as_deref().unwrap_or("127.0.0.1:7070"),
        )?;
        let http_addr = parse_addr(
            "http_addr",
            o.http_addr.as_deref().unwrap_or("127.0.0.1:8080"),
        )?;
        let peers = match o.peers.as_deref() {
            Some(s) => parse_peers(s)?,
            None => BTreeMap::from([(node_id, grpc_addr.to_string())]),
        };
        if peers.is_empty() {
            return Err(invalid("peers", "lists no member"));
        }
        if !peers.contains_key(&node_id) {
            return Err(invalid(
                "peers",
                format!("must include this node (node_id {node_id}) with its gRPC address"),
            ));
        }
        let mut groups = o.groups.unwrap_or_else(|| vec![1]);
        if groups.contains(&0) {
            return Err(invalid("groups", "group ids start at 1"));
        }
        groups.sort_unstable();
        groups.dedup();
        let election = positive("election_timeout_ms", o.election_timeout_ms.unwrap_or(1000))?;
        let heartbeat = positive("heartbeat_ms", o.heartbeat_ms.unwrap_or(100))?;
        if heartbeat * 2 >= election {
            return Err(invalid(
                "heartbeat_ms",
                format!("{heartbeat} must be under half of election_timeout_ms ({election})"),
            ));
        }
        let ms = Duration::from_millis;
        Ok(Settings {
            node_id,
            grpc_addr,
            http_addr,
            data_dir: o.data_dir.unwrap_or_else(|| PathBuf::from("raftnode-data")),
            peers,
            groups,
            election_timeout: ms(election),
            heartbeat: ms(heartbeat),
            snapshot_logs: positive("snapshot_logs", o.snapshot_logs.unwrap_or(10_000))?,
            snapshot_keep_logs: o.snapshot_keep_logs.unwrap_or(1000),
            max_key_bytes: positive("max_key_bytes", o.max_key_bytes.unwrap_or(4096) as u64)?
                as usize,
            max_value_bytes: positive(
                "max_value_bytes",
                o.max_value_bytes.unwrap_or(1 << 20) as u64,
            )? as usize,
            request_timeout: ms(positive(
                "request_timeout_ms",
                o.request_timeout_ms.unwrap_or(5000),
            )?),
            shutdown_grace: ms(positive(
                "shutdown_grace_ms",
                o.shutdown_grace_ms.unwrap_or(10_000),
            )?),
            leak_deadline: ms(positive(
                "leak_deadline_ms",
                o.leak_deadline_ms.unwrap_or(5000),
            )?),
            wal_segment_bytes: positive(
                "wal_segment_bytes",
                o.wal_segment_bytes.unwrap_or(64 << 20),
            )?,
            wal_checkpoint_bytes: positive(
                "wal_checkpoint_bytes",
                o.wal_checkpoint_bytes.unwrap_or(256 << 20),
            )?,
            worker_threads: o.worker_threads.unwrap_or(0),
            metrics_group_labels: o.metrics_group_labels.unwrap_or(true),
            ledger_accounting: o.ledger_accounting.unwrap_or(true),
            log_format: o.log_format.unwrap_or(LogFormat::Text),
            tracing,
        })
    }

    /// The lowest member id bootstraps fresh groups, so that exactly one node does.
    pub fn is_bootstrapper(&self) -> bool {
        self.peers.keys().next() == Some(&self.node_id)
    }

    pub fn raft_config(&self) -> Result<openraft::Config, ConfigError> {
        let election = self.election_timeout.as_millis() as u64;
        let config = openraft::Config {
            cluster_name: "raftnode".to_string(),
            election_timeout_min: election,
            election_timeout_max: election * 2,
            heartbeat_interval: self.heartbeat.as_millis() as u64,
            install_snapshot_timeout: 10_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_logs),
            max_in_snapshot_log_to_keep: self.snapshot_keep_logs,
            enable_pre_vote: Some(true),
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| invalid("election_timeout_ms", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_make_a_single_node_cluster() {
        let s = Settings::resolve(ServeOptions::default()).unwrap();
        assert_eq!(s.node_id, 1);
        assert_eq!(s.peers.get(&1).map(String::as_str), Some("127.0.0.1:7070"));
        assert_eq!(s.groups, vec![1]);
        assert!(s.is_bootstrapper());
        s.raft_config().unwrap();
    }

    #[test]
    fn peers_parse_and_reject() {
        let p = parse_peers("1=a:1, 2=b:2").unwrap();
        assert_eq!(p.len(), 2);
        for bad in ["1", "x=a:1", "1=a", "1=a:1,1=b:2", "0=a:1", "1=:5"] {
            assert!(parse_peers(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let o = ServeOptions {
            node_id: Some(3),
            peers: Some("1=a:1".into()),
            ..Default::default()
        };
        let e = Settings::resolve(o).unwrap_err().to_string();
        assert!(e.contains("`peers`"), "{e}");
        let o = ServeOptions {
            heartbeat_ms: Some(600),
            ..Default::default()
        };
        assert!(Settings::resolve(o)
            .unwrap_err()
            .to_string()
            .contains("heartbeat_ms"));
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
        assert_eq!(t.sampler.root, crate::otel::SamplerKind::Ratio(0.25));
        assert!(!t.sampler.parent_based);
    }
}
