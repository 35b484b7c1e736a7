//! The `/metrics` registry. Ledger and Raft figures are derived at scrape time from the live
//! owners and openraft's metrics watch, so a removed group's series vanish with the group: no
//! series outlives the thing it describes.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use openraft::async_runtime::WatchReceiver;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::context::NodeContext;
use crate::group::Group;
use crate::ledger::{Direction, OwnerKind};

/// Network figures observed where the calls happen (the Raft network adapter and the shared
/// server), registered once per node.
pub struct RpcMetrics {
    pub peer_rtt: HistogramVec,
    pub requests: IntCounterVec,
}

impl RpcMetrics {
    pub fn new() -> Result<RpcMetrics, prometheus::Error> {
        Ok(RpcMetrics {
            peer_rtt: HistogramVec::new(
                HistogramOpts::new(
                    "raftnode_peer_round_trip_time_seconds",
                    "Round trip of Raft RPCs to a peer, per peer node id.",
                )
                .buckets(vec![
                    0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                ]),
                &["peer"],
            )?,
            requests: IntCounterVec::new(
                Opts::new(
                    "raftnode_rpc_requests_total",
                    "gRPC requests served by the shared server, by service, method and status code.",
                ),
                &["service", "method", "code"],
            )?,
        })
    }

    /// Counts one served request with its outcome's gRPC code.
    pub fn served<T>(&self, service: &str, method: &str, r: &Result<T, tonic::Status>) {
        let code = match r {
            Ok(_) => "OK".to_string(),
            Err(s) => format!("{:?}", s.code()),
        };
        self.requests
            .with_label_values(&[service, method, &code])
            .inc();
    }
}

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new(ctx: &Arc<NodeContext>) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        registry.register(Box::new(ctx.deps.storage.fsync_histogram().clone()))?;
        registry.register(Box::new(ctx.deps.rpc_metrics.peer_rtt.clone()))?;
        registry.register(Box::new(ctx.deps.rpc_metrics.requests.clone()))?;
        registry.register(Box::new(crate::otel::STATS.dropped.clone()))?;
        registry.register(Box::new(crate::otel::STATS.exported.clone()))?;
        registry.register(Box::new(NodeCollector::new(
            Arc::downgrade(ctx),
            ctx.settings.metrics_group_labels,
        )?))?;
        Ok(Metrics { registry })
    }

    pub fn render(&self) -> Result<String, String> {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .map_err(|e| e.to_string())?;
        String::from_utf8(buf).map_err(|e| e.to_string())
    }
}

/// Builds the ledger and Raft families from the node's current state at each scrape.
struct NodeCollector {
    ctx: Weak<NodeContext>,
    descs: Vec<Desc>,
    runtime: Mutex<RuntimeSampler>,
}

/// tokio-metrics reports the runtime per interval; cumulative counters are summed here.
struct RuntimeSampler {
    intervals: Option<Box<dyn Iterator<Item = tokio_metrics::RuntimeMetrics> + Send>>,
    parks: u64,
    busy_seconds: f64,
    last: Option<tokio_metrics::RuntimeMetrics>,
}

impl RuntimeSampler {
    fn new() -> Self {
        let intervals = tokio::runtime::Handle::try_current().ok().map(|h| {
            Box::new(tokio_metrics::RuntimeMonitor::new(&h).intervals())
                as Box<dyn Iterator<Item = tokio_metrics::RuntimeMetrics> + Send>
        });
        RuntimeSampler {
            intervals,
            parks: 0,
            busy_seconds: 0.0,
            last: None,
        }
    }

    fn sample(&mut self) {
        if let Some(m) = self.intervals.as_mut().and_then(|i| i.next()) {
            self.parks += m.total_park_count;
            self.busy_seconds += m.total_busy_duration.as_secs_f64();
            self.last = Some(m);
        }
    }
}

struct Families {
    tasks: IntGaugeVec,
    threads: IntGaugeVec,
    connections: IntGaugeVec,
    starts: IntCounterVec,
    stops: IntCounterVec,
    leaked_tasks: IntCounterVec,
    leaked_threads: IntCounterVec,
    leaked_connections: IntCounterVec,
    unowned: IntGaugeVec,
    groups: IntGaugeVec,
    threads_by_name: IntGaugeVec,
    has_leader: IntGaugeVec,
    is_leader: IntGaugeVec,
    term: IntGaugeVec,
    commit: IntGaugeVec,
    applied: IntGaugeVec,
    leader_changes: IntCounterVec,
    proposals_committed: IntCounterVec,
    proposals_failed: IntCounterVec,
    proposals_pending: IntGaugeVec,
    group_polls: IntCounterVec,
    group_poll_seconds: CounterVec,
    group_scheduled_seconds: CounterVec,
    group_slow_polls: IntCounterVec,
    rt_workers: IntGaugeVec,
    rt_alive_tasks: IntGaugeVec,
    rt_global_queue: IntGaugeVec,
    rt_busy_ratio: GaugeVec,
    rt_parks: IntCounterVec,
    rt_busy_seconds: CounterVec,
    build_info: IntGaugeVec,
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> Result<IntGaugeVec, prometheus::Error> {
    IntGaugeVec::new(Opts::new(name, help), labels)
}

fn counter(name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec, prometheus::Error> {
    IntCounterVec::new(Opts::new(name, help), labels)
}

impl Families {
    fn new(group_labels: bool) -> Result<Families, prometheus::Error> {
        let g: &[&str] = if group_labels { &["group"] } else { &[] };
        let owner = &["owner_kind", "owner"];
        let kind = &["owner_kind"];
        Ok(Families {
            tasks: gauge("raftnode_owner_tasks", "Live tokio tasks per owner.", owner)?,
            threads: gauge(
                "raftnode_owner_threads",
                "Live OS threads per owner.",
                owner,
            )?,
            connections: gauge(
                "raftnode_owner_connections",
                "Live connections per owner and direction.",
                &["owner_kind", "owner", "direction"],
            )?,
            starts: counter(
                "raftnode_owner_starts_total",
                "Owners started, per kind.",
                kind,
            )?,
            stops: counter(
                "raftnode_owner_stops_total",
                "Owners stopped, per kind.",
                kind,
            )?,
            leaked_tasks: counter(
                "raftnode_leaked_tasks_total",
                "Tasks still alive when their owner's stop deadline passed.",
                kind,
            )?,
            leaked_threads: counter(
                "raftnode_leaked_threads_total",
                "Threads still alive when their owner's stop deadline passed.",
                kind,
            )?,
            leaked_connections: counter(
                "raftnode_leaked_connections_total",
                "Connections still open when their owner's stop deadline passed.",
                kind,
            )?,
            unowned: gauge(
                "raftnode_unowned_tasks",
                "tokio's alive tasks minus every owned task: libraries spawning behind our back.",
                &[],
            )?,
            groups: gauge("raftnode_groups", "Raft groups running on this node.", &[])?,
            threads_by_name: gauge(
                "raftnode_threads_by_name",
                "OS threads of this process by name prefix, from /proc/self/task.",
                &["prefix"],
            )?,
            has_leader: gauge(
                "raftnode_raft_has_leader",
                "1 if the group knows a leader (without group labels: groups that do).",
                g,
            )?,
            is_leader: gauge(
                "raftnode_raft_is_leader",
                "1 if this node leads the group (without group labels: groups led).",
                g,
            )?,
            term: gauge(
                "raftnode_raft_term",
                "Current Raft term of the group (without group labels: the highest).",
                g,
            )?,
            commit: gauge(
                "raftnode_raft_commit_index",
                "Committed log index of the group (without group labels: the sum).",
                g,
            )?,
            applied: gauge(
                "raftnode_raft_applied_index",
                "Applied log index of the group (without group labels: the sum).",
                g,
            )?,
            leader_changes: counter(
                "raftnode_raft_leader_changes_seen_total",
                "Leader changes this node has seen in the group.",
                g,
            )?,
            proposals_committed: counter(
                "raftnode_raft_proposals_committed_total",
                "Client proposals committed and applied through this node as leader.",
                g,
            )?,
            proposals_failed: counter(
                "raftnode_raft_proposals_failed_total",
                "Client proposals this node proposed that did not commit.",
                g,
            )?,
            proposals_pending: gauge(
                "raftnode_raft_proposals_pending",
                "Client proposals submitted and not yet answered.",
                g,
            )?,
            group_polls: counter(
                "raftnode_runtime_group_polls_total",
                "Polls of the group's tasks (tokio-metrics TaskMonitor).",
                g,
            )?,
            group_poll_seconds: CounterVec::new(
                Opts::new(
                    "raftnode_runtime_group_poll_seconds_total",
                    "Time spent polling the group's tasks.",
                ),
                g,
            )?,
            group_scheduled_seconds: CounterVec::new(
                Opts::new(
                    "raftnode_runtime_group_scheduled_seconds_total",
                    "Time the group's tasks waited to be polled after waking.",
                ),
                g,
            )?,
            group_slow_polls: counter(
                "raftnode_runtime_group_slow_polls_total",
                "Polls of the group's tasks that exceeded the slow-poll threshold.",
                g,
            )?,
            rt_workers: gauge("raftnode_runtime_workers", "tokio worker threads.", &[])?,
            rt_alive_tasks: gauge("raftnode_runtime_alive_tasks", "tokio tasks alive.", &[])?,
            rt_global_queue: gauge(
                "raftnode_runtime_global_queue_depth",
                "Tasks waiting in tokio's global queue.",
                &[],
            )?,
            rt_busy_ratio: GaugeVec::new(
                Opts::new(
                    "raftnode_runtime_busy_ratio",
                    "Share of worker time spent busy since the previous scrape.",
                ),
                &[],
            )?,
            rt_parks: counter(
                "raftnode_runtime_parks_total",
                "Times tokio workers parked.",
                &[],
            )?,
            rt_busy_seconds: CounterVec::new(
                Opts::new(
                    "raftnode_runtime_busy_seconds_total",
                    "Time tokio workers spent busy.",
                ),
                &[],
            )?,
            build_info: gauge(
                "raftnode_build_info",
                "Constant 1, labelled with the build's version and revision.",
                &["version", "revision"],
            )?,
        })
    }

    fn collectors(&self) -> Vec<&dyn Collector> {
        vec![
            &self.tasks,
            &self.threads,
            &self.connections,
            &self.starts,
            &self.stops,
            &self.leaked_tasks,
            &self.leaked_threads,
            &self.leaked_connections,
            &self.unowned,
            &self.groups,
            &self.threads_by_name,
            &self.has_leader,
            &self.is_leader,
            &self.term,
            &self.commit,
            &self.applied,
            &self.leader_changes,
            &self.proposals_committed,
            &self.proposals_failed,
            &self.proposals_pending,
            &self.group_polls,
            &self.group_poll_seconds,
            &self.group_scheduled_seconds,
            &self.group_slow_polls,
            &self.rt_workers,
            &self.rt_alive_tasks,
            &self.rt_global_queue,
            &self.rt_busy_ratio,
            &self.rt_parks,
            &self.rt_busy_seconds,
            &self.build_info,
        ]
    }
}

impl NodeCollector {
    fn new(ctx: Weak<NodeContext>, group_labels: bool) -> Result<NodeCollector, prometheus::Error> {
        let f = Families::new(group_labels)?;
        let descs = f
            .collectors()
            .iter()
            .flat_map(|c| c.desc().into_iter().cloned())
            .collect();
        Ok(NodeCollector {
            ctx,
            descs,
            runtime: Mutex::new(RuntimeSampler::new()),
        })
    }

    fn fill(&self, ctx: &NodeContext) -> Result<Families, prometheus::Error> {
        let per_group = ctx.settings.metrics_group_labels;
        let f = Families::new(per_group)?;
        let mut owners = ctx.ledger.owners();
        if !per_group {
            // Thousands of group owners would be thousands of series: fold them into one.
            let mut all = crate::ledger::Counts::default();
            owners.retain(|(kind, _, c)| {
                if *kind != OwnerKind::Group {
                    return true;
                }
                all.tasks += c.tasks;
                all.threads += c.threads;
                all.inbound += c.inbound;
                all.outbound += c.outbound;
                false
            });
            owners.push((OwnerKind::Group, "all".to_string(), all));
        }
        for (kind, id, c) in owners {
            let k = kind.as_str();
            f.tasks.with_label_values(&[k, &id]).set(c.tasks);
            f.threads.with_label_values(&[k, &id]).set(c.threads);
            for (dir, n) in [
                (Direction::Inbound, c.inbound),
                (Direction::Outbound, c.outbound),
            ] {
                let d = if dir == Direction::Inbound {
                    "inbound"
                } else {
                    "outbound"
                };
                f.connections.with_label_values(&[k, &id, d]).set(n);
            }
        }
        for kind in OwnerKind::ALL {
            let t = ctx.ledger.totals(kind);
            let k = &[kind.as_str()];
            f.starts.with_label_values(k).inc_by(t.starts);
            f.stops.with_label_values(k).inc_by(t.stops);
            f.leaked_tasks.with_label_values(k).inc_by(t.leaked_tasks);
            f.leaked_threads
                .with_label_values(k)
                .inc_by(t.leaked_threads);
            f.leaked_connections
                .with_label_values(k)
                .inc_by(t.leaked_connections);
        }
        let alive = tokio::runtime::Handle::try_current()
            .map(|h| h.metrics().num_alive_tasks() as i64)
            .unwrap_or(0);
        f.unowned
            .with_label_values::<&str>(&[])
            .set(alive - ctx.ledger.owned_tasks());
        f.groups
            .with_label_values::<&str>(&[])
            .set(ctx.registry.len() as i64);
        for (prefix, n) in crate::threads::by_prefix() {
            f.threads_by_name.with_label_values(&[&prefix]).set(n);
        }
        let mut agg = GroupFigures::default();
        for g in ctx.registry.all() {
            let fig = GroupFigures::of(&g);
            if per_group {
                let id = g.id.to_string();
                fig.set(&f, &[id.as_str()]);
            } else {
                agg.add(&fig);
            }
        }
        if !per_group {
            agg.set(&f, &[]);
        }
        {
            let mut rt = self.runtime.lock().unwrap_or_else(|e| e.into_inner());
            rt.sample();
            if let Some(m) = &rt.last {
                f.rt_workers
                    .with_label_values::<&str>(&[])
                    .set(m.workers_count as i64);
                f.rt_alive_tasks
                    .with_label_values::<&str>(&[])
                    .set(m.live_tasks_count as i64);
                f.rt_global_queue
                    .with_label_values::<&str>(&[])
                    .set(m.global_queue_depth as i64);
                let capacity = m.elapsed.as_secs_f64() * m.workers_count.max(1) as f64;
                let ratio = if capacity > 0.0 {
                    m.total_busy_duration.as_secs_f64() / capacity
                } else {
                    0.0
                };
                f.rt_busy_ratio.with_label_values::<&str>(&[]).set(ratio);
            }
            f.rt_parks.with_label_values::<&str>(&[]).inc_by(rt.parks);
            f.rt_busy_seconds
                .with_label_values::<&str>(&[])
                .inc_by(rt.busy_seconds);
        }
        f.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), crate::REVISION])
            .set(1);
        Ok(f)
    }
}

impl Collector for NodeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(ctx) = self.ctx.upgrade() else {
            return Vec::new();
        };
        match self.fill(&ctx) {
            Ok(f) => f.collectors().iter().flat_map(|c| c.collect()).collect(),
            Err(e) => {
                tracing::error!(error = %e, "metrics collection failed");
                Vec::new()
            }
        }
    }
}

/// One group's figures, or the aggregate of many when per-group labels are off.
#[derive(Default)]
struct GroupFigures {
    has_leader: i64,
    is_leader: i64,
    term: i64,
    commit: i64,
    applied: i64,
    leader_changes: u64,
    committed: u64,
    failed: u64,
    pending: i64,
    polls: u64,
    poll_seconds: f64,
    scheduled_seconds: f64,
    slow_polls: u64,
}

impl GroupFigures {
    fn of(g: &Group) -> GroupFigures {
        let m = g.raft.metrics().borrow_watched().clone();
        let s = &g.stats;
        let t = g.owner().task_monitor().map(|m| m.cumulative());
        GroupFigures {
            has_leader: m.current_leader.is_some() as i64,
            is_leader: (m.current_leader == Some(m.id)) as i64,
            term: m.current_term as i64,
            commit: m.local_committed.map(|x| x.index as i64).unwrap_or(0),
            applied: m.last_applied.map(|x| x.index as i64).unwrap_or(0),
            leader_changes: s.leader_changes.load(Ordering::Relaxed),
            committed: s.proposals_committed.load(Ordering::Relaxed),
            failed: s.proposals_failed.load(Ordering::Relaxed),
            pending: s.proposals_pending.load(Ordering::Relaxed),
            polls: t.as_ref().map(|t| t.total_poll_count).unwrap_or(0),
            poll_seconds: t
                .as_ref()
                .map(|t| t.total_poll_duration.as_secs_f64())
                .unwrap_or(0.0),
            scheduled_seconds: t
                .as_ref()
                .map(|t| t.total_scheduled_duration.as_secs_f64())
                .unwrap_or(0.0),
            slow_polls: t.as_ref().map(|t| t.total_slow_poll_count).unwrap_or(0),
        }
    }

    fn add(&mut self, o: &GroupFigures) {
        self.has_leader += o.has_leader;
        self.is_leader += o.is_leader;
        self.term = self.term.max(o.term);
        self.commit += o.commit;
        self.applied += o.applied;
        self.leader_changes += o.leader_changes;
        self.committed += o.committed;
        self.failed += o.failed;
        self.pending += o.pending;
        self.polls += o.polls;
        self.poll_seconds += o.poll_seconds;
        self.scheduled_seconds += o.scheduled_seconds;
        self.slow_polls += o.slow_polls;
    }

    fn set(&self, f: &Families, l: &[&str]) {
        f.has_leader.with_label_values(l).set(self.has_leader);
        f.is_leader.with_label_values(l).set(self.is_leader);
        f.term.with_label_values(l).set(self.term);
        f.commit.with_label_values(l).set(self.commit);
        f.applied.with_label_values(l).set(self.applied);
        f.leader_changes
            .with_label_values(l)
            .inc_by(self.leader_changes);
        f.proposals_committed
            .with_label_values(l)
            .inc_by(self.committed);
        f.proposals_failed.with_label_values(l).inc_by(self.failed);
        f.proposals_pending.with_label_values(l).set(self.pending);
        f.group_polls.with_label_values(l).inc_by(self.polls);
        f.group_poll_seconds
            .with_label_values(l)
            .inc_by(self.poll_seconds);
        f.group_scheduled_seconds
            .with_label_values(l)
            .inc_by(self.scheduled_seconds);
        f.group_slow_polls
            .with_label_values(l)
            .inc_by(self.slow_polls);
    }
}
