//! The leader balancer: every round, this node looks at the groups it hosts and, when it leads
//! more than its share, asks openraft to transfer some of them (the choice is
//! [`placement::rebalance`]). It runs as its own owner under the node, and stops first when
//! the node drains, so that it never moves leadership while leadership is being handed away.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;

use crate::group::Group;
use crate::node::handover;
use crate::node::periodic::Periodic;
use crate::node::placement::{self, GroupView};
use crate::node::shared::NodeCore;

/// At most this many transfers per round and node: a restarted node of a large cluster gets
/// its share over several rounds, and a round never floods the network with elections.
const MAX_MOVES: usize = 256;

/// What this node knows of `g`: its leader and, when this node leads it, the voters that are
/// caught up to the leader's last entry and answered within `fresh`.
fn view(g: &Group, fresh: Duration) -> GroupView {
    let m = g.raft.metrics().borrow_watched().clone();
    let mut ready = BTreeSet::new();
    if m.current_leader == Some(m.id) {
        let last = m.last_log_index;
        let (_, voters, followers) = handover::followers(g);
        for f in followers {
            let caught_up = f.matched.is_some() && f.matched == last;
            let answered = f.last_ack.is_some_and(|a| a < fresh);
            if voters.contains(&f.id) && caught_up && answered {
                ready.insert(f.id);
            }
        }
    }
    GroupView {
        group: g.id,
        leader: m.current_leader,
        ready,
    }
}

/// Runs rounds every `every` until the node's core is gone or `stop` is cancelled.
pub(crate) async fn run(
    core: Weak<NodeCore>,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut ticks = Periodic::new(core, every, stop);
    while let Some(core) = ticks.next().await {
        round(&core).await;
    }
}

async fn round(core: &NodeCore) {
    let me = core.node_id();
    let members: BTreeSet<_> = core.config.peers.keys().copied().collect();
    let groups = core.registry.all();
    let fresh = core.config.election_timeout();
    let views: Vec<GroupView> = groups.iter().map(|g| view(g, fresh)).collect();
    let share = views.iter().filter(|v| v.leader.is_some()).count() / members.len().max(1);
    // 5% of the share: small clusters balance exactly, large ones do not chase single groups.
    let moves = placement::rebalance(me, &members, &views, share / 20, MAX_MOVES);
    if moves.is_empty() {
        return;
    }
    tracing::info!(
        moves = moves.len(),
        leads = views.iter().filter(|v| v.leader == Some(me)).count(),
        groups = views.len(),
        "moving group leadership to balance the cluster"
    );
    let by_id: std::collections::HashMap<_, _> = groups.iter().map(|g| (g.id, g)).collect();
    for mv in moves {
        let Some(g) = by_id.get(&mv.group) else {
            continue;
        };
        tracing::debug!(group = mv.group, to = mv.to, "leader balance: transfer");
        match g.raft.trigger().transfer_leader(mv.to).await {
            Ok(()) => {
                core.leader_moves.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(group = mv.group, to = mv.to, error = %e, "leader balance: transfer failed")
            }
        }
    }
}
