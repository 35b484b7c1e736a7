//! The process's live OS threads grouped by name prefix, read from `/proc/self/task/*/comm`:
//! the "thread dump" view that diagnosed JRaft's leak, as a metric.

use std::collections::BTreeMap;

/// Thread name up to its last separator-free stem: `rn-wal-writer` stays whole, while numbered
/// pool threads such as `tokio-runtime-w` or `raftnode-worker-3` fold into one prefix.
pub fn prefix(name: &str) -> String {
    let trimmed = name
        .trim_end()
        .trim_end_matches(|c: char| c.is_ascii_digit());
    let trimmed = trimmed.trim_end_matches(['-', '_', '#', ' ']);
    if trimmed.is_empty() {
        name.trim().to_string()
    } else {
        trimmed.to_string()
    }
}

pub fn by_prefix() -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        if let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) {
            *out.entry(prefix(&comm)).or_insert(0) += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_threads_fold_together() {
        assert_eq!(prefix("raftnode-worker-3\n"), "raftnode-worker");
        assert_eq!(prefix("rn-wal-writer"), "rn-wal-writer");
        assert_eq!(prefix("42"), "42");
    }

    #[test]
    fn reads_this_process() {
        let m = by_prefix();
        assert!(m.values().sum::<i64>() >= 1);
    }
}
