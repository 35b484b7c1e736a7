//! tokio's runtime figures, from tokio-metrics' `RuntimeMonitor`. It reports per interval (one
//! interval per scrape); the cumulative counters that Prometheus wants are summed here.

use crate::metrics::families::Families;

/// Samples the runtime at each scrape.
pub struct RuntimeSampler {
    intervals: Option<Box<dyn Iterator<Item = tokio_metrics::RuntimeMetrics> + Send>>,
    parks: u64,
    busy_seconds: f64,
    last: Option<tokio_metrics::RuntimeMetrics>,
}

impl Default for RuntimeSampler {
    fn default() -> Self {
        Self::new()
    }
}

impl RuntimeSampler {
    /// A sampler of the runtime current where it is created (none outside a runtime).
    pub fn new() -> Self {
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

    /// Takes one interval and writes the runtime families.
    pub fn sample_into(&mut self, f: &Families) {
        if let Some(m) = self.intervals.as_mut().and_then(|i| i.next()) {
            self.parks += m.total_park_count;
            self.busy_seconds += m.total_busy_duration.as_secs_f64();
            self.last = Some(m);
        }
        let none: &[&str] = &[];
        if let Some(m) = &self.last {
            f.rt_workers
                .with_label_values(none)
                .set(m.workers_count as i64);
            f.rt_alive_tasks
                .with_label_values(none)
                .set(m.live_tasks_count as i64);
            f.rt_global_queue
                .with_label_values(none)
                .set(m.global_queue_depth as i64);
            let capacity = m.elapsed.as_secs_f64() * m.workers_count.max(1) as f64;
            let ratio = if capacity > 0.0 {
                m.total_busy_duration.as_secs_f64() / capacity
            } else {
                0.0
            };
            f.rt_busy_ratio.with_label_values(none).set(ratio);
        }
        f.rt_parks.with_label_values(none).inc_by(self.parks);
        f.rt_busy_seconds
            .with_label_values(none)
            .inc_by(self.busy_seconds);
    }
}
