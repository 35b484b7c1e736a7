//! Sockets that count themselves: a [`Counted`] stream holds its owner's connection guard, so
//! the gauge drops exactly when the socket does, whoever ends up dropping it (tonic, hyper, or
//! a leak). Also the dialling side's plumbing: a connector whose sockets count for an owner,
//! and an executor that runs a client library's background tasks as that owner's tasks.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use hyper_util::client::legacy::connect::{Connected as ClientConnected, Connection};
use hyper_util::rt::TokioIo;
use tonic::transport::Uri;

use super::verdict::Direction;
use super::{ItemGuard, Owner};

/// A socket (or any stream) that counts as one connection of its owner while it lives, with
/// `info`, what its server learned about it when it was accepted (its TLS identity, say).
pub struct Counted<S, I = ()> {
    inner: S,
    info: I,
    _guard: ItemGuard,
    /// When cancelled, every read and write fails, so whatever task drives the socket ends
    /// even if the peer never speaks again. Servers use it to force-close what did not drain.
    kill: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    /// Its place under its server's connection cap, freed with the socket.
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl<S> Counted<S> {
    /// `inner`, counted by `guard` for as long as it lives.
    pub fn new(inner: S, guard: ItemGuard) -> Self {
        Counted {
            inner,
            info: (),
            _guard: guard,
            kill: None,
            _permit: None,
        }
    }

    /// Like [`Counted::new`], with a token that force-closes the socket.
    pub fn killable(inner: S, guard: ItemGuard, kill: CancellationToken) -> Self {
        Counted {
            inner,
            info: (),
            _guard: guard,
            kill: Some(Box::pin(kill.cancelled_owned())),
            _permit: None,
        }
    }

    /// Holds `permit` (a place under a connection cap) for as long as the socket lives.
    pub fn with_permit(mut self, permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        self._permit = Some(permit);
        self
    }

    /// The same connection, carrying `info`.
    pub fn with_info<I>(self, info: I) -> Counted<S, I> {
        Counted {
            inner: self.inner,
            info,
            _guard: self._guard,
            kill: self.kill,
            _permit: self._permit,
        }
    }
}

impl<S, I> Counted<S, I> {
    /// What the server learned about the connection when it accepted it.
    pub fn info(&self) -> &I {
        &self.info
    }

    /// Ready with an error once the kill token fires; registers the waker otherwise.
    fn killed(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let kill = self.kill.as_mut()?;
        kill.as_mut().poll(cx).is_ready().then(|| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection force-closed at stop",
            )
        })
    }
}

/// For hyper's pooled client, which asks each dialled stream what it is.
impl Connection for Counted<TcpStream> {
    fn connected(&self) -> ClientConnected {
        self.inner.connected()
    }
}

impl<S: AsyncRead + Unpin, I: Unpin> AsyncRead for Counted<S, I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(e) = self.killed(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin, I: Unpin> AsyncWrite for Counted<S, I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.killed(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.killed(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Dials plain TCP like tonic's and hyper's own connectors, but each socket counts as an
/// outbound connection of `owner` for exactly as long as the client keeps it.
pub fn counting_connector(
    owner: Owner,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<Counted<TcpStream>>,
    Error = std::io::Error,
    Future = futures::future::BoxFuture<'static, io::Result<TokioIo<Counted<TcpStream>>>>,
> + Clone
       + Send
       + Sync
       + 'static {
    tower::service_fn(move |uri: Uri| {
        let owner = owner.clone();
        // Boxed: hyper's pooled client wants an `Unpin` future.
        Box::pin(async move {
            let (stream, peer) = dial(&uri).await?;
            let guard = owner.track_connection(Direction::Outbound, peer);
            Ok(TokioIo::new(Counted::new(stream, guard)))
        }) as futures::future::BoxFuture<'static, _>
    })
}

/// Connects to `uri`'s host and port with `TCP_NODELAY`; returns the socket and the address
/// it reached, as the ledger names the connection.
pub async fn dial(uri: &Uri) -> io::Result<(TcpStream, String)> {
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host.as_str(), port)).await?;
    stream.set_nodelay(true)?;
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| format!("{host}:{port}"));
    Ok((stream, peer))
}

/// hyper's and tonic's executor hook: the connection drivers and channel workers they spawn
/// become tasks of `owner`, so a client that is never shut down shows up as that owner's leak
/// instead of as anonymous tasks.
#[derive(Clone)]
pub struct OwnerExecutor {
    owner: Owner,
    name: &'static str,
}

impl OwnerExecutor {
    /// Runs what a client library spawns as `owner`'s tasks named `name`.
    pub fn new(owner: Owner, name: &'static str) -> Self {
        OwnerExecutor { owner, name }
    }
}

impl<F> hyper::rt::Executor<F> for OwnerExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        drop(self.owner.spawn(self.name, fut));
    }
}
