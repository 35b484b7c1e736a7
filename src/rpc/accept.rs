//! The accepting side of the shared gRPC server: connections under the cap, each handshaken
//! (with TLS) in a task of the `rpc_server` owner so that a slow or silent client never holds
//! up the next, then handed to tonic as counted connections that carry what the handshake
//! learned about the caller.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use crate::ledger::conn::Counted;
use crate::ledger::{Direction, Owner};
use crate::net::{Accepted, Admission};
use crate::tls::io::{ConnInfo, ServerIo};
use crate::tls::Tls;

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection ready for tonic.
pub type Conn = Counted<ServerIo, ConnInfo>;

/// Starts accepting on `listener` as `owner`'s tasks; returns the stream of ready connections.
/// Failed handshakes count in `handshake_failures`. `kill` force-closes every connection.
pub fn incoming(
    listener: TcpListener,
    owner: &Owner,
    admission: Admission,
    tls: Option<Arc<Tls>>,
    kill: CancellationToken,
    handshake_failures: prometheus::IntCounter,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    let accept_owner = owner.clone();
    owner.spawn("rpc-accept", async move {
        let owner = accept_owner;
        let stop = owner.token().clone();
        loop {
            let a = tokio::select! {
                _ = stop.cancelled() => return,
                a = admission.accept(&listener) => a,
            };
            let Accepted {
                stream,
                peer,
                permit,
            } = a;
            let guard = owner.track_connection(Direction::Inbound, peer.to_string());
            let Some(tls) = tls.clone() else {
                let conn = Counted::killable(Either::Left(stream), guard, kill.clone())
                    .with_permit(permit)
                    .with_info(ConnInfo { peer: None });
                if tx.send(Ok(conn)).await.is_err() {
                    return;
                }
                continue;
            };
            let (tx, kill, stop, failures) = (
                tx.clone(),
                kill.clone(),
                stop.clone(),
                handshake_failures.clone(),
            );
            drop(owner.spawn("rpc-handshake", async move {
                let config = tls.current().grpc_server.clone();
                let shaken = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = crate::tls::io::accept(&tls, config, stream, HANDSHAKE_TIMEOUT) => r,
                };
                match shaken {
                    Ok((stream, peer_cert)) => {
                        let conn = Counted::killable(Either::Right(stream), guard, kill)
                            .with_permit(permit)
                            .with_info(ConnInfo { peer: peer_cert });
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Err(e) => {
                        failures.inc();
                        tracing::debug!(%peer, error = %e, "gRPC TLS handshake failed");
                    }
                }
            }));
        }
    });
    ReceiverStream::new(rx)
}
