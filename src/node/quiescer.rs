//! The quiescer: idle groups stop their timers, and the node watches its peers so that a
//! sleeping group still elects a new leader when its leader's node dies.
//!
//! An idle group costs openraft a tick every few milliseconds on every member (heartbeats,
//! election timers, a metrics rebuild), so a node's idle cost grows with its groups. Here, a
//! leader whose group has been quiet for a few rounds (one, if no client wrote it since it last
//! slept) asks the other live members, one message per peer for all such groups, to stop their
//! timers; when every one agreed, it stops its own
//! (the decision is [`quiesce::may_ask`], [`quiesce::may_quiesce`] and
//! [`quiesce::follower_accepts`]). Any work wakes
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
use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::group::quiesce::{self, QuiesceItem, QuiesceRequest};
use crate::group::Group;
use crate::ids::{GroupId, NodeId};
use crate::node::periodic::Periodic;
use crate::node::shared::NodeCore;
use crate::rpc::messages::QuiesceAnswer;
use crate::rpc::methods::rpc;

/// Groups per quiesce message: bounds one message whatever the number of groups.
const BATCH: usize = 2048;

/// What one peer answered to this round's quiesce requests.
#[derive(Default)]
struct Answers {
    /// Groups whose replica there sleeps now.
    agreed: BTreeSet<GroupId>,
    /// Groups that do not run there.
    absent: BTreeSet<GroupId>,
}

/// The liveness probe: pings every peer each heartbeat interval, and acts when one goes down
/// or comes back.
pub(crate) async fn probe(core: Weak<NodeCore>, stop: CancellationToken) {
    let Some((every, dead_after, peers)) = core.upgrade().map(|c| {
        let peers = c.config.other_peers();
        let every = Duration::from_millis(c.config.heartbeat_ms);
        // Two election timeouts: a loaded peer that answers late must not look dead, which
        // would wake every group it leads and load this node, and the next, further.
        (every, c.config.election_timeout() * 2, peers)
    }) else {
        return;
    };
    // Every peer is presumed live at start, and declared down after the usual silence: a
    // replica that restarts asleep trusts its leader's node as it would a live one, and wakes
    // to campaign if that node never answers.
    let started = Instant::now();
    let mut last_ok: HashMap<NodeId, Instant> =
        peers.iter().map(|(id, _)| (*id, started)).collect();
    let mut was_live: BTreeSet<NodeId> = last_ok.keys().copied().collect();
    // What each peer last said of itself: serving, or still starting (or down since). A peer
    // that goes from not serving to serving is back: its groups run again.
    let mut serving: HashMap<NodeId, bool> = HashMap::new();
    if let Some(core) = core.upgrade() {
        core.liveness.set(was_live.clone(), BTreeSet::new());
    }
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
                let reply = core
                    .call_peer::<rpc::Ping>(*id, addr, 0, &(), dead_after / 2)
                    .await
                    .ok();
                (*id, reply.map(|r| (Instant::now(), r.serving)))
            }
        });
        let mut back = Vec::new();
        for (id, answer) in futures::future::join_all(pings).await {
            if let Some((at, now_serving)) = answer {
                last_ok.insert(id, at);
                if serving.insert(id, now_serving) == Some(false) && now_serving {
                    back.push(id);
                }
            }
        }
        let now = Instant::now();
        let live_now: BTreeSet<NodeId> = peers
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| last_ok.get(id).is_some_and(|t| now - *t < dead_after))
            .collect();
        for dead in was_live.difference(&live_now) {
            serving.insert(*dead, false);
        }
        let serving_now = live_now
            .iter()
            .copied()
            .filter(|id| serving.get(id) == Some(&true))
            .collect();
        core.liveness.set(live_now.clone(), serving_now);
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
        }
        // Only once it serves: before, its replicas are not running, and a group woken for
        // it could not catch it up nor fall asleep again.
        for back in back.into_iter().filter(|b| live_now.contains(b)) {
            tracing::info!(peer = back, "peer node serves again");
            on_up(&core, back, &mut queue);
        }
        was_live = live_now;
        later.retain(|(due, group, dead)| {
            if *due > now {
                return true;
            }
            queue.push_back(Wake {
                group: *group,
                why: Why::LeaderDown {
                    dead: *dead,
                    elect: false,
                },
            });
            false
        });
        wake_paced(&core, &mut queue);
    }
}

/// Probe intervals the paced waves of `groups` wakes last at the most.
fn waves_of(groups: usize) -> u32 {
    u32::try_from(groups.div_ceil(CAMPAIGNS_PER_BEAT)).unwrap_or(u32::MAX)
}

/// A sleeping group to wake, and why.
struct Wake {
    group: GroupId,
    why: Why,
}

enum Why {
    /// Its leader's node died; `elect`: campaign too (this node is the group's campaigner).
    LeaderDown { dead: NodeId, elect: bool },
    /// This node leads it, and a member's node answers again: the member may lack entries,
    /// and a restarted one sleeps until its leader reaches it.
    MemberBack,
}

/// Wakes the queued groups, in order, at most [`CAMPAIGNS_PER_BEAT`] per probe interval and
/// only while the node's wake budget allows. A wake that no longer applies is dropped: a group a new leader
/// reached meanwhile (the campaigner won, its vote woke the group here, and it may be asleep
/// again under the new leader), one whose leader's node answers again, or one that woke or
/// changed leader since it was queued.
fn wake_paced(core: &NodeCore, queue: &mut VecDeque<Wake>) {
    let mut pacer = core.wakes.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..CAMPAIGNS_PER_BEAT {
        let Some(w) = queue.front() else { return };
        let Some(g) = core.registry.get(w.group) else {
            queue.pop_front();
            continue;
        };
        let still = match w.why {
            // A node that answers again leads its groups again (a loaded node that only looked
            // dead, or one that restarted): taking them over would only add elections to the
            // load that made it look dead.
            Why::LeaderDown { dead, .. } => {
                g.raft.metrics().borrow_watched().current_leader == Some(dead)
                    && !core.liveness.with(|live| live.contains(&dead))
            }
            Why::MemberBack => g.is_quiesced() && g.is_leader(),
        };
        if !still {
            queue.pop_front();
            continue;
        }
        if !pacer.may_start(1) {
            return;
        }
        g.wake();
        if let Why::LeaderDown { elect: true, .. } = w.why {
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
                why: Why::LeaderDown { dead, elect: true },
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

/// `back`'s node serves again (after it was down, or restarted): the sleeping groups this node
/// leads that went to sleep without it are queued to wake, paced like a start (they may be
/// thousands), so that it hears its leaders and catches up.
fn on_up(core: &NodeCore, back: NodeId, queue: &mut VecDeque<Wake>) {
    let mut queued = 0usize;
    for g in core.registry.all() {
        // A group that slept with it needs nothing: its replica there has every entry on
        // disk, and nothing happened in the group since.
        if !g.is_leader() || g.slept_with().is_none_or(|agreed| agreed.contains(&back)) {
            continue;
        }
        let m = g.raft.metrics().borrow_watched().clone();
        if m.membership_config
            .membership()
            .nodes()
            .any(|(id, _)| *id == back)
        {
            queue.push_back(Wake {
                group: g.id,
                why: Why::MemberBack,
            });
            queued += 1;
        }
    }
    if queued > 0 {
        tracing::info!(
            peer = back,
            groups = queued,
            "waking the sleeping groups led here with the returning peer"
        );
    }
}

/// The rounds: every `every`, the groups this node leads that have been quiet for long enough
/// ([`quiesce::rounds_needed`] of the configured quiet rounds) are proposed to quiesce to
/// their other members, in one message per peer.
pub(crate) async fn rounds(core: Weak<NodeCore>, every: Duration, stop: CancellationToken) {
    let mut quiet: HashMap<GroupId, (Option<u64>, u32)> = HashMap::new();
    let mut ticks = Periodic::new(core, every, stop);
    while let Some(core) = ticks.next().await {
        let rounds = core.config.quiet_rounds();
        round(&core, &mut quiet, every, rounds).await;
    }
}

async fn round(
    core: &NodeCore,
    quiet: &mut HashMap<GroupId, (Option<u64>, u32)>,
    every: Duration,
    rounds: u32,
) {
    let me = core.node_id();
    let answer_within = core.config.election_timeout();
    // This node need not be in it: `may_quiesce` counts the leader itself, and
    // `members_to_ask` leaves it out.
    let live = core.liveness.get();
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
        // Members that lag are asked too: one that does not run the group (its node is
        // starting) says so, and the group may sleep without it.
        if !quiesce::may_ask(&facts, rounds) {
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
        let mut answers = Answers::default();
        let Some(addr) = core.config.peers.get(&peer) else {
            return (peer, answers);
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
                Ok(said) => {
                    for (item, answer) in chunk.iter().zip(said) {
                        match answer {
                            QuiesceAnswer::Agreed => answers.agreed.insert(item.group),
                            QuiesceAnswer::NotHere => answers.absent.insert(item.group),
                            QuiesceAnswer::Refused => false,
                        };
                    }
                }
                Err(e) => {
                    tracing::debug!(peer, error = %e, "quiesce request failed");
                    break;
                }
            }
        }
        (peer, answers)
    });
    let answers: HashMap<NodeId, Answers> =
        futures::future::join_all(asks).await.into_iter().collect();
    let said = |peer: &NodeId, f: fn(&Answers) -> &BTreeSet<GroupId>, g: GroupId| {
        answers.get(peer).is_some_and(|a| f(a).contains(&g))
    };
    // Under the live set: a member whose node came back while the requests were out was not
    // asked, may lack entries (a leader retries a member it could not reach only at its
    // heartbeats, which sleep would stop), and the probe's wake for it may already have passed.
    let slept = core.liveness.with(|now| {
        let mut slept = 0usize;
        for (g, facts, asked) in candidates {
            let absent: BTreeSet<NodeId> = asked
                .iter()
                .copied()
                .filter(|o| said(o, |a| &a.absent, g.id))
                .collect();
            let present: BTreeSet<NodeId> = live.difference(&absent).copied().collect();
            let agreed: BTreeSet<NodeId> = asked
                .iter()
                .copied()
                .filter(|o| said(o, |a| &a.agreed, g.id))
                .collect();
            let now_present: BTreeSet<NodeId> = now.difference(&absent).copied().collect();
            let sleeps = quiesce::may_quiesce(&facts, rounds, &present)
                && quiesce::members_to_ask(&facts, &present).is_subset(&agreed)
                && quiesce::members_to_ask(&facts, &now_present).is_subset(&asked);
            if sleeps && g.quiesce_if(facts.last_log, agreed) {
                quiet.remove(&g.id);
                slept += 1;
            } else {
                tracing::trace!(group = g.id, ?asked, ?present, ?facts, "group stays awake");
            }
        }
        slept
    });
    if slept > 0 {
        tracing::debug!(groups = slept, "idle groups quiesced");
    }
}
