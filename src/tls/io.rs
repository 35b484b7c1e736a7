//! Connections that may or may not be TLS, on both sides: the server's handshake (bounded,
//! and classified: is the caller a peer?), the identity a server connection carries into each
//! request, and the peer channels' dialler.

use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper_util::client::legacy::connect::{Connected as ClientConnected, Connection};
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio_util::either::Either;
use tonic::transport::server::Connected;
use tonic::transport::Uri;

use super::names;
use super::Tls;
use crate::ledger::conn::{dial, Counted};
use crate::ledger::{Direction, Owner};
use crate::raft::types::NodeId;

/// An accepted socket: plain, or TLS once the handshake is done.
pub type ServerIo = Either<TcpStream, tokio_rustls::server::TlsStream<TcpStream>>;
/// A dialled socket: plain, or TLS.
pub type ClientIo = Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;

/// What a server learned about a connection when it accepted it; every request on it carries
/// a copy (tonic puts it in the request's extensions).
#[derive(Clone, Debug, Default)]
pub struct ConnInfo {
    /// The caller's certificate, when the peer CA signed it.
    pub peer: Option<Arc<PeerCert>>,
}

/// A caller's certificate that the peer CA signed; the node id it was found to name is kept,
/// so that the name is checked once per connection, not once per call.
#[derive(Debug)]
pub struct PeerCert {
    leaf: CertificateDer<'static>,
    proven: OnceLock<NodeId>,
}

impl PeerCert {
    /// Whether the certificate names node `id`.
    pub fn names(&self, id: NodeId) -> bool {
        if self.proven.get() == Some(&id) {
            return true;
        }
        let named = names::names_node(&self.leaf, id);
        if named {
            let _ = self.proven.set(id);
        }
        named
    }
}

impl Connected for Counted<ServerIo, ConnInfo> {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info().clone()
    }
}

/// Runs the server side of a handshake on `tcp` with `config`, within `timeout`; returns the
/// stream and, when the caller showed a certificate of the peer CA, that certificate.
pub async fn accept(
    tls: &Tls,
    config: Arc<ServerConfig>,
    tcp: TcpStream,
    timeout: Duration,
) -> io::Result<(
    tokio_rustls::server::TlsStream<TcpStream>,
    Option<Arc<PeerCert>>,
)> {
    let handshake = tokio_rustls::TlsAcceptor::from(config).accept(tcp);
    let stream = tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    let peer = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| tls.current().peer_certificate(chain))
        .map(|leaf| {
            Arc::new(PeerCert {
                leaf,
                proven: OnceLock::new(),
            })
        });
    Ok((stream, peer))
}

/// For hyper's and tonic's client side, which asks each dialled stream what it is.
impl Connection for Counted<ClientIo> {
    fn connected(&self) -> ClientConnected {
        ClientConnected::new()
    }
}

/// Dials node `node` like [`crate::ledger::conn::counting_connector`] does, then, with `tls`,
/// runs the handshake under the node's name: the peer must prove it is the node dialled.
pub fn peer_connector(
    owner: Owner,
    node: NodeId,
    tls: Option<Arc<Tls>>,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<Counted<ClientIo>>,
    Error = io::Error,
    Future = futures::future::BoxFuture<'static, io::Result<TokioIo<Counted<ClientIo>>>>,
> + Clone
       + Send
       + Sync
       + 'static {
    tower::service_fn(move |uri: Uri| {
        let (owner, tls) = (owner.clone(), tls.clone());
        Box::pin(async move {
            let (tcp, peer) = dial(&uri).await?;
            let guard = owner.track_connection(Direction::Outbound, peer);
            let io = match tls {
                None => Either::Left(tcp),
                Some(tls) => {
                    let connector =
                        tokio_rustls::TlsConnector::from(tls.current().peer_client.clone());
                    Either::Right(connector.connect(names::server_name(node), tcp).await?)
                }
            };
            Ok(TokioIo::new(Counted::new(io, guard)))
        }) as futures::future::BoxFuture<'static, _>
    })
}
