//! Which peer nodes answer the liveness probe, and which of them serve (their groups all
//! started). The probe (in the quiescer) writes it; the quiesce rounds, the leader balancer and
//! `/metrics` read it. It stands in for the election timers of sleeping groups, so every reader
//! sees one consistent view.

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::ids::NodeId;

/// The peers that answer the probe.
#[derive(Default)]
pub(crate) struct Liveness {
    live: Mutex<BTreeSet<NodeId>>,
    serving: Mutex<BTreeSet<NodeId>>,
}

impl Liveness {
    /// The live peers now.
    pub(crate) fn get(&self) -> BTreeSet<NodeId> {
        self.with(Clone::clone)
    }

    /// How many peers are live.
    pub(crate) fn len(&self) -> usize {
        self.with(BTreeSet::len)
    }

    /// The live peers that serve: leadership may move to them.
    pub(crate) fn serving(&self) -> BTreeSet<NodeId> {
        self.serving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set(&self, live: BTreeSet<NodeId>, serving: BTreeSet<NodeId>) {
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = live;
        *self.serving.lock().unwrap_or_else(|e| e.into_inner()) = serving;
    }

    /// Runs `f` on the live peers while holding them: the probe can neither mark a peer live
    /// nor start waking the groups led with it until `f` returns.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&BTreeSet<NodeId>) -> R) -> R {
        f(&self.live.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
