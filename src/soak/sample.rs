//! One sample of a node's resources, read from its `/metrics`: what the soak tracks per cycle.

/// Resource figures of one node at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// Owned tasks plus unowned ones: everything alive on the runtime.
    pub tasks: i64,
    /// OS threads of the process.
    pub threads: i64,
    /// Connections held by every owner.
    pub connections: i64,
    /// Open file descriptors.
    pub fds: i64,
    /// Resident memory.
    pub rss_bytes: i64,
    /// Leak verdicts of every kind so far.
    pub leaks: i64,
    /// Groups this node leads. Not a resource, but what its task count follows: a leader runs
    /// replication tasks and heartbeat workers that a follower does not, so samples compare
    /// only at the same spread of leadership.
    pub leads: i64,
}

impl Sample {
    /// The figures of one `/metrics` scrape.
    pub fn parse(text: &str) -> Sample {
        let scrape = crate::harness::prom::Scrape::parse(text);
        let f = scrape.families();
        let get = |n: &str| f.get(n).copied().unwrap_or(0.0) as i64;
        Sample {
            tasks: get("raftnode_owner_tasks") + get("raftnode_unowned_tasks"),
            threads: get("process_threads"),
            connections: get("raftnode_owner_connections"),
            fds: get("process_open_fds"),
            rss_bytes: get("process_resident_memory_bytes"),
            leaks: get("raftnode_leaked_tasks_total")
                + get("raftnode_leaked_threads_total")
                + get("raftnode_leaked_connections_total"),
            leads: get("raftnode_groups_led"),
        }
    }
}

/// How far RSS may grow over a soak before it counts as growth. The allocator keeps freed
/// pages and openraft's buffers grow to their working size, so RSS is never exact; a leak of
/// a thread stack (8 MiB virtual, touched pages) or of per-cycle state still shows well above it.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    /// Growth allowed in bytes...
    pub rss_bytes: i64,
    /// ...or as a share of the baseline, if that is larger.
    pub rss_ratio: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            rss_bytes: 32 << 20,
            rss_ratio: 0.25,
        }
    }
}

/// The figures that grew from `baseline` to `last`: tasks, threads, connections and fds must
/// come back exactly; RSS within `tol`; any new leak verdict counts too.
pub fn growth(baseline: &Sample, last: &Sample, tol: Tolerance) -> Vec<String> {
    let mut out = Vec::new();
    let exact = [
        ("tasks", baseline.tasks, last.tasks),
        ("threads", baseline.threads, last.threads),
        ("connections", baseline.connections, last.connections),
        ("fds", baseline.fds, last.fds),
        ("leak verdicts", baseline.leaks, last.leaks),
    ];
    for (name, b, l) in exact {
        if l > b {
            out.push(format!("{name} grew from {b} to {l}"));
        }
    }
    let allowed = tol
        .rss_bytes
        .max((baseline.rss_bytes as f64 * tol.rss_ratio) as i64);
    if last.rss_bytes - baseline.rss_bytes > allowed {
        out.push(format!(
            "RSS grew from {} MiB to {} MiB (tolerance {} MiB)",
            baseline.rss_bytes >> 20,
            last.rss_bytes >> 20,
            allowed >> 20
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = "# TYPE raftnode_owner_tasks gauge
raftnode_owner_tasks{owner=\"1\",owner_kind=\"group\"} 11
raftnode_owner_tasks{owner=\"main\",owner_kind=\"rpc_server\"} 1
raftnode_unowned_tasks 9
raftnode_owner_connections{direction=\"inbound\",owner=\"main\",owner_kind=\"rpc_server\"} 2
process_threads 6
process_open_fds 17
process_resident_memory_bytes 5.1892224e+07
raftnode_leaked_tasks_total{owner_kind=\"group\"} 1
raftnode_groups_led 1
";

    #[test]
    fn parses_and_sums_families() {
        let s = Sample::parse(SCRAPE);
        assert_eq!(
            (s.tasks, s.connections, s.threads, s.fds, s.leaks),
            (21, 2, 6, 17, 1)
        );
        assert_eq!(s.rss_bytes, 51_892_224);
        assert_eq!(s.leads, 1);
    }

    #[test]
    fn exact_figures_must_return_and_rss_has_slack() {
        let b = Sample {
            tasks: 20,
            threads: 6,
            connections: 2,
            fds: 17,
            rss_bytes: 50 << 20,
            leaks: 0,
            leads: 1,
        };
        assert!(growth(&b, &b, Tolerance::default()).is_empty());
        let mut l = b;
        l.rss_bytes += 20 << 20;
        l.tasks -= 1;
        assert!(growth(&b, &l, Tolerance::default()).is_empty());
        l.threads += 1;
        l.rss_bytes += 40 << 20;
        let g = growth(&b, &l, Tolerance::default());
        assert_eq!(g.len(), 2, "{g:?}");
        assert!(g[0].contains("threads grew from 6 to 7"));
    }
}
