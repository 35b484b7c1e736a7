//! The OpenTelemetry SDK's async-runtime hook, backed by a ledger owner. The SDK's own batch
//! processor would start an anonymous OS thread; through this hook its batching task is a task
//! of the `telemetry` owner instead, and its bounded queue counts every span it refuses.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use opentelemetry_sdk::runtime::{Runtime, RuntimeChannel, TrySend, TrySendError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use super::stats::TraceStats;
use crate::ledger::Owner;

#[derive(Clone)]
pub struct OwnedRuntime {
    owner: Owner,
    stats: Arc<TraceStats>,
    /// Ends the batching task. The SDK stops it with a message through the same bounded queue,
    /// which a full queue refuses, so shutdown needs a way that cannot fail.
    abandon: CancellationToken,
}

impl OwnedRuntime {
    pub fn new(owner: Owner, abandon: CancellationToken, stats: Arc<TraceStats>) -> Self {
        OwnedRuntime {
            owner,
            stats,
            abandon,
        }
    }
}

impl Runtime for OwnedRuntime {
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let abandon = self.abandon.clone();
        drop(self.owner.spawn("otel-batch", async move {
            tokio::select! {
                () = future => {}
                () = abandon.cancelled() => {}
            }
        }));
    }

    fn delay(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        tokio::time::sleep(duration)
    }
}

impl RuntimeChannel for OwnedRuntime {
    type Receiver<T: Debug + Send> = ReceiverStream<T>;
    type Sender<T: Debug + Send> = CountingSender<T>;

    fn batch_message_channel<T: Debug + Send>(
        &self,
        capacity: usize,
    ) -> (Self::Sender<T>, Self::Receiver<T>) {
        let (tx, rx) = mpsc::channel(capacity);
        let stats = self.stats.clone();
        (CountingSender { tx, stats }, ReceiverStream::new(rx))
    }
}

/// The export queue's sending side. A full queue never waits: the span is dropped and counted,
/// so a stalled collector costs spans, not write latency.
#[derive(Debug)]
pub struct CountingSender<T> {
    tx: mpsc::Sender<T>,
    stats: Arc<TraceStats>,
}

impl<T: Send> TrySend for CountingSender<T> {
    type Message = T;

    fn try_send(&self, item: T) -> Result<(), TrySendError> {
        self.tx.try_send(item).map_err(|e| {
            self.stats.dropped_queue_full.inc();
            match e {
                mpsc::error::TrySendError::Full(_) => TrySendError::ChannelFull,
                mpsc::error::TrySendError::Closed(_) => TrySendError::ChannelClosed,
            }
        })
    }
}
