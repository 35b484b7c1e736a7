//! A connection's inactivity clock: the stream records when bytes last moved either way, and
//! the server closes the connection once none have for the idle timeout. It bounds what a
//! client that connects and then says nothing (or stops halfway) can hold, whatever protocol
//! runs on top; request-level timeouts cannot see a connection with no request on it.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// A stream that stamps its clock whenever bytes move.
pub struct Idle<S> {
    inner: S,
    clock: Clock,
}

/// When a connection's bytes last moved, readable by the task that watches it.
#[derive(Clone)]
pub struct Clock {
    start: Instant,
    /// Milliseconds after `start`.
    last: Arc<AtomicU64>,
}

impl Clock {
    fn stamp(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Resolves once no bytes have moved for `timeout`.
    pub async fn idle_for(&self, timeout: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let deadline = last + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

impl<S> Idle<S> {
    /// `inner`, with a clock that starts now.
    pub fn new(inner: S) -> Idle<S> {
        Idle {
            inner,
            clock: Clock {
                start: Instant::now(),
                last: Arc::new(AtomicU64::new(0)),
            },
        }
    }

    /// The clock, for the task that closes the connection when it runs out.
    pub fn clock(&self) -> Clock {
        self.clock.clone()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.stamp();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.stamp();
        }
        r
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
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.stamp();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn the_clock_runs_out_only_after_silence() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut a = Idle::new(a);
        let clock = a.clock();
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 1];
        a.read_exact(&mut buf).await.unwrap();
        // Bytes moved at 300 ms: a 500 ms timeout runs out 500 ms after that, not at 500 ms.
        let moved = Instant::now();
        clock.idle_for(Duration::from_millis(500)).await;
        assert!(
            moved.elapsed() >= Duration::from_millis(450),
            "{:?}",
            moved.elapsed()
        );
    }
}
