//! What a group's snapshot is while openraft holds it: a file received from a leader, or a
//! frozen view of the state engine, written out into a file only when it is sent.
//!
//! Why a view: the state lives in the engine, which is made durable (synced) when a snapshot
//! is built, so openraft may purge the log behind it without a copy of the state being
//! written. A full copy is written only for a follower that needs one, as TiKV and
//! CockroachDB generate theirs. Building a file at every snapshot instead would rewrite a
//! group's whole state every few thousand entries: quadratic in its size.

use std::io;
use std::path::PathBuf;

use crate::raft::types::GroupId;
use crate::storage::engine::View;
use crate::storage::snapshot_file::SnapshotFile;
use crate::storage::snapshot_payload::write_pairs;

/// A snapshot's data.
pub enum SnapshotData {
    /// A snapshot file: received from a leader, or a view written out.
    File(SnapshotFile),
    /// A frozen view of the engine as of the snapshot's metadata.
    View(EngineView),
}

/// A view of one group's state, with what its file's metadata section will hold.
pub struct EngineView {
    pub(crate) view: View,
    pub(crate) group: GroupId,
    /// Where the file is written: the group's snapshot directory.
    pub(crate) dir: PathBuf,
    /// The file's metadata section, encoded.
    pub(crate) meta: Vec<u8>,
}

impl SnapshotData {
    /// The data as a file: a view is written into a temporary file, removed when the file
    /// is dropped. Blocking: it writes the group's whole state.
    pub fn into_file(self) -> io::Result<SnapshotFile> {
        match self {
            SnapshotData::File(f) => Ok(f),
            SnapshotData::View(v) => {
                let file = SnapshotFile::create(&v.dir, v.group, &v.meta, |out| {
                    write_pairs(&v.view, v.group, out)
                })?;
                Ok(file)
            }
        }
    }
}
