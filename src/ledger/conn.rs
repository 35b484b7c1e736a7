//! Sockets that count themselves: a [`Counted`] stream holds its owner's connection guard, so
//! the gauge drops exactly when the socket does, whoever ends up dropping it (tonic, hyper, or
//! a leak).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::ItemGuard;

pub struct Counted<S> {
    inner: S,
    _guard: ItemGuard,
    /// When cancelled, every read and write fails, so whatever task drives the socket ends
    /// even if the peer never speaks again. Servers use it to force-close what did not drain.
    kill: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl<S> Counted<S> {
    pub fn new(inner: S, guard: ItemGuard) -> Self {
        Counted {
            inner,
            _guard: guard,
            kill: None,
        }
    }

    /// Like [`Counted::new`], with a token that force-closes the socket.
    pub fn killable(inner: S, guard: ItemGuard, kill: CancellationToken) -> Self {
        Counted {
            inner,
            _guard: guard,
            kill: Some(Box::pin(kill.cancelled_owned())),
        }
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

impl Connected for Counted<TcpStream> {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
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

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
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
