//! Durable snapshot files, one per group: `snapshots/<group>.snap`. A snapshot is written to a
//! temporary file, fsynced, renamed into place and the directory fsynced, so that a crash leaves
//! either the old snapshot or the new one, never a mix. A checksum guards what is read back.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::raft::types::GroupId;

const MAGIC: &[u8; 8] = b"RNSNAP01";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("snapshot file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("snapshot file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

pub fn path(dir: &Path, group: GroupId) -> PathBuf {
    dir.join(format!("{group}.snap"))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotFileError + '_ {
    move |source| SnapshotFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub fn save(dir: &Path, group: GroupId, payload: &[u8]) -> Result<(), SnapshotFileError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let dest = path(dir, group);
    let tmp = dest.with_extension("snap.tmp");
    let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
    let mut header = Vec::with_capacity(20);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    header.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    f.write_all(&header).map_err(io_err(&tmp))?;
    f.write_all(payload).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
    sync_dir(dir)
}

pub fn load(dir: &Path, group: GroupId) -> Result<Option<Vec<u8>>, SnapshotFileError> {
    let p = path(dir, group);
    let bytes = match fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&p)(e)),
    };
    let corrupt = |reason: &str| SnapshotFileError::Corrupt {
        path: p.clone(),
        reason: reason.to_string(),
    };
    if bytes.len() < 20 || &bytes[..8] != MAGIC {
        return Err(corrupt("bad header"));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[8..16]);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[16..20]);
    let payload = &bytes[20..];
    if u64::from_le_bytes(len) != payload.len() as u64 {
        return Err(corrupt("length mismatch"));
    }
    if crc32fast::hash(payload) != u32::from_le_bytes(crc) {
        return Err(corrupt("checksum mismatch"));
    }
    Ok(Some(payload.to_vec()))
}

pub fn remove(dir: &Path, group: GroupId) -> Result<(), SnapshotFileError> {
    let p = path(dir, group);
    match fs::remove_file(&p) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(&p)(e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), SnapshotFileError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path(), 1).unwrap().is_none());
        save(dir.path(), 1, b"hello").unwrap();
        assert_eq!(load(dir.path(), 1).unwrap().unwrap(), b"hello");
        let p = path(dir.path(), 1);
        let mut bytes = fs::read(&p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&p, bytes).unwrap();
        let err = load(dir.path(), 1).unwrap_err().to_string();
        assert!(err.contains("1.snap") && err.contains("checksum"), "{err}");
        remove(dir.path(), 1).unwrap();
        assert!(load(dir.path(), 1).unwrap().is_none());
    }
}
