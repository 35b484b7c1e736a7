//! A bound on proposals in flight, for one group or a whole node. A proposal past the bound
//! is refused at once with a hint to retry, rather than queued: a queue without end turns a
//! burst into memory growth and into answers that come after the client stopped waiting.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// How many proposals are in flight, and how many may be.
#[derive(Debug)]
pub struct Inflight {
    open: AtomicUsize,
    limit: usize,
}

/// One proposal's place under a bound, freed when dropped.
#[derive(Debug)]
pub struct InflightGuard {
    of: Arc<Inflight>,
}

impl Inflight {
    /// A bound of `limit` proposals.
    pub fn new(limit: usize) -> Arc<Inflight> {
        Arc::new(Inflight {
            open: AtomicUsize::new(0),
            limit,
        })
    }

    /// A place for one more proposal, unless `limit` are in flight.
    pub fn enter(self: &Arc<Self>) -> Option<InflightGuard> {
        let entered = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .is_ok();
        entered.then(|| InflightGuard { of: self.clone() })
    }

    /// The bound.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Proposals in flight now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.of.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_refuses_past_its_limit_and_frees_on_drop() {
        let b = Inflight::new(2);
        let one = b.enter().unwrap();
        let _two = b.enter().unwrap();
        assert!(b.enter().is_none());
        assert_eq!(b.open(), 2);
        drop(one);
        assert!(b.enter().is_some());
        assert_eq!(b.open(), 1);
    }
}
