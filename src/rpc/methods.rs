//! Every node-to-node RPC, declared once: its wire code, its name (the `method` metric label),
//! its server span, its request and response types, and how the shared server serves it.
//! Adding an RPC is one entry here, plus the call where it is sent.
//!
//! All of them travel as one gRPC method (`RaftService/Call`) whose request names the method
//! and the group outside the payload, so that routing never decodes a payload, and so that
//! messages of many groups can later share one frame.

use std::sync::Arc;

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::Status;

use crate::raft::state_machine::Raft;
use crate::raft::types::{GroupId, NodeId, Proposal, TypeConfig};
use crate::rpc::codec;
pub use crate::rpc::messages::{
    Acquaintance, Introduction, PingReply, Proposed, QuiesceAnswer, QuiesceRequest, ReadIndexGrant,
    ReadIndexRequest, Refusal,
};
use crate::rpc::router::Router;

/// One RPC's types, for the typed client call.
pub trait Rpc {
    /// The method, as it travels.
    const METHOD: Method;
    /// What the caller sends.
    type Request: Serialize + DeserializeOwned + Send;
    /// What the callee answers.
    type Response: Serialize + DeserializeOwned + Send;
}

/// Which RPCs get a server span. Heartbeats and votes never do, so that an idle cluster sends
/// the collector nothing; appends and proposals do when the caller sent a trace context, which
/// it does only for sampled writes; snapshots always do, being rare and slow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Traced {
    /// Never traced.
    Never,
    /// Traced when the request carries a `traceparent`.
    WithParent,
    /// Always traced.
    Always,
}

/// What a served request has at hand: the node's groups, and the group it names.
pub struct Ctx {
    router: Arc<dyn Router>,
    group: GroupId,
}

impl Ctx {
    pub(crate) fn new(router: Arc<dyn Router>, group: GroupId) -> Ctx {
        Ctx { router, group }
    }

    /// The group's openraft instance, woken if it was quiesced: most messages mean the group
    /// has work (a bare heartbeat, a pre-vote and a refused vote do not).
    fn raft(&self) -> Result<Raft, Status> {
        self.raft_waking(true)
    }

    fn raft_waking(&self, wake: bool) -> Result<Raft, Status> {
        self.router.raft(self.group, wake).ok_or_else(|| {
            Status::not_found(format!("group {} is not running on this node", self.group))
        })
    }
}

fn text<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

macro_rules! raft_methods {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident = $code:literal, $name:literal, span $span:literal, $traced:ident,
        $req:ty => $resp:ty,
        |$ctx:ident, $r:ident| $serve:expr;
    )*) => {
        /// Every node-to-node RPC.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Method {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl Method {
            /// Every method, in code order.
            #[cfg(test)]
            pub const ALL: &'static [Method] = &[$(Method::$variant),*];

            /// The method's code on the wire.
            pub fn code(self) -> u32 {
                match self { $(Method::$variant => $code,)* }
            }

            /// The method with wire code `code`, if any.
            pub fn from_code(code: u32) -> Option<Method> {
                match code { $($code => Some(Method::$variant),)* _ => None }
            }

            /// The method's name: the `method` label of `raftnode_rpc_requests_total`.
            pub fn name(self) -> &'static str {
                match self { $(Method::$variant => $name,)* }
            }

            /// The name of the span a traced call of this method gets on the server.
            pub fn span_name(self) -> &'static str {
                match self { $(Method::$variant => $span,)* }
            }

            /// Whether the server traces it.
            pub fn traced(self) -> Traced {
                match self { $(Method::$variant => Traced::$traced,)* }
            }
        }

        /// One marker type per method, carrying its request and response types.
        pub mod rpc {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[doc = $doc])*
                // A type, never a value; one whose method is not sent by this version (the
                // one-message snapshot) would otherwise be reported unused.
                #[allow(dead_code)]
                pub struct $variant;
                impl super::Rpc for $variant {
                    const METHOD: super::Method = super::Method::$variant;
                    type Request = $req;
                    type Response = $resp;
                }
            )*
        }

        /// Serves one call: decodes its request, runs it, encodes `Result<Response, String>`.
        pub(crate) async fn serve(method: Method, ctx: Ctx, payload: &[u8]) -> Result<Vec<u8>, Status> {
            match method {
                $(Method::$variant => {
                    let $ctx = ctx;
                    let $r: $req = codec::decode(payload)?;
                    let served: Result<Result<$resp, String>, Status> = $serve.await;
                    let out = served?;
                    codec::encode(&out)
                })*
            }
        }
    };
}

raft_methods! {
    /// A vote request of an election.
    Vote = 1, "vote", span "raft.vote", Never,
        VoteRequest<TypeConfig> => VoteResponse<TypeConfig>,
        |ctx, r| async move {
            // A granted vote puts this member in the candidate's term, so its timer must run
            // in case the candidate fails. A refused one changes nothing here: waking a member
            // whose leader sleeps would only start an election timer against that leader.
            let raft = ctx.raft_waking(false)?;
            if let Some(refusal) = ctx.router.erased_refusal(ctx.group) {
                return Ok(Ok(refusal));
            }
            let voted = raft.vote(r).await;
            if matches!(&voted, Ok(v) if v.vote_granted) {
                let _ = ctx.raft_waking(true);
            }
            Ok(voted.map_err(text))
        };
    /// A pre-vote request: would the peer vote, without disturbing the term. It changes
    /// nothing on this member, so it leaves a sleeping group asleep.
    PreVote = 2, "pre_vote", span "raft.pre_vote", Never,
        VoteRequest<TypeConfig> => VoteResponse<TypeConfig>,
        |ctx, r| async move {
            let raft = ctx.raft_waking(false)?;
            let refusal = ctx.router.erased_refusal(ctx.group);
            if let Some(refusal) = refusal.or_else(|| ctx.router.pre_vote_refusal(ctx.group)) {
                return Ok(Ok(refusal));
            }
            Ok(raft.pre_vote(r).await.map_err(text))
        };
    /// Log entries (or a heartbeat) from the leader.
    AppendEntries = 3, "append_entries", span "raft.append_entries", WithParent,
        AppendEntriesRequest<TypeConfig> => AppendEntriesResponse<TypeConfig>,
        |ctx, r| async move {
            // A heartbeat leaves a quiesced follower asleep: its leader's node is alive, which
            // the liveness probe watches anyway; entries wake it.
            let raft = ctx.raft_waking(!r.entries.is_empty())?;
            Ok(raft.append_entries(r).await.map_err(text))
        };
    /// A snapshot from the leader, to a follower whose log it has purged. It travels as a
    /// stream of its own (`RaftService/SendSnapshot`, `rpc/snapshot_stream.rs`); this entry
    /// names it in metrics and spans, and refuses the one-message form of earlier versions.
    InstallSnapshot = 4, "install_snapshot", span "raft.install_snapshot", Always,
        () => (),
        |_ctx, _r| async move {
            Err::<Result<(), String>, Status>(Status::unimplemented(
                "snapshots travel as a stream: RaftService/SendSnapshot",
            ))
        };
    /// The leader handing its leadership to this node.
    TransferLeader = 5, "transfer_leader", span "raft.transfer_leader", Never,
        TransferLeaderRequest<TypeConfig> => TransferLeaderResponse<TypeConfig>,
        |ctx, r| async move {
            let raft = ctx.raft()?;
            // A draining node hands its leaderships away; taking one back would leave the group
            // without a leader once it stops. The leader hears the refusal and stays.
            if ctx.router.draining() && r.to_node_id() == raft.node_id() {
                return Ok(Err("this node is draining and takes no leadership".to_string()));
            }
            Ok(raft.handle_transfer_leader(r).await.map_err(text))
        };
    /// A proposal that a follower hands to the leader. Never forwarded again.
    Propose = 6, "propose", span "raft.forwarded_propose", WithParent,
        Proposal => Result<Proposed, Refusal>,
        |ctx, r| async move { Ok(Ok(ctx.router.propose(ctx.group, r).await)) };
    /// A follower asking the leader for a read index, to serve a linearizable read itself.
    ReadIndex = 7, "read_index", span "raft.read_index", WithParent,
        ReadIndexRequest => Result<ReadIndexGrant, Refusal>,
        |ctx, r| async move {
            // Woken with its lease renewed: a lease read on a group that slept would fail.
            ctx.router.wake(ctx.group).await;
            Ok(Ok(read_index(&ctx.raft()?, r).await))
        };
    /// The leader of idle groups asking this member to stop their timers; one answer per group.
    Quiesce = 8, "quiesce", span "raft.quiesce", Never,
        QuiesceRequest => Vec<QuiesceAnswer>,
        |ctx, r| async move { Ok(Ok(ctx.router.quiesce(&r))) };
    /// Node-level liveness, for group 0: quiesced groups rely on it to learn that their
    /// leader's node is gone, and the answer says whether this node serves yet (a restarting
    /// node answers long before its groups run). For any other group, it also wakes that
    /// group here (its leader stops hosting it).
    Ping = 9, "ping", span "raft.ping", Never,
        () => PingReply,
        |ctx, _r| async move {
            if ctx.router.fail_stopped() {
                return Err(Status::unavailable("this node's storage failed; it has stopped"));
            }
            if ctx.group != 0 {
                let _ = ctx.router.raft(ctx.group, true);
            }
            Ok(Ok(PingReply { serving: ctx.router.serving() }))
        };
    /// A member whose replica of the group was erased and added back, to the group's leader:
    /// replicate to it from the beginning. The leader's record of what that member holds is
    /// otherwise stale (it held everything), so it would send nothing until the group's next
    /// write showed the gap, and an idle group would leave the replica empty. Any other
    /// member ignores it, and wakes the group.
    Erased = 10, "erased", span "raft.erased", Never,
        NodeId => (),
        |ctx, from| async move {
            if let Some(raft) = ctx.router.raft(ctx.group, true) {
                // Refused when this node does not lead: nothing to do then.
                let _ = raft.trigger().allow_next_revert(&from, true).await;
            }
            Ok(Ok(()))
        };
    /// A node telling this one which data dir it runs on (for group 0). A node on a new data
    /// dir asks so before it runs any group: if this node knew it by another data dir, its
    /// data was wiped, and its replicas must not vote before they catch up. A settled node
    /// says so once per start, and is remembered by it.
    Meet = 11, "meet", span "raft.meet", Never,
        Introduction => Acquaintance,
        |ctx, intro| async move { Ok(ctx.router.meet(intro)) };
}

/// Grants a read index if this node leads the group.
async fn read_index(raft: &Raft, req: ReadIndexRequest) -> Result<ReadIndexGrant, Refusal> {
    let policy = if req.lease {
        openraft::raft::ReadPolicy::LeaseRead
    } else {
        openraft::raft::ReadPolicy::ReadIndex
    };
    match raft.get_read_linearizer(policy).await {
        Ok(l) => Ok(ReadIndexGrant {
            leader: *raft.node_id(),
            read_log_id: *l.read_log_id(),
            applied: l.applied().copied(),
        }),
        Err(e) => Err(match e.forward_to_leader() {
            Some(f) => Refusal::NotLeader {
                leader: f.leader_id,
                addr: f.leader_node.as_ref().map(|n| n.addr.clone()),
            },
            None => Refusal::Unavailable(e.to_string()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_are_unique_and_round_trip() {
        let mut codes = std::collections::BTreeSet::new();
        let mut names = std::collections::BTreeSet::new();
        for m in Method::ALL {
            assert_eq!(Method::from_code(m.code()), Some(*m));
            assert!(codes.insert(m.code()), "{m:?}");
            assert!(names.insert(m.name()), "{m:?}");
        }
        assert_eq!(Method::from_code(0), None);
        assert_eq!(Method::from_code(999), None);
    }
}
