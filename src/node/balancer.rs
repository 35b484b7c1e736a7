//! The leader balancer: every round, this node looks at the groups it hosts and, when it leads
//! more than its share, asks openraft to transfer some of them (the choice is
//! [`placement::rebalance`]). It runs as its own owner under the node, and stops first when
//! the node drains, so that it never moves leadership while leadership is being handed away.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;

use crate::group::Group;
use crate::ids::NodeId;
use crate::node::handover;
use crate::node::periodic::Periodic;
use crate::node::placement::{self, GroupView};
use crate::node::shared::NodeCore;

/// At most this many transfers per round and node: a restarted node of a large cluster gets
/// its share over several rounds, and a round never floods the network with elections.
const MAX_MOVES: usize = 256;

/// What this node knows of `g`: its leader and, when this node leads it, the voters that are
/// caught up to the leader's last entry, answered within `fresh`, and whose node serves
/// (`serving`, when the liveness probe runs: `probing`). A sleeping group sends no heartbeats,
/// so nobody answered lately: there, the voters that agreed to sleep (caught up then, and
/// nothing changed since) and whose node serves are ready.
fn view(g: &Group, fresh: Duration, serving: &BTreeSet<NodeId>, probing: bool) -> GroupView {
    let m = g.raft.metrics().borrow_watched().clone();
    let mut ready = BTreeSet::new();
    if m.current_leader == Some(m.id) {
        let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
        if let Some(agreed) = g.slept_with() {
            ready = agreed
                .into_iter()
                .filter(|n| voters.contains(n) && serving.contains(n))
                .collect();
        } else {
            let last = m.last_log_index;
            let (_, _, followers) = handover::followers(g);
            for f in followers {
                let caught_up = f.matched.is_some() && f.matched == last;
                let answered = f.last_ack.is_some_and(|a| a < fresh);
                let serves = !probing || serving.contains(&f.id);
                if voters.contains(&f.id) && caught_up && answered && serves {
                    ready.insert(f.id);
                }
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
        round(&core, every).await;
    }
}

/// One round. A move wakes its group on every member (an election, then heartbeats until it
/// sleeps again under its new leader), so moves are paced like a start: only while few of the
/// groups moved or woken before are still awake (the node's wake budget, shared with the
/// quiescer's wakes). Unpaced, the moves to a restarted node of ten thousand
/// groups, on top of its catching up, loaded the nodes until they missed each other's probes.
async fn round(core: &Arc<NodeCore>, every: Duration) {
    let me = core.node_id();
    let members: BTreeSet<_> = core.config.peers.keys().copied().collect();
    let groups = core.registry.all();
    let fresh = core.config.election_timeout();
    let probing = core.config.quiesce_round().is_some();
    // Leadership goes only to nodes that serve: a restarting node answers the probe long
    // before its groups run, and one that drains refuses it.
    let serving = core.liveness.serving();
    let views: Vec<GroupView> = groups
        .iter()
        .map(|g| view(g, fresh, &serving, probing))
        .collect();
    let share = views.iter().filter(|v| v.leader.is_some()).count() / members.len().max(1);
    // 5% of the share: small clusters balance exactly, large ones do not chase single groups.
    let moves = placement::rebalance(me, &members, &views, share / 20, MAX_MOVES);
    if moves.is_empty() {
        let leads = views.iter().filter(|v| v.leader == Some(me)).count();
        if leads > share.max(1) {
            // Why nothing moves: the groups led here have no caught-up, serving member to go to.
            let movable = views
                .iter()
                .filter(|v| v.leader == Some(me) && v.ready.iter().any(|n| *n != me))
                .count();
            tracing::debug!(
                leads,
                share,
                movable,
                ?serving,
                "leader balance: over share, no move ready"
            );
        }
        return;
    }
    tracing::info!(
        moves = moves.len(),
        leads = views.iter().filter(|v| v.leader == Some(me)).count(),
        groups = views.len(),
        "moving group leadership to balance the cluster"
    );
    let by_id: std::collections::HashMap<_, _> = groups.iter().map(|g| (g.id, g)).collect();
    // The round's moves go out as the pacer makes room, until the next round plans afresh.
    let until = tokio::time::Instant::now() + every;
    let poll = Duration::from_millis(core.config.heartbeat_ms);
    let mut moves = moves.into_iter().peekable();
    while moves.peek().is_some() && tokio::time::Instant::now() < until {
        let room = core.wakes.lock().unwrap_or_else(|e| e.into_inner()).room();
        for mv in moves.by_ref().take(room) {
            let Some(g) = by_id.get(&mv.group) else {
                continue;
            };
            tracing::debug!(group = mv.group, to = mv.to, "leader balance: transfer");
            // Awake from here until it sleeps under its new leader, which the pacer waits for.
            match core.transfer_leadership(g, mv.to).await {
                Ok(()) => {
                    core.leader_moves.fetch_add(1, Ordering::Relaxed);
                    core.wakes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .started([Arc::clone(g)]);
                }
                Err(e) => {
                    tracing::warn!(group = mv.group, to = mv.to, error = %e, "leader balance: transfer failed")
                }
            }
        }
        if moves.peek().is_some() {
            tokio::time::sleep(poll).await;
        }
    }
}
