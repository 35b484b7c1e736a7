//! A small on-call webhook sink for the bundled stack: Alertmanager posts to `/<receiver>`
//! (`/pager`, `/ticket`), and every alert it delivers is printed as one JSON line on stdout
//! (`docker logs` shows the whole alert path) and kept for `GET /alerts`. It stands in for a
//! real pager or ticket integration; point Alertmanager's receivers at those in production.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use serde_json::{json, Value};

/// Receive Alertmanager webhooks, print each alert, and list them at GET /alerts.
#[derive(Parser)]
#[command(name = "raftnode-oncall-sink", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "ONCALL_SINK_LISTEN", default_value = "0.0.0.0:9095")]
    listen: SocketAddr,
    /// How many alerts `GET /alerts` keeps (the oldest go first).
    #[arg(long, default_value_t = 10_000)]
    keep: usize,
}

#[derive(Clone)]
struct Sink {
    alerts: Arc<Mutex<VecDeque<Value>>>,
    keep: usize,
}

/// One delivered alert, flattened to what an on-call engineer reads first.
fn flatten(receiver: &str, alert: &Value) -> Value {
    let label = |k: &str| alert["labels"][k].clone();
    json!({
        "receiver": receiver,
        "status": alert["status"],
        "alertname": label("alertname"),
        "severity": label("severity"),
        "instance": label("instance"),
        "labels": alert["labels"],
        "summary": alert["annotations"]["summary"],
        "runbook_url": alert["annotations"]["runbook_url"],
        "startsAt": alert["startsAt"],
    })
}

async fn receive(
    State(sink): State<Sink>,
    Path(receiver): Path<String>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> (StatusCode, String) {
    let Ok(Json(body)) = body else {
        return (
            StatusCode::BAD_REQUEST,
            "expected an Alertmanager webhook JSON body\n".into(),
        );
    };
    let Some(alerts) = body["alerts"].as_array() else {
        return (StatusCode::BAD_REQUEST, "no \"alerts\" array\n".into());
    };
    let mut kept = sink.alerts.lock().unwrap_or_else(|e| e.into_inner());
    for a in alerts {
        let line = flatten(&receiver, a);
        println!("{line}");
        kept.push_back(line);
        while kept.len() > sink.keep {
            kept.pop_front();
        }
    }
    (StatusCode::OK, "ok\n".into())
}

async fn list(State(sink): State<Sink>) -> Json<Vec<Value>> {
    let kept = sink.alerts.lock().unwrap_or_else(|e| e.into_inner());
    Json(kept.iter().cloned().collect())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let sink = Sink {
        alerts: Arc::default(),
        keep: args.keep.max(1),
    };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/alerts", get(list))
        .route("/{receiver}", post(receive))
        .with_state(sink);
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "raftnode-oncall-sink: cannot listen on {}: {e}",
                args.listen
            );
            return std::process::ExitCode::from(1);
        }
    };
    eprintln!("raftnode-oncall-sink: listening on {}", args.listen);
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    match axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftnode-oncall-sink: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
