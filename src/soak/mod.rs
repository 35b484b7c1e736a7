//! `raftnode soak`: the JRaft leak scenario as a command an operator runs against a build.
//!
//! `groups` mode starts and stops groups on live nodes (and restarts their shared RPC server);
//! `process` mode spawns `raftnode serve` children, as JRaft users did with ProcessBuilder, and
//! restarts one of them with SIGTERM or SIGKILL each cycle while the others keep serving.
//! Every cycle samples the nodes' tasks, threads, connections, fds and RSS; the command writes a
//! table, a CSV and an SVG chart, and exits non-zero when anything grew.

mod chart;
mod cluster;
mod probe;
mod sample;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::client::Credentials;
pub use cluster::StopSignal;
use probe::Recorder;
pub use probe::{Row, SoakError};
pub use sample::{growth, Sample, Tolerance};

/// `raftnode soak`'s arguments.
#[derive(Debug, Args)]
pub struct SoakArgs {
    /// What is cycled.
    #[command(subcommand)]
    pub mode: SoakMode,
    /// Start/stop cycles to run.
    #[arg(long, default_value_t = 100, global = true)]
    pub cycles: u32,
    /// Write every sample as CSV here.
    #[arg(long, global = true, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Write an SVG chart of the series against the cycle number here.
    #[arg(long, global = true, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// RSS growth allowed over the run, in MiB (or 25% of the baseline if larger): the
    /// allocator keeps freed pages, so RSS never returns exactly.
    #[arg(long, default_value_t = 32, global = true, value_name = "MIB")]
    pub rss_tolerance_mib: i64,
    /// How long to wait, after each cycle, for the figures to settle back to the baseline.
    #[arg(long, default_value_t = 15, global = true, value_name = "SECS")]
    pub settle_secs: u64,
    /// Print no per-cycle rows, only the progress bar and the verdict.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// How to reach secured nodes (the `groups` soak; the `process` soak's own children are
    /// plain).
    #[command(flatten)]
    pub credentials: Credentials,
}

/// What a soak cycles.
#[derive(Debug, Subcommand)]
pub enum SoakMode {
    /// Start and stop groups on live nodes, then restart their shared gRPC server.
    Groups {
        /// HTTP addresses of every member of the cluster (groups are started on all of them).
        #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:8080")]
        http_addrs: Vec<String>,
        /// Groups started and stopped together in each cycle.
        #[arg(long, default_value_t = 1)]
        groups: u64,
        /// Id of the first soak group; pick ids the cluster does not use.
        #[arg(long, default_value_t = 1000)]
        first_group: u64,
        /// Cycles of restarting the first node's shared gRPC server, after the group cycles.
        #[arg(long, default_value_t = 0)]
        rpc_cycles: u32,
    },
    /// Spawn a cluster of `raftnode serve` children and restart one each cycle.
    Process {
        /// Cluster size.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// How the victim is stopped: term, kill, or both (alternating, SIGTERM first).
        #[arg(long, value_enum, default_value_t = StopSignal::Both)]
        signal: StopSignal,
        /// Groups the cluster hosts.
        #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
        groups: Vec<u64>,
        /// Directory for the children's data and logs [default: a new temporary directory].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The raftnode binary to run [default: this one].
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
    },
}

/// The outcome: every row, and what grew per node (empty when clean).
pub struct Report {
    /// Every sample taken.
    pub rows: Vec<Row>,
    /// What grew, per node, in words.
    pub growth: Vec<String>,
}

/// Per node: its first row is the baseline, its last row must not have grown from it.
fn verdict(rows: &[Row], tol: Tolerance) -> Vec<String> {
    let mut nodes: Vec<&str> = rows.iter().map(|r| r.node.as_str()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let mut out = Vec::new();
    for n in nodes {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.node == n).collect();
        if let (Some(first), Some(last)) = (mine.first(), mine.last()) {
            for g in growth(&first.sample, &last.sample, tol) {
                out.push(format!(
                    "node {n}: {g} (cycle {} to {})",
                    first.cycle, last.cycle
                ));
            }
        }
    }
    out
}

fn write(path: &PathBuf, text: String) -> Result<(), SoakError> {
    std::fs::write(path, text).map_err(|source| SoakError::Write {
        path: path.clone(),
        source,
    })
}

/// Every row as CSV, with a header line.
pub fn csv(rows: &[Row]) -> String {
    let mut out =
        String::from("cycle,node,tasks,threads,connections,fds,rss_bytes,leaks,groups_led\n");
    for r in rows {
        let s = &r.sample;
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            r.cycle,
            r.node,
            s.tasks,
            s.threads,
            s.connections,
            s.fds,
            s.rss_bytes,
            s.leaks,
            s.leads
        ));
    }
    out
}

fn chart(rows: &[Row]) -> String {
    let first = rows.first().map(|r| r.node.clone()).unwrap_or_default();
    let mine: Vec<&Sample> = rows
        .iter()
        .filter(|r| r.node == first)
        .map(|r| &r.sample)
        .collect();
    let series = |name, f: fn(&Sample) -> i64| chart::Series {
        name,
        values: mine.iter().map(|s| f(s) as f64).collect(),
    };
    chart::svg(
        &format!("raftnode soak, node {first}"),
        &[
            series("tasks", |s| s.tasks),
            series("threads", |s| s.threads),
            series("connections", |s| s.connections),
            series("fds", |s| s.fds),
            series("rss MiB", |s| s.rss_bytes >> 20),
        ],
    )
}

/// Runs the soak that `args` describe and reports what grew.
pub async fn run(args: &SoakArgs) -> Result<Report, SoakError> {
    let settle = Duration::from_secs(args.settle_secs);
    let rows = match &args.mode {
        SoakMode::Groups {
            http_addrs,
            groups,
            first_group,
            rpc_cycles,
        } => {
            let mut rec = Recorder::new(u64::from(args.cycles + rpc_cycles), args.quiet);
            let client = probe::Http::new(&args.credentials)?;
            let ids: Vec<u64> = (*first_group..first_group + groups).collect();
            cluster::group_cycles(&mut rec, &client, http_addrs, &ids, args.cycles, settle).await?;
            let (cycles, offset) = (*rpc_cycles, args.cycles);
            cluster::rpc_cycles(&mut rec, &client, http_addrs, cycles, offset, settle).await?;
            rec.finish();
            rec.rows
        }
        SoakMode::Process {
            nodes,
            signal,
            groups,
            dir,
            binary,
        } => {
            let mut rec = Recorder::new(u64::from(args.cycles), args.quiet);
            let spec = cluster::ProcessSpec {
                nodes: *nodes,
                signal: *signal,
                groups: groups.clone(),
                dir: dir.clone(),
                binary: binary.clone(),
            };
            cluster::process_cycles(&mut rec, &spec, args.cycles, settle).await?;
            rec.finish();
            rec.rows
        }
    };
    if let Some(p) = &args.csv {
        write(p, csv(&rows))?;
    }
    if let Some(p) = &args.svg {
        write(p, chart(&rows))?;
    }
    let tol = Tolerance {
        rss_bytes: args.rss_tolerance_mib << 20,
        rss_ratio: 0.25,
    };
    Ok(Report {
        growth: verdict(&rows, tol),
        rows,
    })
}
