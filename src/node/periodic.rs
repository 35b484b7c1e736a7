//! The loop of a node-owned background task (the leader balancer, the quiescer): a tick every
//! period, and an end when the owner is stopped, the node is gone, or it drains. One place, so
//! that every such task stops the same way and none outlives its node.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::node::shared::NodeCore;

/// Ticks for a node-owned task.
pub(crate) struct Periodic {
    tick: tokio::time::Interval,
    core: Weak<NodeCore>,
    stop: CancellationToken,
}

impl Periodic {
    /// Ticks every `every`, the first one a period from now; a tick that comes late delays the
    /// next rather than bunching them.
    pub(crate) fn new(core: Weak<NodeCore>, every: Duration, stop: CancellationToken) -> Periodic {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Periodic { tick, core, stop }
    }

    /// Waits for the next tick; `None` once the task should end.
    pub(crate) async fn next(&mut self) -> Option<Arc<NodeCore>> {
        tokio::select! {
            _ = self.stop.cancelled() => return None,
            _ = self.tick.tick() => {}
        }
        let core = self.core.upgrade()?;
        (!core.lifecycle.is_draining()).then_some(core)
    }
}
