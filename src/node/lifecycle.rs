//! What starts, in what order, and how it stops.
//!
//! Start: data dir lock → storage → listeners bound → peers and groups' dependencies → the
//! shared RPC server → the HTTP server → the quiescer → on a new data dir, the peers' word on
//! whether it was wiped ([`meet`]) → groups → the leader balancer → ready.
//!
//! Stop (each phase within its budget from [`plan::node_stop`]): not ready (the balancer
//! stopped) → leadership handed
//! over → groups stopped → peer channels closed → the shared RPC server drained → storage
//! flushed and closed → HTTP server → the node's own verdict. Groups never close the shared
//! server; the node does, after the last group has stopped. Every owner gets a verdict.

use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use crate::group::GroupDeps;
use crate::http::HttpServer;
use crate::ledger::OwnerKind;
use crate::metrics::{Metrics, RpcMetrics};
use crate::node::builder::NodeBuilder;
use crate::node::cluster_id;
use crate::node::config::{NodeConfig, MAX_MESSAGE_BYTES};
use crate::node::data_dir;
use crate::node::error::NodeError;
use crate::node::handle::{Node, Running, Servers};
use crate::node::incarnation::Incarnations;
use crate::node::plan::{self, Phase};
use crate::node::shared::{CoreParts, NodeCore};
use crate::node::types::StopReport;
use crate::node::{api, balancer, collector, meet, quiescer, security};
use crate::rpc::batcher::BatchLimits;
use crate::rpc::cluster::ClusterIdentity;
use crate::rpc::network::NetworkDeps;
use crate::rpc::peers::{Batching, Peers};
use crate::state_machine::StateMachine;
use crate::storage::{Storage, StorageOptions};

async fn bind(
    given: Option<std::net::TcpListener>,
    addr: SocketAddr,
    what: &'static str,
) -> Result<tokio::net::TcpListener, NodeError> {
    let err = |source| NodeError::Bind { what, addr, source };
    match given {
        Some(l) => {
            l.set_nonblocking(true).map_err(err)?;
            tokio::net::TcpListener::from_std(l).map_err(err)
        }
        None => tokio::net::TcpListener::bind(addr).await.map_err(err),
    }
}

impl<S: StateMachine> NodeBuilder<S> {
    /// Starts the node: data dir, storage, the shared RPC server, the HTTP server, then the
    /// groups. On an error, whatever had started is stopped again before it is returned.
    ///
    /// On a new data dir it returns only once a majority of the cluster has answered whether
    /// it knew this node by another data dir (a wiped volume must not vote): a program that
    /// runs several members starts them together, not one after another.
    pub async fn start(self) -> Result<Node<S>, NodeError> {
        start(self).await
    }
}

impl<S: StateMachine> Node<S> {
    /// Stops the node in order: not ready, leadership handed over, groups, peer channels, the
    /// shared RPC server, storage, the HTTP server, and finally the node's own verdict, all
    /// within the shutdown grace. A second call returns at once.
    pub async fn stop(&self) -> Result<StopReport, NodeError> {
        stop(&self.core, &self.servers).await
    }
}

async fn start<S: StateMachine>(b: NodeBuilder<S>) -> Result<Node<S>, NodeError> {
    let (config, raft_config) = b.config.validate()?;
    let factory = b.factory.ok_or(NodeError::Config {
        field: "state_machine",
        reason: "the node has no state machine: call NodeBuilder::state_machine".into(),
    })?;
    let rpc_metrics = Arc::new(RpcMetrics::new()?);
    let auth = security::load_tokens(&config, rpc_metrics.auth_failures.clone())?;
    let tls = security::load_tls(&config)?;
    let cluster = ClusterIdentity::new(
        config.node_id,
        rpc_metrics.auth_failures.with_label_values(&["cluster_id"]),
    );
    let ledger = b.ledger.unwrap_or_default();
    if !ledger.accounting() {
        tracing::warn!("ledger accounting is off: leaks will not be detected");
    }
    let node = ledger.root(OwnerKind::Node, "main");

    // 1. The data dir, then storage.
    let lock = data_dir::lock(&config.data_dir)?;
    let fresh = data_dir::check_identity(&config.data_dir, config.node_id)?;
    let incarnations = Incarnations::open(&config.data_dir, fresh)?;
    let storage_owner = node.child(OwnerKind::Storage, "main");
    let (storage, report) = Storage::open(
        StorageOptions {
            dir: config.data_dir.clone(),
            segment_bytes: config.wal_segment_bytes,
            checkpoint_bytes: config.wal_checkpoint_bytes,
            cache_bytes: usize::try_from(config.log_cache_bytes).unwrap_or(usize::MAX),
            engine: crate::storage::engine::EngineOptions {
                cache_bytes: config.state_cache_bytes,
                ..Default::default()
            },
        },
        &storage_owner,
    )?;
    tracing::info!(
        segments = report.segments,
        records = report.records,
        bytes = report.bytes,
        largest_record = report.largest_record,
        torn_tail = report.torn_tail.is_some(),
        groups = storage.groups().len(),
        "storage recovered"
    );

    // 2. Both listeners, before anything serves, so that a bad address fails the start.
    let grpc = bind(b.grpc_listener, config.grpc_addr, "gRPC").await?;
    let http = match (b.http_listener, config.http_addr) {
        (l @ Some(_), Some(addr)) | (l @ None, Some(addr)) => Some(bind(l, addr, "HTTP").await?),
        _ => None,
    };
    let grpc_addr = grpc.local_addr().unwrap_or(config.grpc_addr);
    let http_addr = http.as_ref().and_then(|l| l.local_addr().ok());

    // 3. Peer channels and what every group shares.
    let deps = GroupDeps {
        node_id: config.node_id,
        raft_config: Arc::new(raft_config),
        storage: storage.clone(),
        network: NetworkDeps {
            node_id: config.node_id,
            peers: Peers::new(
                node.clone(),
                cluster.clone(),
                tls.clone(),
                config.election_timeout(),
                Batching {
                    limits: BatchLimits::for_message_bound(MAX_MESSAGE_BYTES),
                    max_message_bytes: MAX_MESSAGE_BYTES,
                    sizes: rpc_metrics.peer_batch.clone(),
                },
            ),
            max_message_bytes: MAX_MESSAGE_BYTES,
            max_append_bytes: usize::try_from(config.max_append_bytes).unwrap_or(usize::MAX),
            metrics: rpc_metrics.clone(),
        },
        wakes: Default::default(),
        watched: Arc::new(config.peers.keys().copied().collect()),
        quiescence: config.quiesce_round().is_some(),
        max_inflight_proposals: config.max_inflight_proposals_per_group,
    };
    let core = NodeCore::new(CoreParts {
        config: config.clone(),
        ledger,
        owner: node,
        deps,
        rpc_metrics,
        auth,
        tls: tls.clone(),
        fresh,
        incarnations,
        factory,
    });
    let servers = Arc::new(Servers {
        grpc_addr,
        http_addr,
        running: tokio::sync::Mutex::new(Some(Running {
            _lock: lock,
            storage,
            storage_owner,
            http: None,
            balancer: None,
            quiescer: None,
        })),
        report: std::sync::OnceLock::new(),
    });
    let handle = Node {
        core: core.clone(),
        servers: servers.clone(),
        _sm: PhantomData,
    };
    // From here on, a failure stops what has started before it is reported.
    let serve = async {
        // 4. The shared RPC server, with the program's services.
        if let Some(f) = b.grpc_services {
            core.set_app_routes(f(handle.clone()));
        }
        // A data dir that is not new knows its cluster (or, written by an earlier build,
        // derives it): peers are checked from the server's first call. A new one learns it
        // at the start-up check below.
        if !core.incarnations.pending() {
            cluster_id::settle(&core, None)?;
        }
        core.start_rpc_server(grpc).await?;
        // 5. Metrics, then the HTTP server.
        let metrics = Metrics::new()?;
        metrics.register(Box::new(
            servers_storage(&servers).await.fsync_histogram().clone(),
        ))?;
        metrics.register(Box::new(core.rpc_metrics.peer_rtt.clone()))?;
        metrics.register(Box::new(core.rpc_metrics.peer_batch.clone()))?;
        metrics.register(Box::new(core.rpc_metrics.requests.clone()))?;
        metrics.register(Box::new(core.rpc_metrics.refusals.clone()))?;
        metrics.register(Box::new(core.rpc_metrics.auth_failures.clone()))?;
        metrics.register(Box::new(core.rpc_metrics.security_reloads.clone()))?;
        metrics.register(Box::new(collector::NodeCollector::new(&core)?))?;
        for c in b.collectors {
            metrics.register(c)?;
        }
        if let Some(listener) = http {
            let app = b.http_routes.map(|f| f(handle.clone()));
            let router = api::router(core.clone(), metrics, app);
            let owner = core.owner.child(OwnerKind::Node, "http");
            let server = HttpServer::start(
                router,
                listener,
                owner,
                config.http_limits(),
                tls.clone(),
                core.rpc_metrics.refused("http_connections"),
            );
            if let Some(r) = servers.running.lock().await.as_mut() {
                r.http = Some(server);
            }
        }
        // 6. The quiescer, then the groups, then the balancer, then ready. The quiescer comes
        // first so that groups started early fall asleep while later ones start: with ten
        // thousand groups, their heartbeats would otherwise slow the start they wait for.
        if let Some(every) = config.quiesce_round() {
            let owner = core.owner.child(OwnerKind::Node, "quiescer");
            let weak = Arc::downgrade(&core);
            let stop = owner.token().clone();
            owner.spawn(
                "liveness-probe",
                quiescer::probe(weak.clone(), stop.clone()),
            );
            owner.spawn("quiesce-rounds", quiescer::rounds(weak, every, stop));
            if let Some(r) = servers.running.lock().await.as_mut() {
                r.quiescer = Some(owner);
            }
        }
        let stop = core.owner.token().clone();
        core.owner.spawn(
            "credentials-watch",
            security::watch(Arc::downgrade(&core), stop),
        );
        // A new data dir may be a wiped one: the peers say, before any group runs.
        meet::settle(&core).await?;
        let stop = core.owner.token().clone();
        core.owner
            .spawn("introduce", meet::introduce(Arc::downgrade(&core), stop));
        core.start_groups(&config.groups).await?;
        if let Some(every) = config.leader_balance() {
            let owner = core.owner.child(OwnerKind::Node, "balancer");
            owner.spawn(
                "leader-balancer",
                balancer::run(Arc::downgrade(&core), every, owner.token().clone()),
            );
            if let Some(r) = servers.running.lock().await.as_mut() {
                r.balancer = Some(owner);
            }
        }
        core.lifecycle.set_ready();
        tracing::info!(node = config.node_id, %grpc_addr, ?http_addr, "node ready");
        Ok::<(), NodeError>(())
    };
    match serve.await {
        Ok(()) => Ok(handle),
        Err(e) => {
            tracing::error!(error = %e, "node start failed; stopping what had started");
            let _ = stop(&core, &servers).await;
            Err(e)
        }
    }
}

async fn servers_storage(servers: &Servers) -> Storage {
    match servers.running.lock().await.as_ref() {
        Some(r) => r.storage.clone(),
        None => unreachable!("the node's storage is taken only by its stop"),
    }
}

/// One stop phase: logged at its start, traced as a child of `node.shutdown`, and bounded by
/// its budget (a phase that overruns is logged, and the stop goes on with the next).
async fn phase<F: Future<Output = ()>>(p: &plan::Plan, phase: Phase, fut: F) {
    let (step, name) = (phase.step(), phase.name());
    tracing::info!("shutdown: step {step}, {name}");
    let span = tracing::info_span!("shutdown.phase", step, phase = name);
    let budget = p.budget(phase);
    if tokio::time::timeout(budget, fut.instrument(span))
        .await
        .is_err()
    {
        tracing::warn!(
            step,
            phase = name,
            ?budget,
            "shutdown phase ran past its budget"
        );
    }
}

async fn stop(core: &Arc<NodeCore>, servers: &Servers) -> Result<StopReport, NodeError> {
    let Some(running) = servers.running.lock().await.take() else {
        // Stopped already (or stopping): the first stop's report, once there is one.
        return Ok(servers.report.get().copied().unwrap_or(StopReport {
            leaks: core.ledger.leaked(),
            took: Duration::ZERO,
            storage_failed: core.deps.storage.is_failed(),
        }));
    };
    let c = &core.config;
    let grace = c.shutdown_grace();
    let started = tokio::time::Instant::now();
    let span = tracing::info_span!("node.shutdown", node = c.node_id);
    let done = tokio::time::timeout(grace, shutdown(core, running, c).instrument(span)).await;
    let report = StopReport {
        leaks: core.ledger.leaked(),
        took: started.elapsed(),
        storage_failed: core.deps.storage.is_failed(),
    };
    let _ = servers.report.set(report);
    done.map_err(|_| NodeError::ShutdownTimeout(grace))?;
    tracing::info!(leaks = report.leaks, took = ?report.took, "node stopped");
    Ok(report)
}

async fn shutdown(core: &Arc<NodeCore>, running: Running, c: &NodeConfig) {
    let p = plan::node_stop(c.shutdown_grace(), c.leak_deadline());
    phase(&p, Phase::NotReady, async {
        core.lifecycle.set_draining();
        // Before the hand-over, so that it never moves leadership back to this node.
        // The quiescer too: a draining node's groups are about to change leaders, and the
        // hand-over wakes every group it leads.
        let background = [&running.balancer, &running.quiescer];
        let stops = background
            .into_iter()
            .flatten()
            .map(|o| o.stop(p.verdict(Phase::NotReady)));
        futures::future::join_all(stops).await;
    })
    .await;
    let groups = core.registry.all();
    phase(&p, Phase::HandOver, async {
        tracing::info!(
            groups = groups.len(),
            "handing over the groups this node leads"
        );
        crate::node::handover::hand_over_leadership(&groups, p.usable(Phase::HandOver)).await;
    })
    .await;
    phase(&p, Phase::StopGroups, async {
        let stops = groups.iter().map(|g| {
            core.registry.remove(g.id);
            g.stop(p.group_verdict())
        });
        futures::future::join_all(stops).await;
    })
    .await;
    drop(groups);
    let peers = &core.deps.network.peers;
    phase(
        &p,
        Phase::ClosePeers,
        peers.close(p.verdict(Phase::ClosePeers)),
    )
    .await;
    phase(&p, Phase::DrainRpc, async {
        core.stop_rpc_server(p.rpc_drain(), p.rpc_verdict()).await;
    })
    .await;
    phase(&p, Phase::FlushStorage, async {
        let until = tokio::time::Instant::now() + p.verdict(Phase::FlushStorage);
        if !running.storage.close(p.verdict(Phase::FlushStorage)).await {
            tracing::error!("WAL writer did not exit in time");
        }
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        running.storage_owner.stop(left).await;
    })
    .await;
    phase(&p, Phase::StopHttp, async {
        if let Some(http) = running.http {
            http.stop(p.http_drain(), p.http_verdict()).await;
        }
    })
    .await;
    phase(&p, Phase::NodeVerdict, async {
        // Also stops and judges any child owner that nobody stopped above.
        if let Some(leak) = core.owner.stop(p.verdict(Phase::NodeVerdict)).await {
            tracing::error!(remaining = ?leak.names, "node owner leaked resources at exit");
        }
    })
    .await;
}
