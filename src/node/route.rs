//! Where a proposal or a read goes next, and how long to wait before trying again: plain
//! functions over openraft's answer and the clock, tested without a cluster.
//!
//! A new leader may refuse for a moment (no leader yet, lease not established), so every
//! request retries with backoff until its timeout, then reports that no leader was reachable.

use std::time::Duration;

use crate::raft::types::NodeId;

/// What to do after this node's own attempt did not complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Hand the request to the leader at `addr`.
    Forward {
        /// The leader's node id.
        leader: NodeId,
        /// Its gRPC address.
        addr: String,
    },
    /// Wait, then try again here.
    Retry,
}

/// Decides from openraft's refusal: `leader` is its forward-to-leader hint (`None` when the
/// refusal was something else: quorum loss, a lease not yet held, a group stopping; all
/// transient from a client's point of view). A hint naming this node, or no address, means
/// leadership is moving: wait for it to settle.
pub fn route(me: NodeId, leader: Option<(Option<NodeId>, Option<String>)>) -> Route {
    match leader {
        Some((Some(leader), Some(addr))) if leader != me => Route::Forward { leader, addr },
        _ => Route::Retry,
    }
}

/// The first wait between attempts.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// The longest wait between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_millis(200);

/// The wait after `prev`: doubling, up to [`MAX_BACKOFF`].
pub fn next_backoff(prev: Duration) -> Duration {
    (prev * 2).min(MAX_BACKOFF)
}

/// Whether another attempt fits: waiting `backoff` from `elapsed` must end before `timeout`.
pub fn retry_allowed(elapsed: Duration, backoff: Duration, timeout: Duration) -> bool {
    elapsed + backoff < timeout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let a = || Some("10.0.0.2:7070".to_string());
        let cases = [
            (
                Some((Some(2), a())),
                Route::Forward {
                    leader: 2,
                    addr: "10.0.0.2:7070".into(),
                },
            ),
            (Some((Some(1), a())), Route::Retry), // this node, moments before it knows it
            (Some((Some(2), None)), Route::Retry), // a leader with no known address
            (Some((None, None)), Route::Retry),   // no leader known yet
            (None, Route::Retry),                 // refused for another reason
        ];
        for (hint, expected) in cases {
            assert_eq!(route(1, hint.clone()), expected, "{hint:?}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = FIRST_BACKOFF;
        let mut seen = vec![b];
        for _ in 0..6 {
            b = next_backoff(b);
            seen.push(b);
        }
        let ms: Vec<u128> = seen.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [10, 20, 40, 80, 160, 200, 200]);
    }

    #[test]
    fn retries_stop_before_the_timeout() {
        let s = Duration::from_millis;
        let cases = [
            (s(0), s(10), s(5000), true),
            (s(4980), s(10), s(5000), true),
            (s(4990), s(10), s(5000), false),
            (s(6000), s(10), s(5000), false),
        ];
        for (elapsed, backoff, timeout, ok) in cases {
            assert_eq!(retry_allowed(elapsed, backoff, timeout), ok, "{elapsed:?}");
        }
    }
}
