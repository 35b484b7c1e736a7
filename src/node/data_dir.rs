//! The data dir's guards, checked before storage opens: one process at a time (a lock the OS
//! releases when the process dies, so kill -9 never leaves a stale lock), one node id for its
//! whole life, and one on-disk format that this build can read.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::node::error::NodeError;
use crate::raft::types::NodeId;

/// The on-disk format this build writes and reads. Format 1 stored the KV store's commands in
/// the log itself; format 2 stores any state machine's commands as opaque bytes; format 3 adds
/// the state engine (`state/`) and snapshot files whose payload is the engine's pairs.
pub const FORMAT: u32 = 3;
/// The older format this build reads, and upgrades in place at start: its snapshot files are
/// restored into the engine. A build of that format cannot read what this one writes, which
/// is why the marker moves on.
const UPGRADES_FROM: u32 = 2;
const FORMAT_FILE: &str = "FORMAT";

/// Holds the data dir's lock for the life of the node.
pub struct DirLock {
    _file: fs::File,
}

fn err(dir: &Path, reason: String) -> NodeError {
    NodeError::DataDir {
        path: dir.to_path_buf(),
        reason,
    }
}

/// Creates the data dir if needed and takes its lock.
pub fn lock(dir: &Path) -> Result<DirLock, NodeError> {
    crate::storage::create_dir_durably(dir).map_err(|e| err(dir, e.to_string()))?;
    let lock = dir.join("LOCK");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(|e| err(dir, format!("cannot open {}: {e}", lock.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock { _file: file }),
        Err(fs::TryLockError::WouldBlock) => Err(NodeError::Locked {
            path: dir.to_path_buf(),
            lock,
        }),
        Err(fs::TryLockError::Error(e)) => {
            Err(err(dir, format!("cannot lock {}: {e}", lock.display())))
        }
    }
}

/// Writes `text` to `dir/name` durably: a temporary file, fsynced, renamed, the dir fsynced.
pub(crate) fn write_durably(dir: &Path, name: &str, text: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    fs::File::open(dir)?.sync_all()
}

/// Refuses a data dir written by another node id: replaying someone else's votes would break
/// Raft's safety. Also refuses a format this build cannot read, rather than misreading it.
/// Returns whether the data dir is fresh (never used by any node).
pub fn check_identity(dir: &Path, node_id: NodeId) -> Result<bool, NodeError> {
    let path = dir.join("NODE_ID");
    let has_wal = dir.join("wal").exists();
    let fresh = match fs::read_to_string(&path) {
        Ok(s) => {
            let found: NodeId = s
                .trim()
                .parse()
                .map_err(|_| err(dir, format!("{} is not a node id: {s:?}", path.display())))?;
            if found != node_id {
                return Err(err(
                    dir,
                    format!("it belongs to node {found}, but this is node {node_id}"),
                ));
            }
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_durably(dir, "NODE_ID", &format!("{node_id}\n"))
                .map_err(|e| err(dir, format!("cannot write NODE_ID: {e}")))?;
            !has_wal
        }
        Err(e) => return Err(err(dir, format!("cannot read {}: {e}", path.display()))),
    };
    check_format(dir, fresh || !has_wal)?;
    Ok(fresh)
}

/// Writes the format marker on a data dir without data; checks it on one with data.
fn check_format(dir: &Path, empty: bool) -> Result<(), NodeError> {
    let path = dir.join(FORMAT_FILE);
    match fs::read_to_string(&path) {
        Ok(s) => match s.trim().parse::<u32>() {
            Ok(FORMAT) => Ok(()),
            Ok(UPGRADES_FROM) => {
                tracing::info!(
                    dir = %dir.display(),
                    from = UPGRADES_FROM,
                    to = FORMAT,
                    "upgrading the data dir's format in place"
                );
                write_durably(dir, FORMAT_FILE, &format!("{FORMAT}\n"))
                    .map_err(|e| err(dir, format!("cannot write {FORMAT_FILE}: {e}")))
            }
            Ok(other) => Err(err(
                dir,
                format!(
                    "its data is in format {other}, and this build reads format {FORMAT}; \
                     run the build that wrote it, or start on an empty data dir"
                ),
            )),
            Err(_) => Err(err(
                dir,
                format!("{} is not a format number: {s:?}", path.display()),
            )),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !empty {
                return Err(err(
                    dir,
                    format!(
                        "its data was written by an earlier raftnode (format 1, with no FORMAT \
                         file), which this build (format {FORMAT}) cannot read; run the build \
                         that wrote it, or start on an empty data dir"
                    ),
                ));
            }
            write_durably(dir, FORMAT_FILE, &format!("{FORMAT}\n"))
                .map_err(|e| err(dir, format!("cannot write {FORMAT_FILE}: {e}")))
        }
        Err(e) => Err(err(dir, format!("cannot read {}: {e}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_format() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(check_identity(d, 3).unwrap(), "a new dir is fresh");
        assert_eq!(fs::read_to_string(d.join("FORMAT")).unwrap(), "3\n");
        fs::create_dir(d.join("wal")).unwrap();
        assert!(!check_identity(d, 3).unwrap(), "a used dir is not");
        let e = check_identity(d, 4).unwrap_err().to_string();
        assert!(e.contains("belongs to node 3"), "{e}");
        fs::write(d.join("FORMAT"), "2\n").unwrap();
        assert!(
            !check_identity(d, 3).unwrap(),
            "format 2 is upgraded in place"
        );
        assert_eq!(fs::read_to_string(d.join("FORMAT")).unwrap(), "3\n");
        fs::write(d.join("FORMAT"), "9\n").unwrap();
        let e = check_identity(d, 3).unwrap_err().to_string();
        assert!(e.contains("format 9"), "{e}");
        fs::remove_file(d.join("FORMAT")).unwrap();
        let e = check_identity(d, 3).unwrap_err().to_string();
        assert!(e.contains("earlier raftnode"), "{e}");
    }

    #[test]
    fn a_second_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _held = lock(dir.path()).unwrap();
        assert!(matches!(lock(dir.path()), Err(NodeError::Locked { .. })));
    }
}
