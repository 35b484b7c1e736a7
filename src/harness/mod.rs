//! What the process-level tests, the benchmarks and the soak command share, so that all three
//! start nodes and read `/metrics` the same way: the `raftnode serve` launcher and the
//! Prometheus-text reader.

pub mod process;
pub mod prom;
