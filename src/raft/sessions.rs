//! Client sessions: what makes a retried write take effect once (Raft thesis §6.3).
//!
//! A proposal whose outcome the proposer did not learn (its leader died, a forward timed out,
//! openraft discarded the entry at a leader change) is proposed again, and both copies may
//! reach the log. Each proposal carries a [`RequestId`]; every replica's state machine keeps
//! the replies of each client's recent requests, and answers a copy it has seen with the first
//! reply instead of applying it again. The table is part of the replicated state (it travels in
//! snapshots), and every decision here depends only on the log, so all replicas agree.
//!
//! Bounded: a client says with every request the lowest sequence number it still waits for,
//! and replies below it are forgotten; at most [`MAX_CLIENTS`] clients are remembered, the one
//! least recently heard from going first, and a client that never advances its watermark keeps
//! at most [`MAX_REPLIES_PER_CLIENT`] replies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::raft::types::{Reply, RequestId};

/// Clients remembered per group. A client is one group instance on one node (it proposes on
/// behalf of every request it takes), so this is far more than a cluster ever has at once.
pub const MAX_CLIENTS: usize = 1024;

/// Replies kept per client whatever its watermark says: the requests one node can have in
/// flight in one group within a request timeout, with room to spare.
pub const MAX_REPLIES_PER_CLIENT: usize = 1 << 16;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    /// Requests below this were answered to the client, which will not ask again.
    first_open: u64,
    /// The log index of this client's last request: what eviction goes by.
    last_index: u64,
    /// Replies of requests at or above `first_open`, by sequence number.
    replies: BTreeMap<u64, Reply>,
}

/// What a replica knows of a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// Never applied: apply it.
    New,
    /// Applied before: answer this, and do not apply it again.
    Answered(Reply),
    /// Applied, and its reply forgotten because the client said it no longer waits for it:
    /// nobody will read an answer, and it must not be applied again.
    Forgotten,
}

/// Every client's session in one group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sessions {
    clients: BTreeMap<u64, Session>,
}

impl Sessions {
    /// What this replica knows of `request`.
    pub fn check(&self, request: &RequestId) -> Seen {
        let Some(s) = self.clients.get(&request.client) else {
            return Seen::New;
        };
        if let Some(reply) = s.replies.get(&request.seq) {
            return Seen::Answered(reply.clone());
        }
        if request.seq < s.first_open {
            return Seen::Forgotten;
        }
        Seen::New
    }

    /// Records that `request`, at log index `index`, was applied and answered `reply`.
    /// Answers the client forgotten to make room, if any.
    pub fn record(&mut self, request: &RequestId, index: u64, reply: Reply) -> Option<u64> {
        let mut evicted = None;
        if !self.clients.contains_key(&request.client) && self.clients.len() >= MAX_CLIENTS {
            evicted = self.evict_one();
        }
        let s = self.clients.entry(request.client).or_default();
        s.last_index = s.last_index.max(index);
        // Only a watermark that moves forgets replies: walking a full window on every apply
        // would cost up to MAX_REPLIES_PER_CLIENT steps per write.
        if request.first_open > s.first_open {
            s.first_open = request.first_open;
            s.replies = s.replies.split_off(&s.first_open);
        }
        if request.seq >= s.first_open {
            s.replies.insert(request.seq, reply);
        }
        while s.replies.len() > MAX_REPLIES_PER_CLIENT {
            if let Some((&seq, _)) = s.replies.first_key_value() {
                s.replies.remove(&seq);
                s.first_open = s.first_open.max(seq + 1);
            }
        }
        evicted
    }

    /// One client's session, encoded, for the state engine; None if it is not remembered.
    pub fn encode_client(&self, client: u64) -> Option<Result<Vec<u8>, rmp_serde::encode::Error>> {
        self.clients.get(&client).map(rmp_serde::to_vec)
    }

    /// Adds a client's session as [`Self::encode_client`] encoded it.
    pub fn load_client(
        &mut self,
        client: u64,
        bytes: &[u8],
    ) -> Result<(), rmp_serde::decode::Error> {
        self.clients.insert(client, rmp_serde::from_slice(bytes)?);
        Ok(())
    }

    /// The clients remembered.
    pub fn clients(&self) -> impl Iterator<Item = u64> + '_ {
        self.clients.keys().copied()
    }

    /// Forgets the client heard from least recently (ties: the lowest id), which every
    /// replica picks alike.
    fn evict_one(&mut self) -> Option<u64> {
        let oldest = self
            .clients
            .iter()
            .min_by_key(|(id, s)| (s.last_index, **id))
            .map(|(id, _)| *id);
        if let Some(id) = oldest {
            self.clients.remove(&id);
        }
        oldest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(client: u64, seq: u64, first_open: u64) -> RequestId {
        RequestId {
            client,
            seq,
            first_open,
        }
    }

    fn reply(s: &str) -> Reply {
        Reply(s.as_bytes().to_vec())
    }

    #[test]
    fn a_retry_is_answered_with_the_first_reply_until_the_client_moves_on() {
        let mut s = Sessions::default();
        assert_eq!(s.check(&req(1, 0, 0)), Seen::New);
        s.record(&req(1, 0, 0), 10, reply("first"));
        assert_eq!(s.check(&req(1, 0, 0)), Seen::Answered(reply("first")));
        // Another client's request of the same number is its own.
        assert_eq!(s.check(&req(2, 0, 0)), Seen::New);
        // Requests in flight at once are remembered side by side.
        s.record(&req(1, 2, 0), 11, reply("two"));
        s.record(&req(1, 1, 0), 12, reply("one"));
        assert_eq!(s.check(&req(1, 1, 0)), Seen::Answered(reply("one")));
        // The client no longer waits for 0 and 1: their replies go, and their copies are
        // never applied again.
        s.record(&req(1, 3, 2), 13, reply("three"));
        assert_eq!(s.check(&req(1, 0, 0)), Seen::Forgotten);
        assert_eq!(s.check(&req(1, 1, 0)), Seen::Forgotten);
        assert_eq!(s.check(&req(1, 2, 2)), Seen::Answered(reply("two")));
        assert_eq!(s.check(&req(1, 4, 2)), Seen::New);
    }

    #[test]
    fn the_table_is_bounded_and_evicts_alike_everywhere() {
        let mut s = Sessions::default();
        for c in 0..MAX_CLIENTS as u64 + 10 {
            s.record(&req(c, 0, 0), c, reply("x"));
        }
        assert_eq!(s.clients.len(), MAX_CLIENTS);
        // The least recently heard from went first.
        assert_eq!(s.check(&req(0, 0, 0)), Seen::New);
        assert_eq!(s.check(&req(10, 0, 0)), Seen::Answered(reply("x")));
        // A client that never advances its watermark keeps a bounded window.
        let mut s = Sessions::default();
        for seq in 0..MAX_REPLIES_PER_CLIENT as u64 + 5 {
            s.record(&req(7, seq, 0), seq, Reply::default());
        }
        assert_eq!(s.clients[&7].replies.len(), MAX_REPLIES_PER_CLIENT);
        assert_eq!(s.check(&req(7, 0, 0)), Seen::Forgotten);
        // Replicas that applied the same log hold the same table.
        let copy: Sessions = rmp_serde::from_slice(&rmp_serde::to_vec(&s).unwrap()).unwrap();
        assert_eq!(copy, s);
    }
}
