//! The node: what starts, in what order, and how it stops.
//!
//! Start: data dir lock → storage → RPC server listening → peers → groups → ready.
//! Stop: not ready → leadership handed over → groups stopped → peer channels closed → the
//! shared RPC server drained → storage flushed and closed → HTTP server last. Groups never
//! close the shared server; the node does, after the last group has stopped.

use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::Instrument;

use crate::config::Settings;
use crate::context::{GroupOpError, NodeContext};
use crate::group::GroupDeps;
use crate::http::{AppState, HttpServer};
use crate::ledger::{Ledger, OwnerKind};
use crate::metrics::Metrics;
use crate::otel::Tracing;
use crate::rpc::peers::Peers;
use crate::storage::{Storage, StorageError, StorageOptions};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("data dir {path}: {reason}")]
    DataDir { path: PathBuf, reason: String },
    #[error("data dir {path} is in use by another raftnode process (lock file {lock} is held)")]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("storage recovery failed: {0}")]
    Storage(#[from] StorageError),
    #[error("cannot listen on {what} address {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid Raft configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Group(#[from] GroupOpError),
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Tracing(#[from] crate::otel::ExporterError),
    #[error("graceful shutdown did not finish within {0:?}")]
    ShutdownTimeout(Duration),
}

/// Holds the data dir's lock for the life of the node; the OS releases it if the process dies,
/// so kill -9 never leaves a stale lock behind.
struct DirLock {
    _file: fs::File,
}

fn lock_data_dir(dir: &Path) -> Result<DirLock, NodeError> {
    let err = |reason: String| NodeError::DataDir {
        path: dir.to_path_buf(),
        reason,
    };
    fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    let lock = dir.join("LOCK");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(|e| err(format!("cannot open {}: {e}", lock.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock { _file: file }),
        Err(fs::TryLockError::WouldBlock) => Err(NodeError::Locked {
            path: dir.to_path_buf(),
            lock,
        }),
        Err(fs::TryLockError::Error(e)) => Err(err(format!("cannot lock {}: {e}", lock.display()))),
    }
}

/// Refuses a data dir written by another node id: replaying someone else's votes would break
/// Raft's safety. Returns whether the data dir is fresh (never used by any node).
fn check_identity(dir: &Path, node_id: u64) -> Result<bool, NodeError> {
    let path = dir.join("NODE_ID");
    let err = |reason: String| NodeError::DataDir {
        path: dir.to_path_buf(),
        reason,
    };
    match fs::read_to_string(&path) {
        Ok(s) => {
            let found: u64 = s
                .trim()
                .parse()
                .map_err(|_| err(format!("{} is not a node id: {s:?}", path.display())))?;
            if found != node_id {
                return Err(err(format!(
                    "it belongs to node {found}, but this is node {node_id}"
                )));
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let fresh = !dir.join("wal").exists();
            fs::write(&path, format!("{node_id}\n")).map_err(|e| err(e.to_string()))?;
            Ok(fresh)
        }
        Err(e) => Err(err(format!("cannot read {}: {e}", path.display()))),
    }
}

async fn bind(what: &'static str, addr: std::net::SocketAddr) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| NodeError::Bind { what, addr, source })
}

/// Runs a node until `stop` resolves, then shuts it down in order.
/// Also installs the process's `tracing` subscriber, since the trace exporter it feeds is one
/// of the node's owners.
pub async fn run(settings: Settings, stop: impl Future<Output = ()>) -> Result<(), NodeError> {
    crate::ledger::set_accounting(settings.ledger_accounting);
    let ledger = Ledger::new();
    let node = ledger.root(OwnerKind::Node, "main");
    let (tracing_pipeline, tracer) = match &settings.tracing {
        Some(t) => {
            let owner = node.child(OwnerKind::Telemetry, "otlp");
            let (pipeline, tracer) = Tracing::start(t, settings.node_id, owner)?;
            (Some(pipeline), Some(tracer))
        }
        None => (None, None),
    };
    crate::telemetry::init(settings.log_format, tracer);
    if let Some(t) = &tracing_pipeline {
        tracing::info!(endpoint = %t.endpoint, protocol = ?t.protocol, "exporting traces over OTLP");
    }
    if !settings.ledger_accounting {
        tracing::warn!("ledger accounting is off: leaks will not be detected");
    }
    let _lock = lock_data_dir(&settings.data_dir)?;
    let fresh = check_identity(&settings.data_dir, settings.node_id)?;

    let storage_owner = node.child(OwnerKind::Storage, "main");
    let (storage, report) = Storage::open(
        StorageOptions {
            dir: settings.data_dir.clone(),
            segment_bytes: settings.wal_segment_bytes,
            checkpoint_bytes: settings.wal_checkpoint_bytes,
        },
        &storage_owner,
    )?;
    tracing::info!(
        segments = report.segments,
        records = report.records,
        bytes = report.bytes,
        torn_tail = report.torn_tail.is_some(),
        groups = storage.groups().len(),
        "storage recovered"
    );

    let grpc_listener = bind("gRPC", settings.grpc_addr).await?;
    let http_listener = bind("HTTP", settings.http_addr).await?;
    let peers = Peers::new(node.clone(), settings.election_timeout);
    let deps = GroupDeps {
        node_id: settings.node_id,
        raft_config: Arc::new(settings.raft_config()?),
        storage: storage.clone(),
        peers: peers.clone(),
        max_message_bytes: crate::config::MAX_MESSAGE_BYTES,
        rpc_metrics: Arc::new(crate::metrics::RpcMetrics::new()?),
    };
    let ctx = NodeContext::new(settings.clone(), ledger.clone(), node.clone(), deps, fresh);
    let grpc_local = ctx.start_rpc_server(grpc_listener).await?;
    let metrics = Metrics::new(&ctx)?;
    let http = HttpServer::start(
        AppState {
            ctx: ctx.clone(),
            metrics,
        },
        http_listener,
        node.child(OwnerKind::Node, "http"),
    );

    let started = async {
        for g in &settings.groups {
            ctx.start_group(*g, false).await?;
        }
        Ok::<(), NodeError>(())
    };
    tokio::pin!(stop);
    let early_stop = tokio::select! {
        r = started => { r?; false }
        _ = &mut stop => true,
    };
    if !early_stop {
        ctx.ready.store(true, Ordering::Release);
        println!(
            "raftnode node {} ready: gRPC {} HTTP http://{} data {} groups {:?}",
            settings.node_id,
            grpc_local,
            settings.http_addr,
            settings.data_dir.display(),
            settings.groups
        );
        tracing::info!(node = settings.node_id, "node ready");
        stop.await;
    }

    let grace = settings.shutdown_grace;
    let started = tokio::time::Instant::now();
    let span = tracing::info_span!("node.shutdown", node = settings.node_id);
    tokio::time::timeout(
        grace,
        shutdown(&ctx, peers, storage, storage_owner, http).instrument(span),
    )
    .await
    .map_err(|_| NodeError::ShutdownTimeout(grace))?;
    if let Some(t) = tracing_pipeline {
        // Last, so that the shutdown's own spans are exported; bounded by what is left of the
        // grace period, and never more than two seconds, since a collector that is down must
        // not hold up the exit.
        let left = grace.saturating_sub(started.elapsed());
        t.shutdown(left.min(Duration::from_secs(2)), settings.leak_deadline)
            .await;
    }
    if let Some(leak) = node.stop(settings.leak_deadline).await {
        tracing::error!(remaining = ?leak.names, "node owner leaked resources at exit");
    }
    tracing::info!("node stopped");
    Ok(())
}

/// One shutdown phase: logged at its start, and traced as a child of `node.shutdown`.
async fn phase<F: Future>(step: u32, name: &'static str, fut: F) -> F::Output {
    tracing::info!("shutdown: step {step}, {name}");
    fut.instrument(tracing::info_span!("shutdown.phase", step, phase = name))
        .await
}

async fn shutdown(
    ctx: &Arc<NodeContext>,
    peers: Peers,
    storage: Storage,
    storage_owner: crate::ledger::Owner,
    http: HttpServer,
) {
    let s = &ctx.settings;
    phase(1, "not ready", async {
        ctx.draining.store(true, Ordering::Release);
    })
    .await;

    let groups = ctx.registry.all();
    phase(2, "handing over leadership", async {
        tracing::info!(
            groups = groups.len(),
            "handing over the groups this node leads"
        );
        crate::shutdown::hand_over_leadership(&groups, s.shutdown_grace / 3).await;
    })
    .await;

    phase(3, "stopping groups", async {
        let stops = groups.iter().map(|g| {
            ctx.registry.remove(g.id);
            g.stop(s.leak_deadline)
        });
        futures::future::join_all(stops).await;
    })
    .await;
    drop(groups);

    phase(4, "closing peer channels", peers.close(s.leak_deadline)).await;

    phase(
        5,
        "draining the shared RPC server",
        ctx.stop_rpc_server(s.shutdown_grace / 4),
    )
    .await;

    phase(6, "flushing storage", async {
        if !storage.close(s.leak_deadline).await {
            tracing::error!("WAL writer did not exit in time");
        }
        storage_owner.stop(s.leak_deadline).await;
    })
    .await;

    phase(
        7,
        "stopping the HTTP server",
        http.stop(Duration::from_secs(1)),
    )
    .await;
}
