//! The `raftnode` binary: parse the command line, load configuration, run. It is one program
//! that embeds the library: it installs the log subscriber and the trace pipeline (the library
//! never does), builds a node serving the KV store, and turns signals into an ordered stop.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use raftnode::client::{self, Call, GroupCommand, KvCommand, Target};
use raftnode::config::{ServeOptions, Settings};
use raftnode::ledger::{Ledger, OwnerKind};
use raftnode::otel::{TraceStats, Tracing};
use tokio::signal::unix::{signal, SignalKind};

/// A multi-raft replicated KV node where every task, thread and connection has an owner.
///
/// Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.
#[derive(Parser)]
#[command(name = "raftnode", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node. With no flags: a single-node cluster with group 1, data in ./raftnode-data.
    Serve(Box<ServeOptions>),
    /// Put, get or delete keys through a node's HTTP API.
    Kv {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: KvCommand,
    },
    /// Print a node's status (role, term, leader and indexes of every group) as JSON.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Start/stop groups, RPC servers or whole processes for many cycles and check that tasks,
    /// threads, connections, fds and RSS come back (exit 1 if anything grew).
    Soak(raftnode::soak::SoakArgs),
    /// Exit 0 if the node answers /healthz (or /readyz with --ready), 1 otherwise: for
    /// container health checks, which then need no curl in the image.
    Health {
        #[command(flatten)]
        target: Target,
        /// Check readiness (serving, not draining) instead of liveness.
        #[arg(long)]
        ready: bool,
    },
    /// Start or stop groups on a live node.
    Group {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: GroupCommand,
    },
}

fn main() -> ExitCode {
    raftnode::allocator::tune();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(opts) => serve(*opts),
        Command::Kv { target, command } => call(&target, Call::Kv(command)),
        Command::Status { target } => call(&target, Call::Status),
        Command::Health { target, ready } => call(&target, Call::Health { ready }),
        Command::Group { target, command } => call(&target, Call::Group(command)),
        Command::Soak(args) => soak(&args),
    }
}

/// A single-threaded runtime for the client commands, which only wait on the network.
fn client_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("raftnode: cannot start a runtime: {e}");
            None
        }
    }
}

fn soak(args: &raftnode::soak::SoakArgs) -> ExitCode {
    let Some(rt) = client_runtime() else {
        return ExitCode::from(1);
    };
    let result = rt.block_on(raftnode::soak::run(args));
    // Idle resolver threads would otherwise hold the exit for their keep-alive.
    rt.shutdown_background();
    match result {
        Ok(report) if report.growth.is_empty() => {
            println!("soak: {} samples, nothing grew", report.rows.len());
            ExitCode::SUCCESS
        }
        Ok(report) => {
            for g in &report.growth {
                eprintln!("soak: GROWTH: {g}");
            }
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("raftnode soak: {e}");
            ExitCode::from(1)
        }
    }
}

fn call(target: &Target, call: Call) -> ExitCode {
    let Some(rt) = client_runtime() else {
        return ExitCode::from(1);
    };
    match rt.block_on(client::run(target, call)) {
        Ok(out) => {
            println!("{}", out.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("raftnode: {e}");
            ExitCode::from(1)
        }
    }
}

fn serve(opts: ServeOptions) -> ExitCode {
    let settings = match opts.with_file().and_then(Settings::resolve) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("raftnode: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // Blocking-pool threads (snapshot file I/O) exit after a second idle rather than tokio's
    // ten: the thread count then settles quickly after a burst, which is what leak checks read.
    builder
        .enable_all()
        .thread_name("raftnode-worker")
        .thread_keep_alive(Duration::from_secs(1));
    if settings.worker_threads > 0 {
        builder.worker_threads(settings.worker_threads);
    }
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raftnode: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(run_until_signalled(settings));
    rt.shutdown_timeout(Duration::from_secs(1));
    code
}

/// Runs the node; the first SIGTERM or SIGINT starts the graceful shutdown, a second one exits
/// at once with status 130.
async fn run_until_signalled(settings: Settings) -> ExitCode {
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("raftnode: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let mut signalled = async || {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };

    // The ledger and the trace pipeline come first: the pipeline's owner is counted with the
    // node's, and the subscriber must be in place before the node logs anything.
    let ledger = Ledger::with_accounting(settings.ledger_accounting);
    let stats = match TraceStats::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("raftnode: metrics registry: {e}");
            return ExitCode::from(1);
        }
    };
    let node_id = settings.node.node_id;
    let (pipeline, tracer) = match &settings.tracing {
        Some(t) => {
            let owner = ledger.root(OwnerKind::Telemetry, "otlp");
            match Tracing::start(t, node_id, owner, stats.clone()) {
                Ok((p, tracer)) => (Some(p), Some(tracer)),
                Err(e) => {
                    eprintln!("raftnode: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        None => (None, None),
    };
    raftnode::telemetry::init(settings.log_format, tracer);
    if let Some(p) = &pipeline {
        tracing::info!(endpoint = %p.endpoint, protocol = ?p.protocol, "exporting traces over OTLP");
    }

    match raftnode::fd_limit::raise() {
        Ok(soft) if soft < raftnode::fd_limit::needed(settings.node.max_connections) => {
            tracing::warn!(
                fd_limit = soft,
                max_connections = settings.node.max_connections,
                "the file-descriptor limit cannot hold max_connections on both servers: \
                 accepts pause when it runs out (raise `ulimit -n`, or lower max_connections)"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the file-descriptor limit"),
    }
    let grace = Duration::from_millis(settings.node.shutdown_grace_ms);
    let leak_deadline = Duration::from_millis(settings.node.leak_deadline_ms);
    // The process's own allocator upkeep, stopped before the node so that its verdict is the
    // node's alone.
    let allocator = ledger.root(OwnerKind::Node, "allocator");
    if let Err(e) = raftnode::allocator::start_trimming(&allocator) {
        eprintln!("raftnode: cannot start the allocator's trim thread: {e}");
        return ExitCode::from(1);
    }
    let start = raftnode::kv::node_builder(settings.kv)
        .config(settings.node.clone())
        .ledger(ledger)
        .register_metrics(stats.collector())
        .start();
    let started = tokio::select! {
        r = start => r,
        _ = signalled() => {
            eprintln!("raftnode: signal received while starting: exiting");
            return ExitCode::SUCCESS;
        }
    };
    let node = match started {
        Ok(node) => node,
        Err(e) => return failed(&e),
    };
    println!(
        "raftnode node {} ready: gRPC {} HTTP {} data {} groups {:?}",
        node.id(),
        node.grpc_addr(),
        node.http_url().unwrap_or_else(|| "(off)".into()),
        settings.node.data_dir.display(),
        settings.node.groups
    );
    // SIGHUP re-reads the credentials; the node keeps serving either way.
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(error = %e, "cannot install the SIGHUP handler: reload by changing the files");
            None
        }
    };
    loop {
        tokio::select! {
            _ = signalled() => break,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                tracing::info!("SIGHUP: reloading credentials");
                let _ = node.reload_security();
            }
        }
    }
    tracing::info!("signal received: shutting down gracefully (send again to exit at once)");
    let stopping = tokio::time::Instant::now();
    if let Some(leak) = allocator.stop(leak_deadline).await {
        tracing::error!(leak = ?leak, "the allocator upkeep did not stop");
    }
    let stop = node.stop();
    let result = tokio::select! {
        r = stop => r,
        _ = signalled() => {
            eprintln!("raftnode: second signal: exiting without finishing the shutdown");
            std::process::exit(130);
        }
    };
    if let Some(t) = pipeline {
        // Last, so that the shutdown's own spans are exported; bounded by what is left of the
        // grace period, and never more than two seconds, since a collector that is down must
        // not hold up the exit.
        let left = grace.saturating_sub(stopping.elapsed());
        t.shutdown(left.min(Duration::from_secs(2)), leak_deadline)
            .await;
    }
    match result {
        Ok(report) if report.storage_failed => {
            eprintln!("raftnode: stopped after a storage failure (see the log); exiting with 1");
            ExitCode::from(1)
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => failed(&e),
    }
}

fn failed(e: &raftnode::NodeError) -> ExitCode {
    tracing::error!(error = %e, "node failed");
    eprintln!("raftnode: {e}");
    ExitCode::from(1)
}
