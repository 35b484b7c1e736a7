//! The node's collector: at each scrape, it reads the ledger, the groups' openraft metrics and
//! the runtime, and builds the families of [`crate::metrics::families`] from them. Per-group
//! series exist exactly as long as their group does.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use openraft::async_runtime::WatchReceiver;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;

use crate::group::Group;
use crate::ledger::{Direction, OwnerKind};
use crate::metrics::families::Families;
use crate::metrics::fold::{self, GroupFigures};
use crate::metrics::runtime::RuntimeSampler;
use crate::node::shared::NodeCore;

/// Builds the ledger, Raft and runtime families from the node's state at each scrape.
pub(crate) struct NodeCollector {
    core: Weak<NodeCore>,
    descs: Vec<Desc>,
    runtime: Mutex<RuntimeSampler>,
    /// Aggregate mode: keeps the node-wide counters monotonic as groups come and go.
    totals: Mutex<fold::MonotonicFold>,
}

impl NodeCollector {
    pub fn new(core: &Arc<NodeCore>) -> Result<NodeCollector, prometheus::Error> {
        let f = Families::new(core.config.metrics_group_labels)?;
        let descs = f
            .collectors()
            .iter()
            .flat_map(|c| c.desc().into_iter().cloned())
            .collect();
        Ok(NodeCollector {
            core: Arc::downgrade(core),
            descs,
            runtime: Mutex::new(RuntimeSampler::new()),
            totals: Mutex::new(fold::MonotonicFold::default()),
        })
    }

    fn fill(&self, core: &NodeCore) -> Result<Families, prometheus::Error> {
        let per_group = core.config.metrics_group_labels;
        let f = Families::new(per_group)?;
        let mut owners = core.ledger.owners();
        if !per_group {
            // Thousands of group owners would be thousands of series: fold them into one.
            owners = fold::fold_group_owners(owners);
        }
        for (kind, id, c) in owners {
            let k = kind.as_str();
            f.tasks.with_label_values(&[k, &id]).set(c.tasks);
            f.threads.with_label_values(&[k, &id]).set(c.threads);
            for (dir, n) in [
                (Direction::Inbound, c.inbound),
                (Direction::Outbound, c.outbound),
            ] {
                f.connections
                    .with_label_values(&[k, &id, dir.as_str()])
                    .set(n);
            }
        }
        for kind in OwnerKind::ALL {
            let t = core.ledger.totals(kind);
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
        let none: &[&str] = &[];
        let alive = tokio::runtime::Handle::try_current()
            .map(|h| h.metrics().num_alive_tasks() as i64)
            .unwrap_or(0);
        f.unowned
            .with_label_values(none)
            .set(alive - core.ledger.owned_tasks());
        f.groups
            .with_label_values(none)
            .set(core.registry.len() as i64);
        for (prefix, n) in crate::threads::by_prefix() {
            f.threads_by_name.with_label_values(&[&prefix]).set(n);
        }
        let groups = core.registry.all();
        f.leaders
            .with_label_values(none)
            .set(groups.iter().filter(|g| g.is_leader()).count() as i64);
        f.leader_moves
            .with_label_values(none)
            .inc_by(core.leader_moves.load(Ordering::Relaxed));
        f.quiesced
            .with_label_values(none)
            .set(groups.iter().filter(|g| g.is_quiesced()).count() as i64);
        f.wakes
            .with_label_values(none)
            .inc_by(core.deps.wakes.load(Ordering::Relaxed));
        f.storage_failed
            .with_label_values(none)
            .set(i64::from(core.deps.storage.is_failed()));
        f.log_cache
            .with_label_values(none)
            .set(core.deps.storage.cached_bytes() as i64);
        f.state_disk
            .with_label_values(none)
            .set(core.deps.storage.engine().disk_bytes() as i64);
        f.peers_live
            .with_label_values(none)
            .set(core.liveness.len() as i64);
        if per_group {
            for g in &groups {
                set_group(&f, &[&g.id.to_string()], &figures(g));
            }
        } else {
            set_group(
                &f,
                none,
                &self
                    .totals
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .fold(groups.iter().map(|g| (g.id, figures(g)))),
            );
        }
        self.runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sample_into(&f);
        f.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), crate::metrics::REVISION])
            .set(1);
        Ok(f)
    }
}

impl Collector for NodeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(core) = self.core.upgrade() else {
            return Vec::new();
        };
        match self.fill(&core) {
            Ok(f) => f.collectors().iter().flat_map(|c| c.collect()).collect(),
            Err(e) => {
                tracing::error!(error = %e, "metrics collection failed");
                Vec::new()
            }
        }
    }
}

/// One group's figures, from openraft's metrics, its counters and its task monitor.
fn figures(g: &Group) -> GroupFigures {
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

fn set_group(f: &Families, l: &[&str], g: &GroupFigures) {
    f.has_leader.with_label_values(l).set(g.has_leader);
    f.is_leader.with_label_values(l).set(g.is_leader);
    f.term.with_label_values(l).set(g.term);
    f.commit.with_label_values(l).set(g.commit);
    f.applied.with_label_values(l).set(g.applied);
    f.leader_changes
        .with_label_values(l)
        .inc_by(g.leader_changes);
    f.proposals_committed
        .with_label_values(l)
        .inc_by(g.committed);
    f.proposals_failed.with_label_values(l).inc_by(g.failed);
    f.proposals_pending.with_label_values(l).set(g.pending);
    f.group_polls.with_label_values(l).inc_by(g.polls);
    f.group_poll_seconds
        .with_label_values(l)
        .inc_by(g.poll_seconds);
    f.group_scheduled_seconds
        .with_label_values(l)
        .inc_by(g.scheduled_seconds);
    f.group_slow_polls.with_label_values(l).inc_by(g.slow_polls);
}
