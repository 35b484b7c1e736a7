//! How fast a fresh node bootstraps its groups.
//!
//! A freshly bootstrapped group elects a leader, then heartbeats until the quiescer puts it to
//! sleep a few seconds later. Ten thousand of them bootstrapped at once heartbeat together: the
//! two cores saturate, followers miss heartbeats, their election timers fire, and elections
//! repeat faster than they complete, so the cluster never settles. Here a node bootstraps a
//! batch only while fewer than [`AWAKE_CAP`] of the groups it bootstrapped are still awake, so
//! that the awake set, not the number of groups, sets the load. Quiescence can stall (a peer
//! down keeps every group awake); then pacing would only slow the start, and it stops.
//!
//! The elections of the sleeping groups a dead node led are paced the same way: each survivor
//! wakes its share only while few of those it woke are still awake.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::group::Group;
use crate::node::config::NodeConfig;

/// Groups one node may have bootstrapped and not yet seen asleep before it waits. Every awake
/// replica costs openraft's tick, some fifty times a second, and each node holds a replica of
/// the groups the other nodes bootstrap too: about three times this many awake replicas per
/// node, which this machine's two cores carry beside the start itself (1,500 did not).
pub const AWAKE_CAP: usize = 128;

/// What the start does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Bootstrap the next batch now.
    Start,
    /// Wait, then ask again.
    Wait,
    /// Quiescence made no progress for too long: start everything left without waiting.
    Unpace,
}

/// Whether a batch of `batch` groups may be bootstrapped while `awake` groups this start
/// bootstrapped are still awake; `stalled_for` is how long since a batch started or a group
/// fell asleep, `stall_after` how long that may last before pacing stops.
pub fn next_step(
    awake: usize,
    batch: usize,
    cap: usize,
    stalled_for: Duration,
    stall_after: Duration,
) -> Step {
    if awake == 0 || awake + batch <= cap {
        Step::Start
    } else if stalled_for >= stall_after {
        Step::Unpace
    } else {
        Step::Wait
    }
}

/// How long the awake count may stay still before pacing stops: a group falls asleep a few
/// quiet rounds after its election, which a loaded node can take twice as long to reach.
pub fn stall_after(quiesce_after: Duration, election_timeout: Duration) -> Duration {
    (quiesce_after + election_timeout) * 2
}

/// Paces one start, or the elections after a peer's death: remembers the groups it let start
/// until they fall asleep.
pub(crate) struct Pacer {
    /// Weak: a group stopped meanwhile is gone, not awake, and the pacer must not keep it.
    awake: Vec<Weak<Group>>,
    /// `None` when quiescence is off (nothing would fall asleep) or pacing stopped.
    stall_after: Option<Duration>,
    /// When a batch last started or a group last fell asleep.
    progress: Instant,
    poll: Duration,
}

impl Pacer {
    pub(crate) fn new(config: &NodeConfig) -> Pacer {
        Pacer {
            awake: Vec::new(),
            stall_after: config.quiesce_round().map(|_| {
                stall_after(
                    Duration::from_millis(config.quiesce_after_ms),
                    config.election_timeout(),
                )
            }),
            progress: Instant::now(),
            poll: Duration::from_millis(config.heartbeat_ms),
        }
    }

    /// Waits until a batch of `batch` groups may be bootstrapped.
    pub(crate) async fn admit(&mut self, batch: usize) {
        while !self.may_start(batch) {
            tokio::time::sleep(self.poll).await;
        }
    }

    /// Whether a batch of `batch` groups may start now, without waiting.
    pub(crate) fn may_start(&mut self, batch: usize) -> bool {
        let Some(stall) = self.stall_after else {
            return true;
        };
        let before = self.awake.len();
        self.awake.retain(awake);
        let now = Instant::now();
        if self.awake.len() < before {
            self.progress = now;
        }
        match next_step(
            self.awake.len(),
            batch,
            AWAKE_CAP,
            now - self.progress,
            stall,
        ) {
            Step::Start => {
                self.progress = now;
                true
            }
            Step::Wait => false,
            Step::Unpace => {
                tracing::info!(
                    awake = self.awake.len(),
                    "woken groups do not fall asleep again (is a peer down?): \
                     starting the rest without pacing"
                );
                self.stall_after = None;
                true
            }
        }
    }

    /// How many more groups may wake now: the cap less those still awake (any number once
    /// pacing stopped or quiescence is off).
    pub(crate) fn room(&mut self) -> usize {
        if self.stall_after.is_none() {
            return usize::MAX;
        }
        self.awake.retain(awake);
        AWAKE_CAP.saturating_sub(self.awake.len())
    }

    /// Groups just started or woken, awake until the quiescer puts them to sleep.
    pub(crate) fn started(&mut self, groups: impl IntoIterator<Item = Arc<Group>>) {
        self.awake
            .extend(groups.into_iter().map(|g| Arc::downgrade(&g)));
    }
}

/// Whether a group the pacer let start is still running and awake.
fn awake(g: &Weak<Group>) -> bool {
    g.upgrade().is_some_and(|g| !g.is_quiesced())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn steps() {
        let stall = Duration::from_secs(5);
        let cases = [
            // awake, batch, cap, stalled for, expected
            (0, 32, 512, Duration::ZERO, Step::Start),
            (480, 32, 512, Duration::ZERO, Step::Start),
            (481, 32, 512, Duration::ZERO, Step::Wait),
            (512, 32, 512, 4 * S, Step::Wait),
            (512, 32, 512, 5 * S, Step::Unpace),
            // A batch larger than the cap still starts when nothing is awake.
            (0, 64, 32, 10 * S, Step::Start),
            (1, 64, 32, Duration::ZERO, Step::Wait),
        ];
        for (awake, batch, cap, stalled, want) in cases {
            assert_eq!(
                next_step(awake, batch, cap, stalled, stall),
                want,
                "awake {awake}, batch {batch}, cap {cap}, stalled {stalled:?}"
            );
        }
    }

    #[test]
    fn stall_bound() {
        assert_eq!(stall_after(3 * S, S / 2), 7 * S);
    }
}
