//! The node's HTTP server (axum), as an owner: it serves whatever router the node gives it
//! (health, readiness, metrics, status, the admin API, and the program's own routes) and is the
//! last server to stop, so that a final scrape can still see the drain. Also the JSON error
//! body every route answers with.

mod error;

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Json, Router};
use tokio::net::TcpListener;

use crate::ledger::Owner;
pub use error::ApiError;

/// Parses a path id, with a 400 that names what was wrong.
pub fn parse_id(what: &str, s: &str) -> Result<u64, ApiError> {
    s.parse::<u64>().ok().filter(|v| *v > 0).ok_or_else(|| {
        ApiError::bad_request(format!("{what} must be a positive integer, not {s:?}"))
    })
}

/// A 200 with a JSON body.
pub fn json_ok(v: serde_json::Value) -> impl IntoResponse {
    (StatusCode::OK, Json(v))
}

/// The running HTTP server.
pub struct HttpServer {
    owner: Owner,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    /// Serves `router` on `listener`, as `owner`'s task.
    pub fn start(router: Router, listener: TcpListener, owner: Owner) -> HttpServer {
        let token = owner.token().clone();
        let task = owner.spawn("http-serve", async move {
            let r = axum::serve(listener, router)
                .with_graceful_shutdown(token.cancelled_owned())
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        HttpServer { owner, task }
    }

    /// Stops accepting, lets requests in flight finish for up to `drain`, then holds the
    /// server's owner to zero within `verdict`.
    pub async fn stop(self, drain: Duration, verdict: Duration) {
        self.owner.token().cancel();
        let abort = self.task.abort_handle();
        if tokio::time::timeout(drain, self.task).await.is_err() {
            abort.abort();
        }
        self.owner.stop(verdict).await;
    }
}
