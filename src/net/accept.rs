//! A server's accept loop with a cap on open connections. A connection over the cap is
//! accepted and closed at once (leaving it in the kernel's backlog would hold the client's
//! SYN and the fd budget anyway, and tell it nothing), and counted. When the process runs out
//! of file descriptors, accepting backs off instead of spinning: the sockets already open keep
//! being served, and new ones wait in the backlog until an fd is free.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long accepting pauses after the process ran out of file descriptors (or the kernel of
/// buffers): long enough not to burn a core, short enough that a freed fd is used soon.
const EXHAUSTED_PAUSE: Duration = Duration::from_millis(100);

/// Refusals and exhaustion are logged at most this often, with the count since the last line:
/// a flood must not turn into a flood of log lines.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The cap of one server: how many connections it holds open at once.
#[derive(Clone)]
pub struct Admission {
    server: &'static str,
    limit: usize,
    open: Arc<Semaphore>,
    refused: IntCounter,
    log: Arc<RateLimitedLog>,
}

/// One accepted connection, holding its place under the cap until dropped.
pub struct Accepted {
    /// The socket, with `TCP_NODELAY` set.
    pub stream: TcpStream,
    /// Who connected.
    pub peer: SocketAddr,
    /// Its place under the cap; the place frees when this drops.
    pub permit: OwnedSemaphorePermit,
}

impl Admission {
    /// A cap of `limit` open connections on `server` (`grpc` or `http`, as logs name it);
    /// refusals count in `refused`.
    pub fn new(server: &'static str, limit: usize, refused: IntCounter) -> Admission {
        Admission {
            server,
            limit,
            open: Arc::new(Semaphore::new(limit)),
            refused,
            log: Arc::new(RateLimitedLog::default()),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.limit - self.open.available_permits()
    }

    /// The next connection under the cap. Never fails: errors of single accepts (a client
    /// that reset before it was accepted) are skipped, and fd exhaustion waits.
    pub async fn accept(&self, listener: &TcpListener) -> Accepted {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) if is_exhaustion(&e) => {
                    if let Some(n) = self.log.due() {
                        tracing::warn!(
                            server = self.server,
                            error = %e,
                            times = n,
                            "cannot accept connections: out of file descriptors or buffers; \
                             pausing accepts (raise the fd limit, or lower max_connections)"
                        );
                    }
                    tokio::time::sleep(EXHAUSTED_PAUSE).await;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(server = self.server, error = %e, "accept failed");
                    continue;
                }
            };
            match self.open.clone().try_acquire_owned() {
                Ok(permit) => {
                    let _ = stream.set_nodelay(true);
                    return Accepted {
                        stream,
                        peer,
                        permit,
                    };
                }
                Err(_) => {
                    drop(stream);
                    self.refused.inc();
                    if let Some(n) = self.log.due() {
                        tracing::warn!(
                            server = self.server,
                            limit = self.limit,
                            refused = n,
                            %peer,
                            "connection refused: max_connections reached"
                        );
                    }
                }
            }
        }
    }
}

/// Out of fds (process or system) or of kernel memory: retrying at once would fail again.
fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == EMFILE || code == ENFILE || code == ENOBUFS || code == ENOMEM
    )
}

// Linux's values; the same on every architecture Linux runs on for these four.
const ENOMEM: i32 = 12;
const ENFILE: i32 = 23;
const EMFILE: i32 = 24;
const ENOBUFS: i32 = 105;

/// Says when a repeated event is due for a log line, and how many happened since the last.
#[derive(Default)]
struct RateLimitedLog {
    since_last: AtomicU64,
    last: std::sync::Mutex<Option<Instant>>,
}

impl RateLimitedLog {
    fn due(&self) -> Option<u64> {
        self.since_last.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            return None;
        }
        *last = Some(now);
        Some(self.since_last.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_and_counted() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let refused = IntCounter::new("refused", "refused").unwrap();
        let adm = Admission::new("test", 2, refused.clone());
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(TcpStream::connect(addr).await.unwrap());
        }
        let a = adm.accept(&listener).await;
        let _b = adm.accept(&listener).await;
        assert_eq!(adm.open(), 2);
        // The third is over the cap: closed at once. Dropping one frees a place for the fourth.
        let accepting = async { adm.accept(&listener).await.peer };
        let clients_side = async {
            tokio::time::timeout(Duration::from_secs(5), async {
                while refused.get() == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .unwrap();
            let mut third = clients.pop().unwrap();
            let mut buf = [0u8; 1];
            let n = tokio::io::AsyncReadExt::read(&mut third, &mut buf).await;
            assert!(matches!(n, Ok(0) | Err(_)), "the refused socket is closed");
            drop(a);
            TcpStream::connect(addr).await.unwrap()
        };
        let (peer, fourth) = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(accepting, clients_side)
        })
        .await
        .unwrap();
        assert_eq!(peer, fourth.local_addr().unwrap());
        assert_eq!(refused.get(), 1);
    }

    #[test]
    fn the_log_is_rate_limited_and_counts() {
        let log = RateLimitedLog::default();
        assert_eq!(log.due(), Some(1));
        assert_eq!(log.due(), None);
        assert_eq!(log.due(), None);
        *log.last.lock().unwrap() = Some(Instant::now() - LOG_EVERY);
        assert_eq!(log.due(), Some(3));
    }
}
