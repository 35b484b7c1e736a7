//! Every metric family the node's collector builds at scrape time, declared once: its field,
//! its type, its name, its help and its labels. Adding a family is one line here, plus where
//! its value is set.

use prometheus::core::Collector;
use prometheus::{CounterVec, GaugeVec, IntCounterVec, IntGaugeVec, Opts};

/// Labels of a family: fixed names, or `group`, which is `["group"]` with per-group labels and
/// none when they are off (thousands of groups export one node-wide series instead).
macro_rules! labels {
    (group, $g:ident) => {
        $g
    };
    ([$($l:literal),*], $g:ident) => {
        &[$($l),*]
    };
}

macro_rules! families {
    ($( $field:ident: $ty:ident = $name:literal, $labels:tt, $help:literal; )*) => {
        /// The families of one scrape, filled by the node's collector.
        pub struct Families {
            $(
                #[doc = concat!("`", $name, "`: ", $help)]
                pub $field: $ty,
            )*
        }

        impl Families {
            /// Empty families; `group_labels` chooses per-group or node-wide Raft series.
            pub fn new(group_labels: bool) -> Result<Families, prometheus::Error> {
                let g: &[&str] = if group_labels { &["group"] } else { &[] };
                let _ = g;
                Ok(Families {
                    $( $field: $ty::new(Opts::new($name, $help), labels!($labels, g))?, )*
                })
            }

            /// Every family, for the registry.
            pub fn collectors(&self) -> Vec<&dyn Collector> {
                vec![$(&self.$field),*]
            }
        }
    };
}

families! {
    tasks: IntGaugeVec = "raftnode_owner_tasks", ["owner_kind", "owner"],
        "Live tokio tasks per owner.";
    threads: IntGaugeVec = "raftnode_owner_threads", ["owner_kind", "owner"],
        "Live OS threads per owner.";
    connections: IntGaugeVec = "raftnode_owner_connections", ["owner_kind", "owner", "direction"],
        "Live connections per owner and direction.";
    starts: IntCounterVec = "raftnode_owner_starts_total", ["owner_kind"],
        "Owners started, per kind.";
    stops: IntCounterVec = "raftnode_owner_stops_total", ["owner_kind"],
        "Owners stopped, per kind.";
    leaked_tasks: IntCounterVec = "raftnode_leaked_tasks_total", ["owner_kind"],
        "Tasks still alive when their owner's stop deadline passed.";
    leaked_threads: IntCounterVec = "raftnode_leaked_threads_total", ["owner_kind"],
        "Threads still alive when their owner's stop deadline passed.";
    leaked_connections: IntCounterVec = "raftnode_leaked_connections_total", ["owner_kind"],
        "Connections still open when their owner's stop deadline passed.";
    unowned: IntGaugeVec = "raftnode_unowned_tasks", [],
        "tokio's alive tasks minus every owned task: libraries spawning behind our back.";
    groups: IntGaugeVec = "raftnode_groups", [],
        "Raft groups running on this node.";
    leaders: IntGaugeVec = "raftnode_groups_led", [],
        "Groups this node leads, with or without per-group labels.";
    leader_moves: IntCounterVec = "raftnode_raft_leader_moves_total", [],
        "Leadership transfers the leader balancer asked for.";
    quiesced: IntGaugeVec = "raftnode_groups_quiesced", [],
        "Groups whose timers are stopped on this node because they are idle.";
    wakes: IntCounterVec = "raftnode_raft_group_wakes_total", [],
        "Quiesced groups woken on this node (by work, by a message, or by a peer's failure).";
    storage_failed: IntGaugeVec = "raftnode_storage_failed", [],
        "1 after a write or fsync error: the node writes nothing more until it restarts.";
    log_cache: IntGaugeVec = "raftnode_storage_log_cache_bytes", [],
        "Log entries held in memory; older ones are read back from the WAL (--log-cache-bytes).";
    state_disk: IntGaugeVec = "raftnode_storage_state_bytes", [],
        "Bytes on disk of the state engine, which holds every group's applied state.";
    peers_live: IntGaugeVec = "raftnode_peers_live", [],
        "Other members whose node answered the liveness probe within an election timeout.";
    threads_by_name: IntGaugeVec = "raftnode_threads_by_name", ["prefix"],
        "OS threads of this process by name prefix, from /proc/self/task.";
    has_leader: IntGaugeVec = "raftnode_raft_has_leader", group,
        "1 if the group knows a leader (without group labels: groups that do).";
    is_leader: IntGaugeVec = "raftnode_raft_is_leader", group,
        "1 if this node leads the group (without group labels: groups led).";
    term: IntGaugeVec = "raftnode_raft_term", group,
        "Current Raft term of the group (without group labels: the highest).";
    commit: IntGaugeVec = "raftnode_raft_commit_index", group,
        "Committed log index of the group (without group labels: the sum).";
    applied: IntGaugeVec = "raftnode_raft_applied_index", group,
        "Applied log index of the group (without group labels: the sum).";
    leader_changes: IntCounterVec = "raftnode_raft_leader_changes_seen_total", group,
        "Leader changes this node has seen in the group.";
    proposals_committed: IntCounterVec = "raftnode_raft_proposals_committed_total", group,
        "Client proposals committed and applied through this node as leader.";
    proposals_failed: IntCounterVec = "raftnode_raft_proposals_failed_total", group,
        "Client proposals this node proposed that did not commit.";
    proposals_pending: IntGaugeVec = "raftnode_raft_proposals_pending", group,
        "Client proposals submitted and not yet answered.";
    group_polls: IntCounterVec = "raftnode_runtime_group_polls_total", group,
        "Polls of the group's tasks (tokio-metrics TaskMonitor).";
    group_poll_seconds: CounterVec = "raftnode_runtime_group_poll_seconds_total", group,
        "Time spent polling the group's tasks.";
    group_scheduled_seconds: CounterVec = "raftnode_runtime_group_scheduled_seconds_total", group,
        "Time the group's tasks waited to be polled after waking.";
    group_slow_polls: IntCounterVec = "raftnode_runtime_group_slow_polls_total", group,
        "Polls of the group's tasks that exceeded the slow-poll threshold.";
    rt_workers: IntGaugeVec = "raftnode_runtime_workers", [],
        "tokio worker threads.";
    rt_alive_tasks: IntGaugeVec = "raftnode_runtime_alive_tasks", [],
        "tokio tasks alive.";
    rt_global_queue: IntGaugeVec = "raftnode_runtime_global_queue_depth", [],
        "Tasks waiting in tokio's global queue.";
    rt_busy_ratio: GaugeVec = "raftnode_runtime_busy_ratio", [],
        "Share of worker time spent busy since the previous scrape.";
    rt_parks: IntCounterVec = "raftnode_runtime_parks_total", [],
        "Times tokio workers parked.";
    rt_busy_seconds: CounterVec = "raftnode_runtime_busy_seconds_total", [],
        "Time tokio workers spent busy.";
    build_info: IntGaugeVec = "raftnode_build_info", ["version", "revision"],
        "Constant 1, labelled with the build's version and revision.";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_follow_the_naming_rules() {
        for labels in [true, false] {
            let f = Families::new(labels).unwrap();
            let mut names = std::collections::BTreeSet::new();
            for c in f.collectors() {
                for d in c.desc() {
                    assert!(d.fq_name.starts_with("raftnode_"), "{}", d.fq_name);
                    assert!(names.insert(d.fq_name.clone()), "{} twice", d.fq_name);
                    let has_group = d.variable_labels.iter().any(|l| l == "group");
                    if !labels {
                        assert!(!has_group, "{} keeps a group label", d.fq_name);
                    }
                }
            }
            assert!(names.len() >= 31);
        }
    }
}
