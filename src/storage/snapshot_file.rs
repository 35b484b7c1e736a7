//! Durable snapshot files, one per group: `snapshots/<group>.snap`.
//!
//! A snapshot is streamed into a temporary file of its own (a unique name, so that a snapshot
//! being built and one being installed never share a file), fsynced, renamed into place and the
//! directory fsynced: a crash leaves the old snapshot or the new one, never a mix. The payload is
//! never held in memory whole; a checksum over it is kept while it streams by.
//!
//! Format: `magic "RNSNAP02" | meta_len: u32 LE | meta | payload | payload_len: u64 LE |
//! crc32(meta ++ payload): u32 LE | "RNSNEND\0"`. The trailer comes last so that the writer
//! needs no seek; the reader finds it at the end of the file.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ids::GroupId;

const MAGIC: &[u8; 8] = b"RNSNAP02";
const END: &[u8; 8] = b"RNSNEND\0";
const HEADER: u64 = 12;
const TRAILER: u64 = 20;
/// Snapshot metadata is a log id and a membership: small. A larger length is damage.
const MAX_META: u32 = 16 << 20;
const TMP_SUFFIX: &str = ".snap.tmp";

/// What can go wrong with a snapshot file.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    /// The file could not be read, written or renamed.
    #[error("snapshot file {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The file's framing or checksum does not hold.
    #[error("snapshot file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What does not hold.
        reason: String,
    },
    /// The state machine's writer or reader failed while streaming.
    #[error("snapshot file {path}: the state machine failed: {source}")]
    StateMachine {
        /// The file.
        path: PathBuf,
        /// What the state machine reported.
        source: io::Error,
    },
}

impl From<SnapshotFileError> for io::Error {
    fn from(e: SnapshotFileError) -> io::Error {
        let kind = match &e {
            SnapshotFileError::Corrupt { .. } => io::ErrorKind::InvalidData,
            SnapshotFileError::Io { source, .. }
            | SnapshotFileError::StateMachine { source, .. } => source.kind(),
        };
        io::Error::new(kind, e.to_string())
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotFileError + '_ {
    move |source| SnapshotFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where group `group`'s current snapshot lives.
pub fn path(dir: &Path, group: GroupId) -> PathBuf {
    dir.join(format!("{group}.snap"))
}

/// A fresh temporary name: process id and a counter, so that concurrent writers never collide.
fn tmp_path(dir: &Path, group: GroupId) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{group}.{}-{n}{TMP_SUFFIX}", std::process::id()))
}

/// An open snapshot file, current or not yet installed. Holding the file open keeps its
/// contents readable even when a newer snapshot replaces it under the same name.
#[derive(Debug)]
pub struct SnapshotFile {
    path: PathBuf,
    file: File,
    len: u64,
}

/// Counts what passes through and checksums it.
struct Crc<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl SnapshotFile {
    /// Streams a new current snapshot of `group`: `meta`, then whatever `payload` writes.
    /// Durable and in place when this returns.
    pub fn write(
        dir: &Path,
        group: GroupId,
        meta: &[u8],
        payload: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<SnapshotFile, SnapshotFileError> {
        let mut f = Self::create(dir, group, meta, payload)?;
        if let Err(e) = f.commit(dir, group) {
            f.discard();
            return Err(e);
        }
        Ok(f)
    }

    /// Streams a snapshot of `group` into a fresh temporary file, durable but not current:
    /// [`Self::commit`] makes it current, [`Self::discard`] removes it.
    pub fn create(
        dir: &Path,
        group: GroupId,
        meta: &[u8],
        payload: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<SnapshotFile, SnapshotFileError> {
        create_dir(dir)?;
        let tmp = tmp_path(dir, group);
        let result = write_tmp(&tmp, meta, payload);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Removes a file that was never made current (a temporary one); a no-op on a current one.
    /// Dropping it does the same: a build overtaken by another, an install that openraft
    /// refused or a transfer cut off never leave a temporary file behind.
    pub fn discard(self) {}

    fn is_tmp(&self) -> bool {
        self.path.extension().is_some_and(|e| e == "tmp")
    }

    /// Stores a snapshot file as received from a leader in one piece, not yet installed:
    /// [`Self::verify`] it, then [`Self::commit`] it.
    pub fn receive(
        dir: &Path,
        group: GroupId,
        bytes: &[u8],
    ) -> Result<SnapshotFile, SnapshotFileError> {
        let mut r = Self::receiving(dir, group)?;
        r.write(bytes)?;
        r.finish()
    }

    /// Starts receiving a snapshot file of `group` piece by piece, into a fresh temporary
    /// file that is removed unless [`Receiving::finish`] completes.
    pub fn receiving(dir: &Path, group: GroupId) -> Result<Receiving, SnapshotFileError> {
        create_dir(dir)?;
        let path = tmp_path(dir, group);
        let file = File::create(&path).map_err(io_err(&path))?;
        Ok(Receiving {
            path,
            file: Some(file),
            written: 0,
        })
    }

    /// A copy of this file in `dir`, not yet installed: for a snapshot that lives elsewhere
    /// (another store's directory), which an install must not take away from its owner.
    pub fn copy_into(&self, dir: &Path, group: GroupId) -> Result<SnapshotFile, SnapshotFileError> {
        create_dir(dir)?;
        let tmp = tmp_path(dir, group);
        let copied = (|| {
            let mut from = &self.file;
            from.seek(SeekFrom::Start(0))?;
            let mut to = File::create(&tmp)?;
            io::copy(&mut from, &mut to)?;
            to.sync_all()
        })();
        if let Err(e) = copied {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&tmp)(e));
        }
        Self::open_path(tmp)
    }

    /// Group `group`'s current snapshot, if it has one.
    pub fn open(dir: &Path, group: GroupId) -> Result<Option<SnapshotFile>, SnapshotFileError> {
        let p = path(dir, group);
        match File::open(&p) {
            Ok(_) => Self::open_path(p).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    fn open_path(path: PathBuf) -> Result<SnapshotFile, SnapshotFileError> {
        let file = File::open(&path).map_err(io_err(&path))?;
        let len = file.metadata().map_err(io_err(&path))?.len();
        if len < HEADER + TRAILER {
            return Err(corrupt(&path, "shorter than its framing"));
        }
        Ok(SnapshotFile { path, file, len })
    }

    /// The file's path (a temporary one until committed).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file holds no payload (never true of a file that passed `open`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn meta_len(&self) -> Result<u32, SnapshotFileError> {
        let mut header = [0u8; HEADER as usize];
        self.read_at(0, &mut header)?;
        if &header[..8] != MAGIC {
            return Err(corrupt(&self.path, "bad magic"));
        }
        let meta_len = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        if meta_len > MAX_META || HEADER + meta_len as u64 + TRAILER > self.len {
            return Err(corrupt(&self.path, "metadata length out of bounds"));
        }
        Ok(meta_len)
    }

    fn read_at(&self, at: u64, buf: &mut [u8]) -> Result<(), SnapshotFileError> {
        let mut f = &self.file;
        f.seek(SeekFrom::Start(at))
            .and_then(|_| f.read_exact(buf))
            .map_err(io_err(&self.path))
    }

    /// The metadata bytes, as [`Self::write`] was given them.
    pub fn meta(&self) -> Result<Vec<u8>, SnapshotFileError> {
        let meta_len = self.meta_len()?;
        let mut meta = vec![0u8; meta_len as usize];
        self.read_at(HEADER, &mut meta)?;
        Ok(meta)
    }

    /// Reads the whole file once and checks its framing and checksum.
    pub fn verify(&self) -> Result<(), SnapshotFileError> {
        let meta_len = self.meta_len()? as u64;
        let mut trailer = [0u8; TRAILER as usize];
        self.read_at(self.len - TRAILER, &mut trailer)?;
        if &trailer[12..] != END {
            return Err(corrupt(&self.path, "bad end marker (truncated?)"));
        }
        let payload_len = u64::from_le_bytes(trailer[..8].try_into().unwrap_or_default());
        let crc = u32::from_le_bytes(trailer[8..12].try_into().unwrap_or_default());
        if HEADER + meta_len + payload_len + TRAILER != self.len {
            return Err(corrupt(&self.path, "length mismatch"));
        }
        let mut f = &self.file;
        f.seek(SeekFrom::Start(HEADER))
            .map_err(io_err(&self.path))?;
        let mut hasher = crc32fast::Hasher::new();
        let mut body = BufReader::with_capacity(1 << 20, f.take(meta_len + payload_len));
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = body.read(&mut buf).map_err(io_err(&self.path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        if hasher.finalize() != crc {
            return Err(corrupt(&self.path, "checksum mismatch"));
        }
        Ok(())
    }

    /// Streams the payload to `restore`. Call [`Self::verify`] first: this only frames.
    pub fn read_payload<T>(
        &self,
        restore: impl FnOnce(&mut dyn Read) -> io::Result<T>,
    ) -> Result<T, SnapshotFileError> {
        let meta_len = self.meta_len()? as u64;
        let payload_len = self.len - HEADER - meta_len - TRAILER;
        let mut f = &self.file;
        f.seek(SeekFrom::Start(HEADER + meta_len))
            .map_err(io_err(&self.path))?;
        let mut reader = BufReader::with_capacity(1 << 20, f.take(payload_len));
        restore(&mut reader).map_err(|source| SnapshotFileError::StateMachine {
            path: self.path.clone(),
            source,
        })
    }

    /// `len` bytes of the file from `at`, to send to a follower piece by piece. Positioned
    /// reads: concurrent senders of one file never move each other's place.
    pub fn read_range(&self, at: u64, len: usize) -> Result<Vec<u8>, SnapshotFileError> {
        use std::os::unix::fs::FileExt;
        if at.saturating_add(len as u64) > self.len {
            return Err(corrupt(&self.path, "read past the end"));
        }
        let mut out = vec![0u8; len];
        self.file
            .read_exact_at(&mut out, at)
            .map_err(io_err(&self.path))?;
        Ok(out)
    }

    /// The whole file.
    pub fn read_all(&self) -> Result<Vec<u8>, SnapshotFileError> {
        self.read_range(0, self.len as usize)
    }

    /// Makes this file group `group`'s current snapshot (a no-op when it already is).
    pub fn commit(&mut self, dir: &Path, group: GroupId) -> Result<(), SnapshotFileError> {
        let dest = path(dir, group);
        if self.path == dest {
            return Ok(());
        }
        fs::rename(&self.path, &dest).map_err(io_err(&dest))?;
        sync_dir(dir)?;
        self.path = dest;
        Ok(())
    }
}

impl Drop for SnapshotFile {
    fn drop(&mut self) {
        if self.is_tmp() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A snapshot file on its way in from a leader: pieces are appended in order, then
/// [`Self::finish`] makes it durable. Dropped unfinished (the stream broke, the leader went
/// away), it removes its temporary file.
#[derive(Debug)]
pub struct Receiving {
    path: PathBuf,
    file: Option<File>,
    written: u64,
}

impl Receiving {
    /// Bytes appended so far: where the next piece must start.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends one piece.
    pub fn write(&mut self, data: &[u8]) -> Result<(), SnapshotFileError> {
        let Some(f) = self.file.as_mut() else {
            return Err(corrupt(&self.path, "written after it was finished"));
        };
        f.write_all(data).map_err(io_err(&self.path))?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Makes what was received durable and opens it, still temporary: the install then
    /// verifies and commits it.
    pub fn finish(mut self) -> Result<SnapshotFile, SnapshotFileError> {
        if let Some(f) = self.file.take() {
            f.sync_all().map_err(io_err(&self.path))?;
        }
        // The opened file owns the temporary name from here on.
        let path = std::mem::take(&mut self.path);
        SnapshotFile::open_path(path.clone()).inspect_err(|_| {
            let _ = fs::remove_file(&path);
        })
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn create_dir(dir: &Path) -> Result<(), SnapshotFileError> {
    fs::create_dir_all(dir).map_err(io_err(dir))
}

fn write_tmp(
    tmp: &Path,
    meta: &[u8],
    payload: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<SnapshotFile, SnapshotFileError> {
    let file = File::create(tmp).map_err(io_err(tmp))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let meta_len = u32::try_from(meta.len())
        .ok()
        .filter(|l| *l <= MAX_META)
        .ok_or_else(|| corrupt(tmp, "metadata too large"))?;
    w.write_all(MAGIC)
        .and_then(|()| w.write_all(&meta_len.to_le_bytes()))
        .map_err(io_err(tmp))?;
    let mut body = Crc {
        inner: w,
        hasher: crc32fast::Hasher::new(),
        bytes: 0,
    };
    body.write_all(meta).map_err(io_err(tmp))?;
    payload(&mut body).map_err(|source| SnapshotFileError::StateMachine {
        path: tmp.to_path_buf(),
        source,
    })?;
    let payload_len = body.bytes - meta.len() as u64;
    let crc = body.hasher.finalize();
    let mut w = body.inner;
    w.write_all(&payload_len.to_le_bytes())
        .and_then(|()| w.write_all(&crc.to_le_bytes()))
        .and_then(|()| w.write_all(END))
        .map_err(io_err(tmp))?;
    let file = w.into_inner().map_err(|e| io_err(tmp)(e.into_error()))?;
    file.sync_all().map_err(io_err(tmp))?;
    drop(file);
    SnapshotFile::open_path(tmp.to_path_buf())
}

fn corrupt(path: &Path, reason: &str) -> SnapshotFileError {
    SnapshotFileError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Removes group `group`'s snapshot (an operator's purge).
pub fn remove(dir: &Path, group: GroupId) -> Result<(), SnapshotFileError> {
    let p = path(dir, group);
    match fs::remove_file(&p) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(&p)(e)),
    }
}

/// Removes temporary files a crash left behind (builds or installs in flight); returns how
/// many. Call before any group starts.
pub fn remove_leftovers(dir: &Path) -> Result<usize, SnapshotFileError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        if name.to_str().is_some_and(|n| n.ends_with(TMP_SUFFIX)) {
            let p = entry.path();
            fs::remove_file(&p).map_err(io_err(&p))?;
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

fn sync_dir(dir: &Path) -> Result<(), SnapshotFileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_hello(dir: &Path, group: GroupId) -> SnapshotFile {
        SnapshotFile::write(dir, group, b"meta", |w| w.write_all(b"hello")).unwrap()
    }

    fn payload(f: &SnapshotFile) -> Vec<u8> {
        f.read_payload(|r| {
            let mut v = Vec::new();
            r.read_to_end(&mut v)?;
            Ok(v)
        })
        .unwrap()
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert!(SnapshotFile::open(dir.path(), 1).unwrap().is_none());
        let f = write_hello(dir.path(), 1);
        assert_eq!(f.path(), path(dir.path(), 1));
        let f = SnapshotFile::open(dir.path(), 1).unwrap().unwrap();
        f.verify().unwrap();
        assert_eq!(f.meta().unwrap(), b"meta");
        assert_eq!(payload(&f), b"hello");
        remove(dir.path(), 1).unwrap();
        assert!(SnapshotFile::open(dir.path(), 1).unwrap().is_none());
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let f = write_hello(dir.path(), 1);
        let clean = f.read_all().unwrap();
        for at in 0..clean.len() {
            let mut bytes = clean.clone();
            bytes[at] ^= 0x10;
            let r = SnapshotFile::receive(dir.path(), 2, &bytes).and_then(|f| f.verify());
            assert!(r.is_err(), "flip at {at} went unnoticed");
        }
        // Truncation too.
        let r = SnapshotFile::receive(dir.path(), 2, &clean[..clean.len() - 1])
            .and_then(|f| f.verify());
        assert!(r.is_err());
    }

    #[test]
    fn received_file_installs_by_commit_and_leftovers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = write_hello(dir.path(), 1).read_all().unwrap();
        let mut got = SnapshotFile::receive(dir.path(), 7, &bytes).unwrap();
        got.verify().unwrap();
        assert!(SnapshotFile::open(dir.path(), 7).unwrap().is_none());
        got.commit(dir.path(), 7).unwrap();
        assert_eq!(
            payload(&SnapshotFile::open(dir.path(), 7).unwrap().unwrap()),
            b"hello"
        );
        // A received file that was never installed is removed when dropped...
        drop(SnapshotFile::receive(dir.path(), 8, &bytes).unwrap());
        assert_eq!(remove_leftovers(dir.path()).unwrap(), 0);
        // ...and what a crash left behind goes at the next start.
        std::mem::forget(SnapshotFile::receive(dir.path(), 8, &bytes).unwrap());
        assert_eq!(remove_leftovers(dir.path()).unwrap(), 1);
        assert_eq!(remove_leftovers(dir.path()).unwrap(), 0);
    }

    #[test]
    fn pieces_received_in_order_make_the_file_and_a_broken_stream_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let sent = write_hello(dir.path(), 1);
        let mut r = SnapshotFile::receiving(dir.path(), 2).unwrap();
        let mut at = 0;
        while at < sent.len() {
            let n = 7.min((sent.len() - at) as usize);
            r.write(&sent.read_range(at, n).unwrap()).unwrap();
            at += n as u64;
        }
        assert_eq!(r.written(), sent.len());
        let got = r.finish().unwrap();
        got.verify().unwrap();
        assert_eq!(payload(&got), b"hello");
        assert!(sent.read_range(sent.len() - 1, 2).is_err());
        drop(got);
        let mut broken = SnapshotFile::receiving(dir.path(), 3).unwrap();
        broken.write(b"RNSNAP02").unwrap();
        drop(broken);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("1.snap")]);
    }

    #[test]
    fn a_failing_state_machine_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = SnapshotFile::write(dir.path(), 1, b"m", |_| Err(io::Error::other("boom")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("boom"), "{err}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_open_handle_survives_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let old = write_hello(dir.path(), 1);
        SnapshotFile::write(dir.path(), 1, b"meta", |w| w.write_all(b"newer")).unwrap();
        assert_eq!(payload(&old), b"hello");
        assert_eq!(
            payload(&SnapshotFile::open(dir.path(), 1).unwrap().unwrap()),
            b"newer"
        );
    }
}
