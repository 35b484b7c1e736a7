//! One queue per peer that carries the Raft messages of every group bound for that peer in
//! shared frames. Without it, each group's heartbeats, votes and appends were separate gRPC
//! calls: a thousand groups gave a thousand calls per heartbeat interval to every peer, and the
//! per-call cost (an HTTP/2 stream, headers, a server task) dominated the node's CPU.
//!
//! The batch forms by itself: a message goes out at once when the peer's pipeline has room,
//! and what queues meanwhile leaves together in the next frame. There is no timer, so a lone
//! message pays no latency for batching, and a busy node sends fewer, larger frames exactly
//! when it has less CPU to spare. The queue is bounded, and each peer has its own: a slow peer
//! fills its own queue and times out its own callers, never another peer's.

use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use crate::ledger::Owner;
use crate::rpc::cluster::PeerClient;
use crate::rpc::pb::{RaftBatch, RaftRequest, RaftResult};

/// How large batches get and how many travel at once. Chosen so that one batch stays far
/// below the message bound, and so that a few batches in flight keep a fast peer busy while
/// the next one fills.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// Messages per batch at most.
    pub max_messages: usize,
    /// Payload bytes per batch at most; one larger message still travels, alone.
    pub max_bytes: usize,
    /// Batches in flight to the peer at once; more messages wait and join the next batch.
    pub in_flight: usize,
    /// Messages waiting for the peer at most; a caller beyond that waits, within its timeout.
    pub queue: usize,
    /// Payload bytes queued or in flight to the peer at most; a caller beyond that waits,
    /// within its timeout. A message larger than this travels alone, once the rest is gone.
    pub queue_bytes: usize,
}

impl BatchLimits {
    /// The node's defaults, for a message bound of `max_message_bytes`.
    pub fn for_message_bound(max_message_bytes: usize) -> BatchLimits {
        BatchLimits {
            max_messages: 1024,
            max_bytes: (max_message_bytes / 4).clamp(64 << 10, 4 << 20),
            in_flight: 4,
            queue: 8192,
            queue_bytes: 64 << 20,
        }
    }
}

/// The server refuses batches larger than this many messages, whatever the peer sends.
pub const MAX_BATCH_MESSAGES: usize = 4096;

struct Queued {
    call: RaftRequest,
    deadline: Instant,
    reply: oneshot::Sender<Result<Vec<u8>, Status>>,
    /// The message's share of the peer's byte budget, given back when the message is
    /// dropped: answered, or skipped because its caller gave up.
    budget: Option<OwnedSemaphorePermit>,
}

/// The sending end of one peer's queue; cheap to clone, one per group's view of the peer.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Queued>,
    /// The bytes queued or in flight, bounded: a caller whose message timed out leaves it
    /// queued until the sender drains it, and a slow peer with callers resending large
    /// appends after each timeout filled the queue with hundreds of megabytes of them.
    budget: Arc<Semaphore>,
    max_bytes: usize,
}

impl Batcher {
    /// Starts the peer's sender task, owned (and so counted and stopped) by `owner`. It ends
    /// when the owner stops, or when every `Batcher` clone is gone and the last batch returned.
    pub fn start(
        owner: &Owner,
        client: PeerClient,
        limits: BatchLimits,
        sizes: prometheus::Histogram,
    ) -> Batcher {
        let (tx, rx) = mpsc::channel(limits.queue.max(1));
        let stop = owner.token().clone();
        owner.spawn("peer-batcher", run(rx, client, limits, sizes, stop));
        let max_bytes = limits.queue_bytes.clamp(1, u32::MAX as usize);
        Batcher {
            tx,
            budget: Arc::new(Semaphore::new(max_bytes)),
            max_bytes,
        }
    }

    /// Sends one message in the peer's next batch and waits for its own answer: the reply
    /// payload, or why there is none (`DeadlineExceeded` when `timeout` passed). `timeout`
    /// covers the wait for room in the queue (messages and bytes) too.
    pub async fn call(&self, call: RaftRequest, timeout: Duration) -> Result<Vec<u8>, Status> {
        let deadline = Instant::now() + timeout;
        let (reply, answer) = oneshot::channel();
        let closed = || Status::unavailable("the peer's sender has stopped");
        let share = call.payload.len().clamp(1, self.max_bytes) as u32;
        let sent = tokio::time::timeout_at(deadline, async {
            let budget = self
                .budget
                .clone()
                .acquire_many_owned(share)
                .await
                .map_err(|_| closed())?;
            let queued = Queued {
                call,
                deadline,
                reply,
                budget: Some(budget),
            };
            self.tx.send(queued).await.map_err(|_| closed())?;
            answer.await.map_err(|_| closed())?
        })
        .await;
        sent.unwrap_or_else(|_| {
            Err(Status::deadline_exceeded(format!(
                "no answer within {timeout:?}"
            )))
        })
    }
}

async fn run(
    mut rx: mpsc::Receiver<Queued>,
    client: PeerClient,
    limits: BatchLimits,
    sizes: prometheus::Histogram,
    stop: CancellationToken,
) {
    let mut in_flight = FuturesUnordered::new();
    // A message that did not fit in the last batch opens the next one.
    let mut carry: Option<Queued> = None;
    loop {
        let room = in_flight.len() < limits.in_flight.max(1);
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            first = next(&mut carry, &mut rx), if room => {
                let Some(first) = first else { break };
                let batch = gather(first, &mut rx, &mut carry, &limits);
                sizes.observe(batch.len() as f64);
                in_flight.push(send(client.clone(), batch));
            }
        }
    }
    // Every sender is gone: let the batches in flight answer their callers. (A cancelled
    // owner drops them instead; their callers hear that the sender stopped.)
    if !stop.is_cancelled() {
        while in_flight.next().await.is_some() {}
    }
}

async fn next(carry: &mut Option<Queued>, rx: &mut mpsc::Receiver<Queued>) -> Option<Queued> {
    match carry.take() {
        Some(q) => Some(q),
        None => rx.recv().await,
    }
}

/// Takes what is queued now, up to the limits, skipping messages whose caller gave up.
fn gather(
    first: Queued,
    rx: &mut mpsc::Receiver<Queued>,
    carry: &mut Option<Queued>,
    limits: &BatchLimits,
) -> Vec<Queued> {
    let mut bytes = first.call.payload.len();
    let mut batch = vec![first];
    while batch.len() < limits.max_messages {
        let Ok(q) = rx.try_recv() else { break };
        if q.reply.is_closed() {
            continue;
        }
        if bytes + q.call.payload.len() > limits.max_bytes {
            *carry = Some(q);
            break;
        }
        bytes += q.call.payload.len();
        batch.push(q);
    }
    batch
}

/// One batch's round trip; every caller gets its own result, or the batch's failure.
async fn send(mut client: PeerClient, batch: Vec<Queued>) {
    let now = Instant::now();
    // A message that waited past its caller's deadline is not sent: the caller hears that it
    // timed out (rather than that the sender stopped, which would be untrue).
    let (live, expired): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .filter(|q| !q.reply.is_closed())
        .partition(|q| q.deadline > now);
    for q in expired {
        let _ = q.reply.send(Err(Status::deadline_exceeded(
            "waited in the peer's queue past its deadline",
        )));
    }
    // The budget comes back once the round trip is over and the payloads are gone.
    let mut budget = Vec::with_capacity(live.len());
    let (calls, waiters): (Vec<_>, Vec<_>) = live
        .into_iter()
        .map(|q| {
            budget.push(q.budget);
            (q.call, (q.reply, q.deadline))
        })
        .unzip();
    let Some(until) = waiters.iter().map(|(_, d)| *d).max() else {
        return;
    };
    let sent = calls.len();
    let answer = tokio::time::timeout_at(until, client.batch(RaftBatch { calls })).await;
    drop(budget);
    let results = match answer {
        Err(_) => Err(Status::deadline_exceeded("no answer to the batch in time")),
        Ok(Err(status)) => Err(status),
        Ok(Ok(reply)) => Ok(reply.into_inner().results),
    };
    match results {
        Ok(results) if results.len() == sent => {
            for ((reply, _), r) in waiters.into_iter().zip(results) {
                let _ = reply.send(result_of(r));
            }
        }
        Ok(results) => {
            let status = Status::internal(format!(
                "the peer answered {} results for {sent} messages",
                results.len()
            ));
            for (reply, _) in waiters {
                let _ = reply.send(Err(status.clone()));
            }
        }
        Err(status) => {
            for (reply, _) in waiters {
                let _ = reply.send(Err(status.clone()));
            }
        }
    }
}

/// One message's result in a batch reply, as the wire carries it.
pub fn result_of(r: RaftResult) -> Result<Vec<u8>, Status> {
    if r.code == 0 {
        Ok(r.payload)
    } else {
        Err(Status::new(Code::from_i32(r.code), r.message))
    }
}

/// The wire form of one message's outcome on the server.
pub fn to_result(r: Result<Vec<u8>, Status>) -> RaftResult {
    match r {
        Ok(payload) => RaftResult {
            payload,
            code: 0,
            message: String::new(),
        },
        Err(s) => RaftResult {
            payload: Vec::new(),
            code: s.code() as i32,
            message: s.message().to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_round_trip_through_the_wire_form() {
        let ok = result_of(to_result(Ok(vec![1, 2, 3])));
        assert_eq!(ok.ok(), Some(vec![1, 2, 3]));
        let err = result_of(to_result(Err(Status::not_found("group 7")))).unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert_eq!(err.message(), "group 7");
        // A code this build does not know stays an error, never a success.
        let odd = result_of(RaftResult {
            payload: vec![],
            code: 999,
            message: "x".into(),
        });
        assert!(odd.is_err());
    }

    fn queued(bytes: usize) -> (Queued, oneshot::Receiver<Result<Vec<u8>, Status>>) {
        let (reply, rx) = oneshot::channel();
        let q = Queued {
            call: RaftRequest {
                group_id: 1,
                payload: vec![0; bytes],
                method: 3,
                traceparent: String::new(),
            },
            deadline: Instant::now() + Duration::from_secs(5),
            reply,
            budget: None,
        };
        (q, rx)
    }

    #[tokio::test]
    async fn a_batch_takes_what_is_queued_up_to_its_limits() {
        let limits = BatchLimits {
            max_messages: 3,
            max_bytes: 100,
            in_flight: 1,
            queue: 16,
            queue_bytes: 1 << 20,
        };
        let (tx, mut rx) = mpsc::channel(16);
        let mut keep = Vec::new();
        for _ in 0..5 {
            let (q, r) = queued(10);
            keep.push(r);
            tx.send(q).await.unwrap();
        }
        let mut carry = None;
        let first = rx.recv().await.unwrap();
        assert_eq!(gather(first, &mut rx, &mut carry, &limits).len(), 3);
        let first = rx.recv().await.unwrap();
        assert_eq!(gather(first, &mut rx, &mut carry, &limits).len(), 2);

        // Bytes: a message that does not fit opens the next batch; a large one goes alone.
        for b in [60, 30, 20, 500] {
            let (q, r) = queued(b);
            keep.push(r);
            tx.send(q).await.unwrap();
        }
        let first = rx.recv().await.unwrap();
        assert_eq!(gather(first, &mut rx, &mut carry, &limits).len(), 2);
        let first = carry.take().unwrap();
        assert_eq!(first.call.payload.len(), 20);
        assert_eq!(gather(first, &mut rx, &mut carry, &limits).len(), 1);
        let first = carry.take().unwrap();
        assert_eq!(gather(first, &mut rx, &mut carry, &limits).len(), 1);

        // A caller that gave up is not sent.
        let (q, r) = queued(1);
        drop(r);
        tx.send(q).await.unwrap();
        let (q, r) = queued(1);
        keep.push(r);
        let first = {
            let (f, rf) = queued(1);
            keep.push(rf);
            f
        };
        tx.send(q).await.unwrap();
        assert_eq!(gather(first, &mut rx, &mut carry, &limits).len(), 2);
    }

    #[tokio::test]
    async fn the_queue_is_bounded_in_bytes() {
        let (tx, mut rx) = mpsc::channel(16);
        let b = Batcher {
            tx,
            budget: Arc::new(Semaphore::new(100)),
            max_bytes: 100,
        };
        let call = |n: usize| RaftRequest {
            payload: vec![0; n],
            ..Default::default()
        };
        // 60 bytes wait for the peer: a second 60 bytes find no room, and time out unqueued.
        let mut first = Box::pin(b.call(call(60), Duration::from_secs(5)));
        assert!(futures::poll!(&mut first).is_pending());
        let second = b.call(call(60), Duration::from_millis(50)).await;
        assert_eq!(second.unwrap_err().code(), Code::DeadlineExceeded);
        let q = rx.try_recv().expect("the first message is queued");
        assert!(rx.try_recv().is_err(), "the second one never was");
        // Its caller gives up and the sender drops it: the room comes back.
        drop(first);
        drop(q);
        let mut third = Box::pin(b.call(call(60), Duration::from_secs(5)));
        assert!(futures::poll!(&mut third).is_pending());
        assert!(rx.try_recv().is_ok());
        // A message larger than the whole budget still travels, alone.
        let (tx, mut rx) = mpsc::channel(16);
        let b = Batcher {
            tx,
            budget: Arc::new(Semaphore::new(100)),
            max_bytes: 100,
        };
        let mut big = Box::pin(b.call(call(500), Duration::from_secs(5)));
        assert!(futures::poll!(&mut big).is_pending());
        assert_eq!(rx.try_recv().map(|q| q.call.payload.len()).ok(), Some(500));
    }
}
