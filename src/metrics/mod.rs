//! Metrics: the node's Prometheus registry, every metric family declared once, and the plain
//! functions that fold per-group figures into node-wide ones when per-group labels are off.
//!
//! Ledger and Raft figures are derived at scrape time from the live owners and openraft's
//! metrics watch (by the node's collector), so that a removed group's series vanish with the
//! group: no series outlives the thing it describes. Figures observed where things happen (RPC
//! round trips, fsyncs) are registered once per node, where the resource is created.

pub mod families;
pub mod fold;
pub mod rpc;
pub mod runtime;

pub use rpc::RpcMetrics;

use prometheus::core::Collector;
use prometheus::{Encoder, Registry, TextEncoder};

/// The source revision this binary was built from, when the build knew it (the
/// `raftnode_build_info` metric's `revision` label).
pub const REVISION: &str = match option_env!("RAFTNODE_REVISION") {
    Some(r) => r,
    None => "unknown",
};

/// The registry `/metrics` renders.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// An empty registry with the process collector (threads, fds, RSS) registered.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics { registry })
    }

    /// Adds `collector`'s families to every scrape.
    pub fn register(&self, collector: Box<dyn Collector>) -> Result<(), prometheus::Error> {
        self.registry.register(collector)
    }

    /// Every family in the Prometheus text format.
    pub fn render(&self) -> Result<String, String> {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .map_err(|e| e.to_string())?;
        String::from_utf8(buf).map_err(|e| e.to_string())
    }
}
