//! The cluster id: a UUID that every node of one cluster holds in its data dir
//! (`CLUSTER_ID`) and sends with every node-to-node call, so that a node of another cluster,
//! or one pointed at the wrong peers, is refused rather than obeyed.
//!
//! A node on a new data dir takes the id of the peers it meets at its start-up check; when
//! none has one (a cluster forming, or a cluster of an earlier build) it derives the id from
//! the membership it was started with, as every member of a forming cluster does alike. The
//! id is then written durably and never changes.

use std::io;
use std::path::Path;

use crate::node::data_dir::write_durably;
use crate::node::error::NodeError;
use crate::node::shared::NodeCore;
use crate::raft::types::NodeId;

/// The file in the data dir.
pub const FILE: &str = "CLUSTER_ID";

/// Settles this node's cluster id: the stored one; else `adopted` (the peers' at the start-up
/// check); else the one derived from the configured membership. Stored before it is used.
pub(crate) fn settle(core: &NodeCore, adopted: Option<String>) -> Result<(), NodeError> {
    let dir = &core.config.data_dir;
    let err = |reason: String| NodeError::DataDir {
        path: dir.clone(),
        reason,
    };
    let (id, how) = match read(dir).map_err(|e| err(format!("cannot read {FILE}: {e}")))? {
        Some(id) => (id, None),
        None => match adopted {
            Some(id) if is_valid(&id) => (id, Some("taken from the peers")),
            Some(id) => return Err(err(format!("a peer sent {id:?}, not a cluster id"))),
            None => (
                derive(&core.config.peers),
                Some("derived from the membership"),
            ),
        },
    };
    if let Some(how) = how {
        write(dir, &id).map_err(|e| err(format!("cannot write {FILE}: {e}")))?;
        tracing::info!(cluster_id = %id, "cluster id {how}");
    }
    core.deps.network.peers.identity().set(&id).map_err(err)
}

/// The stored id, if any.
pub fn read(dir: &Path) -> io::Result<Option<String>> {
    match std::fs::read_to_string(dir.join(FILE)) {
        Ok(text) => {
            let id = text.trim();
            if is_valid(id) {
                Ok(Some(id.to_string()))
            } else {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{FILE} holds {id:?}, not a cluster id"),
                ))
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Stores `id` durably.
pub fn write(dir: &Path, id: &str) -> io::Result<()> {
    write_durably(dir, FILE, &format!("{id}\n"))
}

/// The id a forming cluster's members all derive from the same membership: a UUID (version 8,
/// RFC 9562) of the SHA-256 of the members' ids and addresses.
pub fn derive<'a>(members: impl IntoIterator<Item = (&'a NodeId, &'a String)>) -> String {
    let mut text = String::from("raftnode cluster\n");
    for (id, addr) in members {
        text.push_str(&format!("{id}={addr}\n"));
    }
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Whether `id` looks like a cluster id: 1 to 64 of `[0-9a-zA-Z-]`.
pub fn is_valid(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn members_derive_one_id_and_other_memberships_another() {
        let a = BTreeMap::from([(1, "h1:7070".to_string()), (2, "h2:7070".to_string())]);
        let b = BTreeMap::from([(1, "h1:7070".to_string()), (2, "h3:7070".to_string())]);
        let id = derive(&a);
        assert_eq!(id, derive(&a.clone()));
        assert_ne!(id, derive(&b));
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "8", "version 8: {id}");
        assert!(is_valid(&id));
    }

    #[test]
    fn the_file_round_trips_and_refuses_junk() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        write(dir.path(), "abc-123").unwrap();
        assert_eq!(read(dir.path()).unwrap().as_deref(), Some("abc-123"));
        std::fs::write(dir.path().join(FILE), "not an id!\n").unwrap();
        assert!(read(dir.path()).is_err());
    }
}
