//! The quiescer: idle groups stop their timers, and the node watches its peers so that a
//! sleeping group still elects a new leader when its leader's node dies.
//!
//! An idle group costs openraft a tick every few milliseconds on every member (heartbeats,
//! election timers, a metrics rebuild), so a node's idle cost grows with its groups. Here, a
//! leader whose group has been quiet for a few rounds (one, if no client wrote it since it last
//! slept) asks the other live members, one message per peer for all such groups, to stop their
//! timers; when every one agreed, it stops its own
//! (the decision is [`quiesce::may_quiesce`] and [`quiesce::follower_accepts`]). Any work wakes
//! a group again: a proposal, a read, a membership change, a vote or an append with entries.
//!
//! What replaces the per-group timers is one liveness probe per peer node: a `ping` every
//! heartbeat interval. When a peer stops answering for two election timeouts, the sleeping
//! groups it led wake here: one member per group (the same for every survivor,
//! [`quiesce::campaigner`]) campaigns, in waves of a bounded size; the others wake after the
//! waves if no new leader reached them, so that a node's death never starts thousands of
//! competing elections, nor wakes more groups than the survivors carry at once. When a peer answers
//! again, the sleeping groups this node leads with it wake, so that the restarted peer hears
//! its leader before its own election timer runs out.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::group::quiesce::{self, QuiesceItem, QuiesceRequest};
use crate::group::Group;
use crate::ids::{GroupId, NodeId};
use crate::node::pacing::Pacer;
use crate::node::periodic::Periodic;
use crate::node::shared::NodeCore;
use crate::rpc::methods::rpc;

/// Groups per quiesce message: bounds one message whatever the number of groups.
const BATCH: usize = 2048;

/// The peers that answer the probe, shared by the probe and the rounds.
#[derive(Default)]
pub(crate) struct Liveness {
    live: Mutex<BTreeSet<NodeId>>,
}

impl Liveness {
    fn get(&self) -> BTreeSet<NodeId> {
        self.with(Clone::clone)
    }

    fn set(&self, live: BTreeSet<NodeId>) {
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = live;
    }

    /// Runs `f` on the live peers while holding them: the probe can neither mark a peer live
    /// nor start waking the groups led with it until `f` returns.
    fn with<R>(&self, f: impl FnOnce(&BTreeSet<NodeId>) -> R) -> R {
        f(&self.live.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The liveness probe: pings every peer each heartbeat interval, and acts when one goes down
/// or comes back.
pub(crate) async fn probe(core: Weak<NodeCore>, live: Arc<Liveness>, stop: CancellationToken) {
    let Some((every, dead_after, peers, mut pacer)) = core.upgrade().map(|c| {
        let me = c.node_id();
        let peers: Vec<(NodeId, String)> = c
            .config
            .peers
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(id, a)| (*id, a.clone()))
            .collect();
        let every = Duration::from_millis(c.config.heartbeat_ms);
        // Two election timeouts: a loaded peer that answers late must not look dead, which
        // would wake every group it leads and load this node, and the next, further.
        (
            every,
            c.config.election_timeout() * 2,
            peers,
            Pacer::new(&c.config),
        )
    }) else {
        return;
    };
    let mut last_ok: HashMap<NodeId, Instant> = HashMap::new();
    let mut was_live = BTreeSet::new();
    // Groups to wake later, unless a new leader took them meanwhile: non-campaigners of a
    // dead leader's groups, with that leader.
    let mut later: Vec<(Instant, GroupId, NodeId)> = Vec::new();
    // Wakes not yet done, in order, paced like a start: campaigns, then the groups whose
    // campaigner is elsewhere and did not reach them in time.
    let mut queue: VecDeque<Wake> = VecDeque::new();
    let mut ticks = Periodic::new(core, every, stop);
    while let Some(core) = ticks.next().await {
        // Each answer is stamped when it arrives, and a ping waits at most half the dead
        // interval: a peer that hangs must never make the others look silent.
        let pings = peers.iter().map(|(id, addr)| {
            let core = &core;
            async move {
                let ok = core
                    .call_peer::<rpc::Ping>(*id, addr, 0, &(), dead_after / 2)
                    .await
                    .is_ok();
                (*id, ok.then(Instant::now))
            }
        });
        for (id, at) in futures::future::join_all(pings).await {
            if let Some(at) = at {
                last_ok.insert(id, at);
            }
        }
        let now = Instant::now();
        let live_now: BTreeSet<NodeId> = peers
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| last_ok.get(id).is_some_and(|t| now - *t < dead_after))
            .collect();
        core.live_peers
            .store(live_now.len() as u64, Ordering::Relaxed);
        live.set(live_now.clone());
        for dead in was_live.difference(&live_now) {
            tracing::warn!(
                peer = dead,
                "peer node stopped answering the liveness probe"
            );
            // The campaigners elsewhere wake theirs in paced waves too: give them time.
            let after = dead_after * 2 + every * waves_of(core.registry.len());
            on_down(&core, *dead, &live_now, now + after, &mut queue, &mut later);
        }
        for back in live_now.difference(&was_live) {
            tracing::info!(peer = back, "peer node answers the liveness probe");
            on_up(&core, *back);
        }
        was_live = live_now;
        later.retain(|(due, group, dead)| {
            if *due > now {
                return true;
            }
            queue.push_back(Wake {
                group: *group,
                dead: *dead,
                elect: false,
            });
            false
        });
        wake_paced(&core, &mut queue, &mut pacer);
    }
}

/// Probe intervals the paced waves of `groups` wakes last at the most.
fn waves_of(groups: usize) -> u32 {
    u32::try_from(groups.div_ceil(CAMPAIGNS_PER_BEAT)).unwrap_or(u32::MAX)
}

/// A sleeping group to wake because its leader's node died.
struct Wake {
    group: GroupId,
    dead: NodeId,
    /// Campaign too (this node is the group's campaigner).
    elect: bool,
}

/// Wakes the queued groups, in order, at most [`CAMPAIGNS_PER_BEAT`] per probe interval and
/// only while `pacer` allows. A group a new leader reached meanwhile is left alone: the
/// campaigner won, its vote woke the group here, and it may be asleep again under the new
/// leader.
fn wake_paced(core: &NodeCore, queue: &mut VecDeque<Wake>, pacer: &mut Pacer) {
    for _ in 0..CAMPAIGNS_PER_BEAT {
        let Some(w) = queue.front() else { return };
        let Some(g) = core.registry.get(w.group) else {
            queue.pop_front();
            continue;
        };
        if g.raft.metrics().borrow_watched().current_leader != Some(w.dead) {
            queue.pop_front();
            continue;
        }
        if !pacer.may_start(1) {
            return;
        }
        g.wake();
        if w.elect {
            let raft = g.raft.clone();
            g.owner().spawn("campaign", async move {
                let _ = raft.trigger().elect(true).await;
            });
        }
        pacer.started([g]);
        queue.pop_front();
    }
}

/// Groups woken per probe interval after a peer's death, at most: its groups elect in waves,
/// so that a node leading thousands of sleeping groups wakes no more of them at once than the
/// survivors can elect and put back to sleep.
const CAMPAIGNS_PER_BEAT: usize = 128;

/// `dead`'s node stopped answering: the sleeping groups it led are queued to campaign here
/// (those this node is the campaigner of) or to wake at `later`, in case no new leader reaches
/// them.
fn on_down(
    core: &NodeCore,
    dead: NodeId,
    live: &BTreeSet<NodeId>,
    later: Instant,
    queue: &mut VecDeque<Wake>,
    delayed: &mut Vec<(Instant, GroupId, NodeId)>,
) {
    let me = core.node_id();
    let mut with_me = live.clone();
    with_me.insert(me);
    let (mut queued, mut waiting) = (0usize, 0usize);
    for g in core.registry.all() {
        if !g.is_quiesced() {
            continue;
        }
        let m = g.raft.metrics().borrow_watched().clone();
        if m.current_leader != Some(dead) {
            continue;
        }
        let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
        if quiesce::campaigner(g.id, &voters, dead, &with_me) == Some(me) {
            queue.push_back(Wake {
                group: g.id,
                dead,
                elect: true,
            });
            queued += 1;
        } else {
            delayed.push((later, g.id, dead));
            waiting += 1;
        }
    }
    if queued + waiting > 0 {
        tracing::info!(
            peer = dead,
            campaigns = queued,
            delayed = waiting,
            "waking the sleeping groups the lost peer led"
        );
    }
}

/// `back`'s node answers again: the sleeping groups this node leads with it wake.
fn on_up(core: &NodeCore, back: NodeId) {
    for g in core.registry.all() {
        if !g.is_quiesced() || !g.is_leader() {
            continue;
        }
        let m = g.raft.metrics().borrow_watched().clone();
        if m.membership_config
            .membership()
            .nodes()
            .any(|(id, _)| *id == back)
        {
            g.wake();
        }
    }
}

/// The rounds: every `every`, the groups this node leads that have been quiet for long enough
/// ([`quiesce::rounds_needed`] of the configured quiet rounds) are proposed to quiesce to
/// their other members, in one message per peer.
pub(crate) async fn rounds(
    core: Weak<NodeCore>,
    live: Arc<Liveness>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut quiet: HashMap<GroupId, (Option<u64>, u32)> = HashMap::new();
    let mut ticks = Periodic::new(core, every, stop);
    while let Some(core) = ticks.next().await {
        let rounds = core.config.quiet_rounds();
        round(&core, &live, &mut quiet, every, rounds).await;
    }
}

async fn round(
    core: &NodeCore,
    liveness: &Liveness,
    quiet: &mut HashMap<GroupId, (Option<u64>, u32)>,
    every: Duration,
    rounds: u32,
) {
    let me = core.node_id();
    let answer_within = core.config.election_timeout();
    // This node need not be in it: `may_quiesce` counts the leader itself, and
    // `members_to_ask` leaves it out.
    let live = liveness.get();
    let mut batches: BTreeMap<NodeId, Vec<QuiesceItem>> = BTreeMap::new();
    let mut candidates: Vec<(Arc<Group>, quiesce::LeaderFacts, BTreeSet<NodeId>)> = Vec::new();
    let groups = core.registry.all();
    let present: BTreeSet<GroupId> = groups.iter().map(|g| g.id).collect();
    quiet.retain(|g, _| present.contains(g));
    for g in groups {
        if g.is_quiesced() {
            quiet.remove(&g.id);
            continue;
        }
        let Some(mut facts) = g.leader_facts(0) else {
            quiet.remove(&g.id);
            continue;
        };
        let e = quiet.entry(g.id).or_insert((facts.last_log, 0));
        if e.0 == facts.last_log {
            e.1 = e.1.saturating_add(1);
        } else {
            *e = (facts.last_log, 0);
        }
        facts.quiet_rounds = e.1;
        if !quiesce::may_quiesce(&facts, rounds, &live) {
            continue;
        }
        let Some(last_log) = facts.last_log else {
            continue;
        };
        let item = QuiesceItem {
            group: g.id,
            term: facts.term,
            last_log,
        };
        let others = quiesce::members_to_ask(&facts, &live);
        for o in &others {
            batches.entry(*o).or_default().push(item);
        }
        candidates.push((g, facts, others));
    }
    if candidates.is_empty() {
        return;
    }
    // Every peer's batches at once: a slow peer delays this round, not the others' answers.
    let asks = batches.into_iter().map(|(peer, items)| async move {
        let mut accepted = BTreeSet::new();
        let Some(addr) = core.config.peers.get(&peer) else {
            return (peer, accepted);
        };
        for chunk in items.chunks(BATCH) {
            let req = QuiesceRequest {
                leader: me,
                groups: chunk.to_vec(),
            };
            match core
                .call_peer::<rpc::Quiesce>(peer, addr, 0, &req, every.max(answer_within))
                .await
            {
                Ok(answers) => accepted.extend(
                    chunk
                        .iter()
                        .zip(answers)
                        .filter(|(_, ok)| *ok)
                        .map(|(i, _)| i.group),
                ),
                Err(e) => {
                    tracing::debug!(peer, error = %e, "quiesce request failed");
                    break;
                }
            }
        }
        (peer, accepted)
    });
    let accepted: HashMap<NodeId, BTreeSet<GroupId>> =
        futures::future::join_all(asks).await.into_iter().collect();
    // Under the live set: a member whose node came back while the requests were out was not
    // asked, may lack entries (a leader retries a member it could not reach only at its
    // heartbeats, which sleep would stop), and the probe's wake for it may already have passed.
    let slept = liveness.with(|now| {
        let mut slept = 0usize;
        for (g, facts, others) in candidates {
            let all = others
                .iter()
                .all(|o| accepted.get(o).is_some_and(|s| s.contains(&g.id)));
            let nobody_new = quiesce::members_to_ask(&facts, now).is_subset(&others);
            if all && nobody_new && g.quiesce_if(facts.last_log) {
                quiet.remove(&g.id);
                slept += 1;
            }
        }
        slept
    });
    if slept > 0 {
        tracing::debug!(groups = slept, "idle groups quiesced");
    }
}
