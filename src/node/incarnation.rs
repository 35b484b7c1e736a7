//! Which data dir this node runs on, and which data dirs its peers ran on: a random id drawn
//! when a data dir is created (its incarnation), and the incarnation this node last knew for
//! each peer. A node id alone cannot tell a restart from a wiped volume; the incarnation can,
//! since a wiped volume draws a new one while its peers still remember the old.
//!
//! Both live in small files of the data dir, written durably: `INCARNATION` holds this dir's
//! id, with the word `pending` until the start-up check ([`crate::node::meet`]) has settled
//! what the dir is; `PEERS` holds one `node incarnation` line per peer met.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::node::data_dir::write_durably;
use crate::node::error::NodeError;
use crate::raft::types::{GroupId, NodeId};
use crate::rpc::messages::{Acquaintance, Introduction};

const OWN_FILE: &str = "INCARNATION";
const PEERS_FILE: &str = "PEERS";
const PENDING: &str = "pending";

/// This data dir's incarnation and the peers' last known ones.
pub(crate) struct Incarnations {
    dir: PathBuf,
    own: u64,
    pending: Mutex<bool>,
    peers: Mutex<BTreeMap<NodeId, u64>>,
}

fn err(dir: &Path, reason: String) -> NodeError {
    NodeError::DataDir {
        path: dir.to_path_buf(),
        reason,
    }
}

/// A random incarnation; never 0, so that 0 can mean "none" on the wire of later versions.
fn draw() -> io::Result<u64> {
    loop {
        let n = getrandom::u64().map_err(|e| io::Error::other(e.to_string()))?;
        if n != 0 {
            return Ok(n);
        }
    }
}

impl Incarnations {
    /// Reads the data dir's incarnation files, drawing an incarnation when there is none. A
    /// `fresh` data dir (nothing in it before this start) gets a pending one; a data dir with
    /// state but no incarnation (written by an earlier build) gets a settled one, since its
    /// state is its own.
    pub(crate) fn open(dir: &Path, fresh: bool) -> Result<Incarnations, NodeError> {
        let own_path = dir.join(OWN_FILE);
        let (own, pending) = match fs::read_to_string(&own_path) {
            Ok(text) => parse_own(&text).ok_or_else(|| {
                err(
                    dir,
                    format!("{} is not an incarnation: {text:?}", own_path.display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let own =
                    draw().map_err(|e| err(dir, format!("cannot draw an incarnation: {e}")))?;
                write_durably(dir, OWN_FILE, &own_text(own, fresh))
                    .map_err(|e| err(dir, format!("cannot write {OWN_FILE}: {e}")))?;
                (own, fresh)
            }
            Err(e) => return Err(err(dir, format!("cannot read {}: {e}", own_path.display()))),
        };
        let peers_path = dir.join(PEERS_FILE);
        let peers = match fs::read_to_string(&peers_path) {
            Ok(text) => parse_peers(&text)
                .map_err(|line| err(dir, format!("{}: bad line {line:?}", peers_path.display())))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(err(
                    dir,
                    format!("cannot read {}: {e}", peers_path.display()),
                ))
            }
        };
        Ok(Incarnations {
            dir: dir.to_path_buf(),
            own,
            pending: Mutex::new(pending),
            peers: Mutex::new(peers),
        })
    }

    /// This data dir's incarnation.
    pub(crate) fn own(&self) -> u64 {
        self.own
    }

    /// Whether the start-up check has yet to settle what this data dir is.
    pub(crate) fn pending(&self) -> bool {
        *self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that the start-up check has settled: the word `pending` goes.
    pub(crate) fn settle(&self) -> io::Result<()> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if *pending {
            write_durably(&self.dir, OWN_FILE, &own_text(self.own, false))?;
            *pending = false;
        }
        Ok(())
    }

    /// The incarnation this node last knew `node` by.
    pub(crate) fn known(&self, node: NodeId) -> Option<u64> {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&node)
            .copied()
    }

    /// Remembers `node` by `incarnation`, durably; a no-op when it already was.
    pub(crate) fn record(&self, node: NodeId, incarnation: u64) -> io::Result<()> {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if peers.get(&node) == Some(&incarnation) {
            return Ok(());
        }
        let mut next = peers.clone();
        next.insert(node, incarnation);
        write_durably(&self.dir, PEERS_FILE, &peers_text(&next))?;
        *peers = next;
        Ok(())
    }

    /// This node's answer to a peer's introduction: what it knows of that peer's data dir.
    /// A settled peer is remembered as it is now (after a wipe it settles only once its
    /// replicas were marked erased, so the new data dir replaces the old). `groups_with` lists
    /// the groups running here with a given node as a member; it is asked only when that
    /// node's data dir was wiped.
    pub(crate) fn answer(
        &self,
        me: NodeId,
        intro: Introduction,
        groups_with: impl FnOnce(NodeId) -> Vec<GroupId>,
    ) -> Result<Acquaintance, String> {
        let known = self.known(intro.node);
        if !intro.pending && known != Some(intro.incarnation) {
            self.record(intro.node, intro.incarnation).map_err(|e| {
                format!(
                    "node {me} cannot record node {}'s data dir: {e}",
                    intro.node
                )
            })?;
            if known.is_some() {
                tracing::info!(
                    peer = intro.node,
                    "peer node runs on a new data dir since it was wiped"
                );
            }
        }
        let wiped = intro.pending && known.is_some_and(|k| k != intro.incarnation);
        let groups = if wiped {
            tracing::warn!(
                peer = intro.node,
                "peer node restarted on a new data dir: its data was wiped, and its replicas rejoin"
            );
            groups_with(intro.node)
        } else {
            Vec::new()
        };
        Ok(Acquaintance {
            known: if intro.pending {
                known
            } else {
                Some(intro.incarnation)
            },
            incarnation: self.own,
            pending: self.pending(),
            groups,
            cluster: None,
        })
    }
}

fn own_text(own: u64, pending: bool) -> String {
    if pending {
        format!("{own:016x} {PENDING}\n")
    } else {
        format!("{own:016x}\n")
    }
}

fn parse_own(text: &str) -> Option<(u64, bool)> {
    let mut words = text.split_whitespace();
    let own = u64::from_str_radix(words.next()?, 16).ok()?;
    let pending = match words.next() {
        None => false,
        Some(PENDING) => true,
        Some(_) => return None,
    };
    (words.next().is_none() && own != 0).then_some((own, pending))
}

fn peers_text(peers: &BTreeMap<NodeId, u64>) -> String {
    peers
        .iter()
        .map(|(node, inc)| format!("{node} {inc:016x}\n"))
        .collect()
}

/// The peers file's map, or the first line that does not parse.
fn parse_peers(text: &str) -> Result<BTreeMap<NodeId, u64>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut words = line.split_whitespace();
            let node = words.next().and_then(|w| w.parse::<NodeId>().ok());
            let inc = words.next().and_then(|w| u64::from_str_radix(w, 16).ok());
            match (node, inc, words.next()) {
                (Some(node), Some(inc), None) => Ok((node, inc)),
                _ => Err(line.to_string()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_dir_is_pending_until_settled_and_remembers_peers() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let a = Incarnations::open(d, true).unwrap();
        assert!(a.pending());
        let own = a.own();
        a.record(2, 0xabc).unwrap();
        a.record(3, 7).unwrap();
        a.record(2, 0xdef).unwrap();
        // A crash before the check settles: still pending, same incarnation.
        let b = Incarnations::open(d, false).unwrap();
        assert_eq!((b.own(), b.pending()), (own, true));
        assert_eq!(
            (b.known(2), b.known(3), b.known(4)),
            (Some(0xdef), Some(7), None)
        );
        b.settle().unwrap();
        let c = Incarnations::open(d, false).unwrap();
        assert_eq!((c.own(), c.pending()), (own, false));
    }

    #[test]
    fn a_dir_with_state_from_an_earlier_build_is_settled_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = Incarnations::open(dir.path(), false).unwrap();
        assert!(!a.pending());
        let again = Incarnations::open(dir.path(), true).unwrap();
        assert_eq!((again.own(), again.pending()), (a.own(), false));
    }

    #[test]
    fn damaged_files_are_refused_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(OWN_FILE), "zz\n").unwrap();
        let e = Incarnations::open(dir.path(), false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("INCARNATION"), "{e}");
        fs::write(dir.path().join(OWN_FILE), "00000000000000ff\n").unwrap();
        fs::write(dir.path().join(PEERS_FILE), "2 ab\nthree 4\n").unwrap();
        let e = Incarnations::open(dir.path(), false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("three 4"), "{e}");
        assert_eq!(parse_own("0 pending"), None);
        assert_eq!(parse_own("ff maybe"), None);
    }
}
