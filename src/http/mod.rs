//! The HTTP server (axum): health, readiness, metrics, status and the JSON API. It is the last
//! thing to stop, so that a final scrape can still see the drain.

mod admin;
mod error;
mod kv;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::context::NodeContext;
use crate::ledger::Owner;
use crate::metrics::Metrics;
pub use error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub ctx: Arc<NodeContext>,
    pub metrics: Metrics,
}

pub fn router(state: AppState) -> Router {
    // Bodies beyond the value limit are refused by the KV handler with a JSON 413; this outer
    // limit only stops absurd uploads from being buffered at all.
    let body_limit = state
        .ctx
        .settings
        .max_value_bytes
        .saturating_mul(2)
        .max(1 << 20);
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(admin::status))
        .route(
            "/v1/kv/{group}/",
            get(kv::empty_key).put(kv::empty_key).delete(kv::empty_key),
        )
        .route(
            "/v1/kv/{group}/{*key}",
            get(kv::get).put(kv::put).delete(kv::delete),
        )
        .route(
            "/v1/groups/{id}",
            put(admin::add_group).delete(admin::remove_group),
        )
        .route(
            "/v1/groups/{id}/transfer-leader",
            post(admin::transfer_leader),
        )
        .route("/v1/groups/{id}/learners", post(admin::add_learner))
        .route(
            "/v1/groups/{id}/learners/{node}",
            axum::routing::delete(admin::remove_learner),
        )
        .route("/v1/groups/{id}/voters", post(admin::add_voter))
        .route(
            "/v1/groups/{id}/voters/{node}",
            axum::routing::delete(admin::remove_voter),
        )
        .route(
            "/v1/admin/rpc-server/restart",
            post(admin::restart_rpc_server),
        );
    #[cfg(feature = "leak-injection")]
    let router = router.route("/v1/debug/leaks", post(admin::inject_leak));
    router
        .route_layer(axum::middleware::from_fn(trace_request))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// The server span of an API call, continuing the client's trace when it sent a
/// `traceparent`. Health checks and scrapes are left out: they would flood the exporter with
/// traces nobody follows.
async fn trace_request(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if !req.uri().path().starts_with("/v1/") {
        return next.run(req).await;
    }
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| req.uri().path().to_owned());
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format_args!("{} {route}", req.method()),
        otel.kind = "server",
        http.request.method = %req.method(),
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    crate::otel::propagation::adopt_from_headers(&span, req.headers());
    let response = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if s.ctx.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if !s.ctx.ready.load(Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    match s.metrics.render() {
        Ok(text) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e).into_response(),
    }
}

/// Parses a path id, with a 400 that names what was wrong.
pub(crate) fn parse_id(what: &str, s: &str) -> Result<u64, ApiError> {
    s.parse::<u64>().ok().filter(|v| *v > 0).ok_or_else(|| {
        ApiError::bad_request(format!("{what} must be a positive integer, not {s:?}"))
    })
}

pub(crate) fn json_ok(v: serde_json::Value) -> impl IntoResponse {
    (StatusCode::OK, Json(v))
}

/// The running HTTP server.
pub struct HttpServer {
    owner: Owner,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    pub fn start(state: AppState, listener: TcpListener, owner: Owner) -> HttpServer {
        let app = router(state);
        let token = owner.token().clone();
        let task = owner.spawn("http-serve", async move {
            let r = axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        HttpServer { owner, task }
    }

    pub async fn stop(self, drain: std::time::Duration) {
        self.owner.token().cancel();
        let abort = self.task.abort_handle();
        if tokio::time::timeout(drain, self.task).await.is_err() {
            abort.abort();
        }
    }
}
