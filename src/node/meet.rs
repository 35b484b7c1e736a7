//! The start-up check of a node on a new data dir, and how nodes come to know each other's
//! data dirs. A node whose volume was wiped restarts under the same id with nothing: were its
//! replicas to vote at once, a member missing acknowledged writes could be elected with their
//! help, and the writes would be lost (they were on a majority only thanks to the wiped copy).
//!
//! So a node on a new data dir asks its peers, before it runs any group, whether they knew it
//! by another data dir ([`incarnation`](crate::node::incarnation)). If one did, its data was
//! wiped: every group it runs, and every group the peers name with it as a member, is marked
//! erased, and votes for nobody until it has caught up (as after an operator's purge). If
//! every peer answers and none knew it, or a majority of the cluster is on new data dirs (a
//! cluster forming), it is new. While peers that hold data answer and others stay silent past
//! the check's patience, it cannot tell, and takes the safe side: its groups rejoin as erased.
//!
//! A settled node introduces itself to each peer once per start, and each peer remembers it.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::node::cluster_id;
use crate::node::error::NodeError;
use crate::node::shared::NodeCore;
use crate::raft::types::{GroupId, NodeId};
use crate::rpc::client::CallError;
use crate::rpc::methods::{rpc, Acquaintance, Introduction};

/// How long the check waits for silent peers, in election timeouts, once a peer that holds
/// data has answered without knowing this node.
const PATIENCE_IN_ELECTION_TIMEOUTS: u32 = 10;
/// How often a node still waiting says so.
const WAITING_NOTICE: Duration = Duration::from_secs(10);
/// The longest pause between two introductions to a silent peer.
const MAX_INTRODUCTION_PAUSE: Duration = Duration::from_secs(30);

/// What the answers so far make of a new data dir.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// This node is new to the cluster (or the cluster is new): its replicas may vote.
    New,
    /// A peer knew this node by another data dir: its data was wiped.
    Wiped(NodeId),
    /// Peers with data do not know it, but some peers are silent: it rejoins as erased.
    Unsure,
    /// Ask again.
    Wait,
}

/// Judges the answers of `peers` other members to a node of incarnation `own`.
pub(crate) fn decide(
    own: u64,
    peers: usize,
    answers: &BTreeMap<NodeId, Acquaintance>,
    patience_over: bool,
) -> Verdict {
    if let Some((id, _)) = answers
        .iter()
        .find(|(_, a)| a.known.is_some_and(|k| k != own))
    {
        return Verdict::Wiped(*id);
    }
    // A peer that knows this very data dir counted it among the new ones of a forming cluster.
    if answers.len() >= peers || answers.values().any(|a| a.known == Some(own)) {
        return Verdict::New;
    }
    if answers.values().all(|a| a.pending) {
        // Every acknowledged write is on a majority; if a majority (this node included) is on
        // new data dirs, none can have been, short of more wiped volumes than Raft survives.
        let new_dirs = 1 + answers.len();
        let members = peers + 1;
        let quorum = members / 2 + 1;
        return if new_dirs >= quorum {
            Verdict::New
        } else {
            Verdict::Wait
        };
    }
    if patience_over {
        Verdict::Unsure
    } else {
        Verdict::Wait
    }
}

/// Runs the check when this node's data dir is new and unsettled; returns once it is settled.
/// The node's RPC server answers meanwhile (its peers may be asking too); no group runs yet.
pub(crate) async fn settle(core: &Arc<NodeCore>) -> Result<(), NodeError> {
    let inc = &core.incarnations;
    if !inc.pending() {
        return Ok(());
    }
    let peers = core.config.other_peers();
    let every = core.config.election_timeout();
    let me = core.node_id();
    let intro = Introduction {
        node: me,
        incarnation: inc.own(),
        pending: true,
    };
    let started = Instant::now();
    let mut noticed = started;
    let mut answers = BTreeMap::new();
    tracing::info!(
        node = me,
        incarnation = %format!("{:016x}", inc.own()),
        peers = peers.len(),
        "this data dir is new: asking the peers whether they knew this node by another"
    );
    let verdict = loop {
        answers.extend(introduce_to(core, &peers, &intro, every).await);
        let patience_over = started.elapsed() >= every * PATIENCE_IN_ELECTION_TIMEOUTS;
        match decide(inc.own(), peers.len(), &answers, patience_over) {
            Verdict::Wait => {}
            verdict => break verdict,
        }
        if noticed.elapsed() >= WAITING_NOTICE {
            noticed = Instant::now();
            let silent: Vec<NodeId> = peers
                .iter()
                .map(|(id, _)| *id)
                .filter(|id| !answers.contains_key(id))
                .collect();
            tracing::warn!(
                ?silent,
                waited_s = started.elapsed().as_secs(),
                "this data dir is new, and its groups wait to start until the peers say whether \
                 they knew this node by another (a new cluster needs a majority of its members)"
            );
        }
        tokio::time::sleep(every).await;
    };
    for (id, a) in &answers {
        if a.incarnation != 0 {
            inc.record(*id, a.incarnation)
                .map_err(|e| data_dir_error(core, format!("cannot write PEERS: {e}")))?;
        }
    }
    match verdict {
        Verdict::New => {
            core.set_fresh(true);
            tracing::info!("no peer knew this node by another data dir: it is new, and votes");
        }
        Verdict::Wiped(_) | Verdict::Unsure => {
            let mut groups: Vec<GroupId> = core.config.groups.clone();
            groups.extend(answers.values().flat_map(|a| a.groups.iter().copied()));
            groups.sort_unstable();
            groups.dedup();
            core.deps
                .storage
                .mark_erased(&groups)
                .await
                .map_err(|e| data_dir_error(core, format!("cannot mark groups erased: {e}")))?;
            core.set_fresh(false);
            match verdict {
                Verdict::Wiped(by) => tracing::warn!(
                    peer = by,
                    ?groups,
                    "node {by} knew this node by another data dir: this node's data was wiped. \
                     Its replicas rejoin their groups and vote for nobody until they have caught up"
                ),
                _ => tracing::warn!(
                    ?groups,
                    "peers holding data do not know this data dir, and others did not answer: \
                     to be safe, its replicas rejoin their groups and vote for nobody until they \
                     have caught up"
                ),
            }
        }
        Verdict::Wait => {}
    }
    // Before the incarnation settles: a node that stopped in between asks again.
    let from_peers: BTreeMap<&str, NodeId> = answers
        .iter()
        .filter_map(|(id, a)| a.cluster.as_deref().map(|c| (c, *id)))
        .collect();
    let adopted = match from_peers.len() {
        0 => None,
        1 => from_peers.keys().next().map(|c| c.to_string()),
        _ => {
            return Err(data_dir_error(
                core,
                format!(
                    "the peers belong to different clusters (cluster id by peer: {from_peers:?}); \
                     check --peers"
                ),
            ))
        }
    };
    cluster_id::settle(core, adopted)?;
    inc.settle()
        .map_err(|e| data_dir_error(core, format!("cannot write INCARNATION: {e}")))
}

pub(crate) fn data_dir_error(core: &NodeCore, reason: String) -> NodeError {
    NodeError::DataDir {
        path: core.config.data_dir.clone(),
        reason,
    }
}

/// Introduces this node to `peers` at once, within `timeout`; returns the answers of those
/// that answered. A peer of an earlier build keeps no record of data dirs: it answers
/// UNIMPLEMENTED, which counts as knowing nothing of this one, as a peer that holds data.
async fn introduce_to(
    core: &NodeCore,
    peers: &[(NodeId, String)],
    intro: &Introduction,
    timeout: Duration,
) -> Vec<(NodeId, Acquaintance)> {
    let calls = peers.iter().map(|(id, addr)| async move {
        let r = core
            .call_peer::<rpc::Meet>(*id, addr, 0, intro, timeout)
            .await;
        (*id, r)
    });
    let mut answers = Vec::new();
    for (id, r) in futures::future::join_all(calls).await {
        match r {
            Ok(a) => answers.push((id, a)),
            Err(CallError::Status(s)) if s.code() == tonic::Code::Unimplemented => answers.push((
                id,
                Acquaintance {
                    known: None,
                    incarnation: 0,
                    pending: false,
                    groups: Vec::new(),
                    cluster: None,
                },
            )),
            Err(e) => tracing::debug!(peer = id, error = %e, "introduction not answered"),
        }
    }
    answers
}

/// Introduces this (settled) node to each peer until every one has answered once, pausing
/// longer between tries to a peer that stays silent. Ends with the node's stop.
pub(crate) async fn introduce(core: Weak<NodeCore>, stop: CancellationToken) {
    let Some(c) = core.upgrade() else { return };
    let mut left = c.config.other_peers();
    let intro = Introduction {
        node: c.node_id(),
        incarnation: c.incarnations.own(),
        pending: false,
    };
    let timeout = c.config.election_timeout();
    let mut pause = timeout;
    drop(c);
    while !left.is_empty() {
        let round = async {
            let c = core.upgrade()?;
            let answered: Vec<NodeId> = introduce_to(&c, &left, &intro, timeout)
                .await
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            Some(answered)
        };
        let answered = tokio::select! {
            _ = stop.cancelled() => return,
            answered = round => answered,
        };
        let Some(answered) = answered else { return };
        left.retain(|(id, _)| !answered.contains(id));
        if left.is_empty() {
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(MAX_INTRODUCTION_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(known: Option<u64>, pending: bool) -> Acquaintance {
        Acquaintance {
            known,
            incarnation: 9,
            pending,
            groups: Vec::new(),
            cluster: None,
        }
    }

    fn answers(list: &[(NodeId, Acquaintance)]) -> BTreeMap<NodeId, Acquaintance> {
        list.iter().cloned().collect()
    }

    #[test]
    fn a_peer_that_knew_another_data_dir_means_a_wipe() {
        let a = answers(&[(2, said(None, false)), (3, said(Some(5), false))]);
        assert_eq!(decide(7, 2, &a, false), Verdict::Wiped(3));
        // Whatever else was said.
        let a = answers(&[(2, said(Some(7), false)), (3, said(Some(5), true))]);
        assert_eq!(decide(7, 2, &a, false), Verdict::Wiped(3));
    }

    #[test]
    fn everyone_answering_without_knowing_it_means_new() {
        let a = answers(&[(2, said(None, false)), (3, said(None, true))]);
        assert_eq!(decide(7, 2, &a, false), Verdict::New);
        assert_eq!(decide(7, 0, &BTreeMap::new(), false), Verdict::New);
        // A peer that counted this data dir in a forming cluster.
        let a = answers(&[(2, said(Some(7), false))]);
        assert_eq!(decide(7, 2, &a, false), Verdict::New);
    }

    #[test]
    fn a_forming_cluster_needs_a_majority_on_new_data_dirs() {
        assert_eq!(decide(7, 2, &BTreeMap::new(), true), Verdict::Wait);
        let a = answers(&[(2, said(None, true))]);
        assert_eq!(decide(7, 2, &a, false), Verdict::New);
        let a = answers(&[(2, said(None, true))]);
        assert_eq!(decide(7, 4, &a, true), Verdict::Wait);
        let a = answers(&[(2, said(None, true)), (3, said(None, true))]);
        assert_eq!(decide(7, 4, &a, false), Verdict::New);
    }

    #[test]
    fn silent_peers_beside_one_with_data_end_on_the_safe_side() {
        let a = answers(&[(2, said(None, false))]);
        assert_eq!(decide(7, 2, &a, false), Verdict::Wait);
        assert_eq!(decide(7, 2, &a, true), Verdict::Unsure);
    }
}
