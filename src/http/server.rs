//! The HTTP server as an owner, with its own accept loop rather than a library's: every
//! connection is a counted connection of the `http` owner, runs as one of its tasks, and is
//! held to the server's limits (a cap on open connections, a deadline for each request's
//! headers, an inactivity bound). It is the last server to stop, so that a final scrape can
//! still see the drain.
//!
//! HTTP/1.1 only: its clients are operators, scrapers and load balancers, and with one
//! protocol the header deadline covers a connection from its first byte.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus::IntCounter;
use tokio::net::TcpListener;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::ledger::conn::Counted;
use crate::ledger::{Direction, Owner};
use crate::net::{Accepted, Admission, Idle};
use crate::tls::io::ServerIo;
use crate::tls::Tls;

/// What the HTTP server lets one client hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections open at once; more are closed as they arrive.
    pub max_connections: usize,
    /// From a connection's start, or the end of its previous response, until a request's
    /// headers are complete.
    pub header_timeout: Duration,
    /// A connection on which no byte moves either way for this long is closed.
    pub idle_timeout: Duration,
}

/// The running HTTP server.
pub struct HttpServer {
    owner: Owner,
    task: tokio::task::JoinHandle<()>,
    admission: Admission,
    /// Force-closes connections that did not drain.
    kill: CancellationToken,
}

impl HttpServer {
    /// Serves `router` on `listener`, as `owner`'s tasks; refused connections count in
    /// `refused`.
    pub fn start(
        router: Router,
        listener: TcpListener,
        owner: Owner,
        limits: HttpLimits,
        tls: Option<Arc<Tls>>,
        refused: IntCounter,
    ) -> HttpServer {
        let admission = Admission::new("http", limits.max_connections, refused);
        let kill = CancellationToken::new();
        let task = owner.spawn(
            "http-accept",
            accept_loop(
                listener,
                router,
                owner.clone(),
                admission.clone(),
                limits,
                tls,
                kill.clone(),
            ),
        );
        HttpServer {
            owner,
            task,
            admission,
            kill,
        }
    }

    /// Stops accepting, lets requests in flight finish for up to `drain`, closes what is
    /// left, then holds the server's owner to zero within `verdict`.
    pub async fn stop(self, drain: Duration, verdict: Duration) {
        self.owner.token().cancel();
        let drained = tokio::time::timeout(drain, async {
            let _ = self.task.await;
            while self.admission.open() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                open = self.admission.open(),
                "HTTP connections did not drain in time; closing them"
            );
        }
        self.kill.cancel();
        self.owner.stop(verdict).await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    owner: Owner,
    admission: Admission,
    limits: HttpLimits,
    tls: Option<Arc<Tls>>,
    kill: CancellationToken,
) {
    let stop = owner.token().clone();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = admission.accept(&listener) => a,
        };
        let peer = accepted.peer;
        // Read per connection: a reload takes effect for the next one.
        let config = tls.as_ref().and_then(|t| t.current().http_server.clone());
        let conn = serve_connection(
            accepted,
            router.clone(),
            &owner,
            limits,
            config,
            kill.clone(),
        );
        drop(owner.spawn("http-connection", conn));
        tracing::trace!(%peer, "HTTP connection accepted");
    }
}

/// Serves one connection until the client leaves, a limit closes it, or the server stops
/// (which lets the request in flight finish).
fn serve_connection(
    accepted: Accepted,
    router: Router,
    owner: &Owner,
    limits: HttpLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    kill: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let Accepted {
        stream,
        peer,
        permit,
    } = accepted;
    let guard = owner.track_connection(Direction::Inbound, peer.to_string());
    let stop = owner.token().clone();
    async move {
        let _permit = permit;
        // The handshake counts against the header deadline: it is what comes before headers.
        let stream: ServerIo = match tls {
            None => Either::Left(stream),
            Some(config) => {
                let handshake = tokio_rustls::TlsAcceptor::from(config).accept(stream);
                let shaken = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = tokio::time::timeout(limits.header_timeout, handshake) => r,
                };
                match shaken {
                    Ok(Ok(s)) => Either::Right(s),
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "HTTP TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "HTTP TLS handshake timed out");
                        return;
                    }
                }
            }
        };
        let io = Idle::new(Counted::killable(stream, guard, kill));
        let clock = io.clock();
        let service = TowerToHyperService::new(
            router.map_request(|req: hyper::Request<Incoming>| req.map(Body::new)),
        );
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let conn = builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        tokio::pin!(conn);
        let mut closing = false;
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "HTTP connection ended");
                    }
                    return;
                }
                _ = stop.cancelled(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                // Not a graceful close: that would wait for the request that is stuck.
                _ = clock.idle_for(limits.idle_timeout) => {
                    tracing::debug!(%peer, "HTTP connection idle; closing it");
                    return;
                }
            }
        }
    }
}
