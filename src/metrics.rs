//! The `/metrics` registry. Ledger and Raft figures are derived at scrape time from the live
//! owners and openraft's metrics watch, so a removed group's series vanish with the group: no
//! series outlives the thing it describes.

use openraft::async_runtime::WatchReceiver;
use std::sync::{Arc, Weak};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::context::NodeContext;
use crate::ledger::{Direction, OwnerKind};

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
        registry.register(Box::new(NodeCollector::new(Arc::downgrade(ctx))?))?;
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
    build_info: IntGaugeVec,
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> Result<IntGaugeVec, prometheus::Error> {
    IntGaugeVec::new(Opts::new(name, help), labels)
}

fn counter(name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec, prometheus::Error> {
    IntCounterVec::new(Opts::new(name, help), labels)
}

impl Families {
    fn new() -> Result<Families, prometheus::Error> {
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
                "1 if the group knows a leader.",
                &["group"],
            )?,
            is_leader: gauge(
                "raftnode_raft_is_leader",
                "1 if this node leads the group.",
                &["group"],
            )?,
            term: gauge(
                "raftnode_raft_term",
                "Current Raft term of the group.",
                &["group"],
            )?,
            commit: gauge(
                "raftnode_raft_commit_index",
                "Committed log index of the group.",
                &["group"],
            )?,
            applied: gauge(
                "raftnode_raft_applied_index",
                "Applied log index of the group.",
                &["group"],
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
            &self.build_info,
        ]
    }
}

impl NodeCollector {
    fn new(ctx: Weak<NodeContext>) -> Result<NodeCollector, prometheus::Error> {
        let f = Families::new()?;
        let descs = f
            .collectors()
            .iter()
            .flat_map(|c| c.desc().into_iter().cloned())
            .collect();
        Ok(NodeCollector { ctx, descs })
    }

    fn fill(ctx: &NodeContext) -> Result<Families, prometheus::Error> {
        let f = Families::new()?;
        for (kind, id, c) in ctx.ledger.owners() {
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
        for g in ctx.registry.all() {
            let m = g.raft.metrics().borrow_watched().clone();
            let id = g.id.to_string();
            let l = &[id.as_str()];
            f.has_leader
                .with_label_values(l)
                .set(m.current_leader.is_some() as i64);
            f.is_leader
                .with_label_values(l)
                .set((m.current_leader == Some(m.id)) as i64);
            f.term.with_label_values(l).set(m.current_term as i64);
            f.commit
                .with_label_values(l)
                .set(m.local_committed.map(|x| x.index as i64).unwrap_or(0));
            f.applied
                .with_label_values(l)
                .set(m.last_applied.map(|x| x.index as i64).unwrap_or(0));
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
        match Self::fill(&ctx) {
            Ok(f) => f.collectors().iter().flat_map(|c| c.collect()).collect(),
            Err(e) => {
                tracing::error!(error = %e, "metrics collection failed");
                Vec::new()
            }
        }
    }
}
