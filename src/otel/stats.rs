//! The trace pipeline's figures: spans delivered and spans dropped, by reason. They belong to
//! the pipeline (never a process-wide static), and a program adds them to its node's
//! `/metrics` (`NodeBuilder::register_metrics`).

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, Opts};

/// What the pipeline delivered and what it dropped, exported on `/metrics` whether or not
/// tracing is on (as zeros when off), so that dashboards and alerts need no special case.
#[derive(Clone)]
pub struct TraceStats {
    dropped: IntCounterVec,
    pub(crate) dropped_queue_full: IntCounter,
    pub(crate) dropped_export_failed: IntCounter,
    pub(crate) exported: IntCounter,
}

impl TraceStats {
    /// The counters, at zero.
    pub fn new() -> Result<Arc<TraceStats>, prometheus::Error> {
        let dropped = IntCounterVec::new(
            Opts::new(
                "raftnode_trace_spans_dropped_total",
                "Finished spans that were not delivered to the collector, by reason: queue_full \
             (the export queue was full) or export_failed (the collector refused, failed or \
             timed out).",
            ),
            &["reason"],
        )?;
        let exported = IntCounter::new(
            "raftnode_trace_spans_exported_total",
            "Finished spans the collector accepted.",
        )?;
        Ok(Arc::new(TraceStats {
            dropped_queue_full: dropped.with_label_values(&["queue_full"]),
            dropped_export_failed: dropped.with_label_values(&["export_failed"]),
            dropped,
            exported,
        }))
    }

    /// The two families, for a node's `/metrics`.
    pub fn collector(self: &Arc<Self>) -> Box<dyn Collector> {
        Box::new(StatsCollector(self.clone()))
    }
}

impl std::fmt::Debug for TraceStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceStats")
            .field("exported", &self.exported.get())
            .finish_non_exhaustive()
    }
}

struct StatsCollector(Arc<TraceStats>);

impl Collector for StatsCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.0.dropped.desc();
        d.extend(self.0.exported.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut m = self.0.dropped.collect();
        m.extend(self.0.exported.collect());
        m
    }
}
