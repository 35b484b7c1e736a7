//! The shutdown plan: the node's stop phases, in order, and the share of the grace each may
//! take. A plain function of the grace and the leak deadline, so that the budgets are read in
//! one place and tested: whatever the settings, their sum never exceeds the grace.
//!
//! Each budget is an upper bound, not a wait: a phase ends as soon as its work is done and its
//! owners read zero. An owner's verdict deadline within its phase is the leak deadline, or nine
//! tenths of the phase's budget when that is shorter (what is still alive when the grace runs
//! out is left behind either way); the last tenth is the margin in which the verdict is counted
//! and logged, so that a phase's own timeout never cuts a verdict short.

use std::time::Duration;

/// One phase of the node's stop, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// `/readyz` turns 503; new client requests are refused.
    NotReady,
    /// Groups this node leads hand leadership to a caught-up peer.
    HandOver,
    /// Groups stop (openraft shuts down) and their owners are judged.
    StopGroups,
    /// Peer channels close and their owners are judged.
    ClosePeers,
    /// The shared RPC server drains, then closes what is left, and is judged.
    DrainRpc,
    /// Storage syncs what is queued, its writer exits, and it is judged.
    FlushStorage,
    /// The HTTP server, last, so that a final scrape sees the drain; then it is judged.
    StopHttp,
    /// The node's own owner is judged, with anything its children left.
    NodeVerdict,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 8] = [
        Phase::NotReady,
        Phase::HandOver,
        Phase::StopGroups,
        Phase::ClosePeers,
        Phase::DrainRpc,
        Phase::FlushStorage,
        Phase::StopHttp,
        Phase::NodeVerdict,
    ];

    /// The phase's number, from 1, as the log and the `shutdown.phase` span show it.
    pub fn step(self) -> u32 {
        Phase::ALL.iter().position(|p| *p == self).unwrap_or(0) as u32 + 1
    }

    /// What the log says the phase does.
    pub fn name(self) -> &'static str {
        match self {
            Phase::NotReady => "not ready",
            Phase::HandOver => "handing over leadership",
            Phase::StopGroups => "stopping groups",
            Phase::ClosePeers => "closing peer channels",
            Phase::DrainRpc => "draining the shared RPC server",
            Phase::FlushStorage => "flushing storage",
            Phase::StopHttp => "stopping the HTTP server",
            Phase::NodeVerdict => "the node's own verdict",
        }
    }

    /// The phase's share of the grace, in thousandths; they sum to 1000.
    fn permille(self) -> u32 {
        match self {
            // Stopping the leader balancer: one task waiting on a timer.
            Phase::NotReady => 20,
            Phase::HandOver => 230,
            // The largest share: a node's groups are its most numerous owners, and each needs
            // openraft's shutdown and then its verdict.
            Phase::StopGroups => 300,
            Phase::ClosePeers => 100,
            Phase::DrainRpc => 150,
            Phase::FlushStorage => 100,
            Phase::StopHttp => 50,
            Phase::NodeVerdict => 50,
        }
    }
}

/// The budgets of one stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    budgets: [Duration; 8],
    leak_deadline: Duration,
}

/// The plan for a node stop within `grace`, owners being allowed `leak_deadline` to reach zero.
pub fn node_stop(grace: Duration, leak_deadline: Duration) -> Plan {
    // Integer thousandths round down, so that the sum can only fall short of the grace.
    let budgets = Phase::ALL.map(|p| grace * p.permille() / 1000);
    Plan {
        budgets,
        leak_deadline,
    }
}

impl Plan {
    /// The most `phase` may take.
    pub fn budget(&self, phase: Phase) -> Duration {
        self.budgets[phase.step() as usize - 1]
    }

    /// The part of `phase`'s budget its work and verdicts may use: all but the margin.
    pub fn usable(&self, phase: Phase) -> Duration {
        let b = self.budget(phase);
        b - b / 10
    }

    /// How long an owner stopped in `phase` has to reach zero before what remains is a leak.
    pub fn verdict(&self, phase: Phase) -> Duration {
        self.leak_deadline.min(self.usable(phase))
    }

    /// A group's deadline when the node stops: once for openraft's shutdown, once for the
    /// group owner's verdict (see `Group::stop`), both within the phase.
    pub fn group_verdict(&self) -> Duration {
        self.leak_deadline.min(self.usable(Phase::StopGroups) / 2)
    }

    /// The RPC server's drain: half its phase; the rest, less the margin, is for its verdict.
    pub fn rpc_drain(&self) -> Duration {
        self.budget(Phase::DrainRpc) / 2
    }

    /// The RPC server's verdict deadline, after its drain.
    pub fn rpc_verdict(&self) -> Duration {
        self.leak_deadline
            .min(self.usable(Phase::DrainRpc) - self.rpc_drain())
    }

    /// The HTTP server's drain, and then its verdict, split like the RPC server's.
    pub fn http_drain(&self) -> Duration {
        self.budget(Phase::StopHttp) / 2
    }

    /// The HTTP server's verdict deadline, after its drain.
    pub fn http_verdict(&self) -> Duration {
        self.leak_deadline
            .min(self.usable(Phase::StopHttp) - self.http_drain())
    }

    /// The sum of every phase's budget.
    pub fn total(&self) -> Duration {
        self.budgets.iter().sum()
    }
}

/// Budgets of one group stopped through the API while the node keeps serving: a hand-over of
/// at most a quarter of the grace, then the group's verdict after the leak deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupStop {
    /// The most the hand-over may wait for another leader.
    pub handover: Duration,
    /// The group owner's verdict deadline.
    pub verdict: Duration,
}

/// The plan of one group stop.
pub fn group_stop(grace: Duration, leak_deadline: Duration) -> GroupStop {
    GroupStop {
        handover: grace / 4,
        verdict: leak_deadline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn shares_sum_to_the_whole() {
        assert_eq!(Phase::ALL.iter().map(|p| p.permille()).sum::<u32>(), 1000);
        let steps: Vec<u32> = Phase::ALL.iter().map(|p| p.step()).collect();
        assert_eq!(steps, [1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn budgets_never_exceed_the_grace() {
        // (grace, leak deadline)
        let cases = [
            (MS(10_000), MS(5000)), // the defaults
            (MS(30_000), MS(1000)),
            (MS(1), MS(5000)),
            (MS(7), MS(3)),
            (Duration::from_nanos(999), MS(1)),
            (MS(0), MS(5000)),
            (Duration::from_secs(3600), Duration::from_secs(3600)),
        ];
        for (grace, leak) in cases {
            let p = node_stop(grace, leak);
            assert!(p.total() <= grace, "{grace:?}: {:?}", p.total());
            for phase in Phase::ALL {
                assert!(p.verdict(phase) <= p.usable(phase));
                assert!(p.usable(phase) <= p.budget(phase));
                assert!(p.verdict(phase) <= leak);
            }
            assert!(p.group_verdict() * 2 <= p.usable(Phase::StopGroups));
            assert!(p.rpc_drain() + p.rpc_verdict() <= p.usable(Phase::DrainRpc));
            assert!(p.http_drain() + p.http_verdict() <= p.usable(Phase::StopHttp));
        }
    }

    #[test]
    fn the_defaults() {
        let p = node_stop(MS(10_000), MS(5000));
        // (phase, budget, verdict deadline)
        let expected = [
            (Phase::NotReady, 200, 180),
            (Phase::HandOver, 2300, 2070),
            (Phase::StopGroups, 3000, 2700),
            (Phase::ClosePeers, 1000, 900),
            (Phase::DrainRpc, 1500, 1350),
            (Phase::FlushStorage, 1000, 900),
            (Phase::StopHttp, 500, 450),
            (Phase::NodeVerdict, 500, 450),
        ];
        for (phase, budget, verdict) in expected {
            assert_eq!(p.budget(phase), MS(budget), "{phase:?}");
            assert_eq!(p.verdict(phase), MS(verdict), "{phase:?}");
        }
        assert_eq!(p.group_verdict(), MS(1350));
        assert_eq!((p.rpc_drain(), p.rpc_verdict()), (MS(750), MS(600)));
        assert_eq!((p.http_drain(), p.http_verdict()), (MS(250), MS(200)));
        assert_eq!(p.total(), MS(10_000));
    }

    #[test]
    fn a_short_leak_deadline_bounds_every_verdict() {
        let p = node_stop(MS(60_000), MS(500));
        for phase in Phase::ALL {
            assert_eq!(p.verdict(phase), MS(500).min(p.usable(phase)));
        }
        assert_eq!(p.rpc_verdict(), MS(500));
    }

    #[test]
    fn group_stop_budgets() {
        assert_eq!(
            group_stop(MS(10_000), MS(5000)),
            GroupStop {
                handover: MS(2500),
                verdict: MS(5000)
            }
        );
    }
}
