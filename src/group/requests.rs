//! This node's client session in one group: it numbers the requests it proposes on behalf of
//! its callers, and knows which of them still wait for an answer. A copy of a request proposed
//! again (after a leader died, a forward failed, or openraft discarded it) carries the same
//! number, and the state machine's session table answers it with the first reply
//! (`crate::raft::sessions`).

use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use crate::raft::types::{GroupId, NodeId, RequestId};

/// The numbering of one group instance's requests.
#[derive(Debug)]
pub struct Requests {
    client: u64,
    state: Mutex<Numbering>,
}

#[derive(Debug, Default)]
struct Numbering {
    next: u64,
    open: BTreeSet<u64>,
}

impl Requests {
    /// A session of its own: the client id is random, so that no other node, group instance or
    /// process (this one restarted) shares it.
    pub fn new(node: NodeId, group: GroupId) -> Requests {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        (node, group, std::time::SystemTime::now()).hash(&mut h);
        std::process::id().hash(&mut h);
        Requests {
            client: h.finish(),
            state: Mutex::new(Numbering::default()),
        }
    }

    /// Numbers a new request; it counts as waiting until the returned handle drops.
    pub fn open(self: &Arc<Self>) -> OpenRequest {
        let mut st = self.lock();
        let seq = st.next;
        st.next += 1;
        st.open.insert(seq);
        let first_open = st.open.first().copied().unwrap_or(seq);
        OpenRequest {
            id: RequestId {
                client: self.client,
                seq,
                first_open,
            },
            requests: self.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Numbering> {
        // Poisoning would mean a panic between two set operations; the set stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A request waiting for its answer.
#[derive(Debug)]
pub struct OpenRequest {
    /// Its identity, the same in every copy proposed.
    pub id: RequestId,
    requests: Arc<Requests>,
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.requests.lock().open.remove(&self.id.seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_is_the_oldest_request_still_waiting() {
        let r = Arc::new(Requests::new(1, 1));
        let a = r.open();
        let b = r.open();
        assert_eq!((a.id.seq, b.id.seq), (0, 1));
        assert_eq!(b.id.first_open, 0);
        drop(a);
        let c = r.open();
        assert_eq!((c.id.seq, c.id.first_open), (2, 1));
        drop(b);
        drop(c);
        let d = r.open();
        assert_eq!((d.id.seq, d.id.first_open), (3, 3));
        assert_ne!(Requests::new(1, 1).client, r.client);
    }
}
