//! Segmented, append-only write-ahead log shared by every Raft group on this node.
//!
//! One WAL for all groups lets the writer thread batch records from many groups and pay
//! for a single fsync (group commit). This module owns the on-disk format, the recovery
//! rules that decide what a crash may legitimately leave behind, and checkpointing (the
//! only way the log shrinks). Payloads are opaque here. Callers must make records
//! idempotent overwrites, because a crash in the middle of a checkpoint replays the old
//! segments and then the checkpoint.
//!
//! Format (version 3): `dir/{seq:020}.wal` segments, each an 8-byte header (`RNWAL\0` and
//! the version as u16 LE) followed by a run of records laid out as
//! `len: u32 LE | crc32(len bytes): u32 LE | crc32(payload): u32 LE | payload`.
//! The length has its own checksum so a damaged length is caught before it is trusted to
//! locate the next record; otherwise one flipped bit could silently skip real records.
//! A record is a *frame*: everything written between two fsyncs, as a run of
//! `len: u32 LE | crc32(item): u32 LE | item` items. Each item has its own checksum so that
//! one item can be read back alone, by its position ([`ItemPos`], [`read_item`]), without
//! its frame: that is how a log entry is served from disk once it has left memory.
//! Version 2 segments (items without a checksum) and version 1 segments (no header, one item
//! per record, written before frames existed) are still read; a node never appends to one.
//!
//! Recovery tells a *torn tail* (a write in flight at a crash: never acknowledged, so safe
//! to drop) from *corruption* (damage to data that may have been acknowledged, which must
//! stop the node rather than lose committed entries quietly). Because each fsync covers
//! exactly one frame, only the last frame of the newest segment can be unsynced: damage
//! there with no valid record after it is torn, whatever order the kernel persisted the
//! frame's pages in; damage anywhere else is corruption.
//!
//! Synchronous and single-owner by design: one dedicated writer thread drives it, so
//! there is no locking and no background work.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::warn;

const HEADER_LEN: usize = 12;
/// What every version-2 segment starts with: a magic and the format version.
const SEGMENT_MAGIC: &[u8; 6] = b"RNWAL\0";
/// The on-disk format this code writes; see the module docs.
pub const FORMAT_VERSION: u16 = 3;
/// The oldest format with a segment header.
const FIRST_HEADED_VERSION: u16 = 2;
const SEGMENT_HEADER_LEN: usize = 8;
/// Largest payload accepted by `append`/`checkpoint`. Recovery treats larger lengths as
/// corruption, so a damaged-but-checksummed length can't make us trust gigabytes.
pub const MAX_RECORD_BYTES: usize = 64 << 20;
const TMP_SUFFIX: &str = ".wal.tmp";

#[derive(Debug, Clone)]
pub struct WalOptions {
    pub dir: PathBuf,
    /// A batch is never split, so a segment can exceed this by one batch.
    pub segment_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: u64,
    /// (segment, offset it was truncated to, bytes dropped)
    pub torn_tail: Option<(PathBuf, u64, u64)>,
    /// Bytes of valid records across all segments after recovery.
    pub bytes: u64,
    /// The largest record read: what recovery held in memory at once, whatever the size of
    /// the segments.
    pub largest_record: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL I/O error on {}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("corrupt WAL record in {} at offset {offset}: {reason}", .path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// The replay callback rejected a record. It returns `String` rather than a generic
    /// error so `Wal` stays non-generic; callers format their own error into it.
    #[error("replaying WAL record in {} at offset {offset}: {message}", .path.display())]
    Replay {
        path: PathBuf,
        offset: u64,
        message: String,
    },
    #[error("WAL record of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("WAL segment {} has format version {version}; this raftnode reads 1 to {FORMAT_VERSION}", .path.display())]
    Version { path: PathBuf, version: u16 },
}

/// Where one item of a version-3 frame lies: its segment, the offset of its bytes in that
/// segment, and their length. What the log index keeps of an entry that left memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemPos {
    /// The segment's sequence number.
    pub seq: u64,
    /// Offset of the item's bytes (after its length and checksum).
    pub offset: u64,
    /// The item's length.
    pub len: u32,
}

/// Bytes in front of each item of a version-3 frame: its length and its checksum.
const ITEM_HEADER_LEN: usize = 8;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The path of segment `seq` in `dir`.
pub fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    let ok = digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| digits.parse().ok()).flatten()
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Opens a segment for appending; `create` insists it is new, and writes its header.
fn open_segment(path: &Path, create: bool) -> Result<File, WalError> {
    let mut o = OpenOptions::new();
    o.append(true).create_new(create);
    let mut f = o.open(path).map_err(io_err(path))?;
    if create {
        f.write_all(&segment_header()).map_err(io_err(path))?;
    }
    Ok(f)
}

fn segment_header() -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..6].copy_from_slice(SEGMENT_MAGIC);
    h[6..].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

/// A segment's format version and where its records start. A version-1 segment has no
/// header: it starts with a record, whose length can never read as the magic (it would be
/// over the record limit).
fn segment_format(path: &Path, buf: &[u8]) -> Result<(u16, usize), WalError> {
    if buf.len() >= SEGMENT_HEADER_LEN && buf[..6] == SEGMENT_MAGIC[..] {
        let version = u16::from_le_bytes([buf[6], buf[7]]);
        if !(FIRST_HEADED_VERSION..=FORMAT_VERSION).contains(&version) {
            let path = path.to_path_buf();
            return Err(WalError::Version { path, version });
        }
        return Ok((version, SEGMENT_HEADER_LEN));
    }
    if !buf.is_empty() && SEGMENT_MAGIC.starts_with(&buf[..buf.len().min(6)]) {
        // A header cut short: the segment was being created at a crash.
        return Ok((FORMAT_VERSION, buf.len()));
    }
    Ok((1, 0))
}

/// Encodes `items` as one frame's payload, in the current format.
fn encode_frame<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<u8>, WalError> {
    let mut frame = Vec::new();
    for item in items {
        let len = u32::try_from(item.len()).map_err(|_| WalError::TooLarge {
            len: item.len(),
            max: MAX_RECORD_BYTES,
        })?;
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(item).to_le_bytes());
        frame.extend_from_slice(item);
    }
    Ok(frame)
}

/// The positions of a frame's items, in the current format, once its payload is written at
/// `payload_at` of segment `seq`.
fn item_positions<'a>(
    seq: u64,
    payload_at: u64,
    items: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<ItemPos> {
    let mut at = payload_at;
    items
        .into_iter()
        .map(|item| {
            let pos = ItemPos {
                seq,
                offset: at + ITEM_HEADER_LEN as u64,
                len: item.len() as u32,
            };
            at += (ITEM_HEADER_LEN + item.len()) as u64;
            pos
        })
        .collect()
}

/// The replay callback: each item's bytes, and its position where the format gives one.
pub type Replay<'a> = dyn FnMut(&[u8], Option<ItemPos>) -> Result<(), String> + 'a;

/// Hands each item of a frame of `version`, whose payload starts at `payload_at` of segment
/// `seq`, to `replay`; a malformed frame whose checksum held is a bug's trace, reported as such.
fn replay_frame(
    frame: &[u8],
    version: u16,
    seq: u64,
    payload_at: u64,
    replay: &mut Replay<'_>,
) -> Result<u64, String> {
    let head = if version >= 3 { ITEM_HEADER_LEN } else { 4 };
    let (mut at, mut items) = (0usize, 0u64);
    while at < frame.len() {
        let len = frame
            .get(at..at + head)
            .map(|b| u32_at(b, 0) as usize)
            .ok_or("frame item length cut short")?;
        let item = frame
            .get(at + head..at + head + len)
            .ok_or("frame item runs past its frame")?;
        let pos = if version >= 3 {
            if crc32fast::hash(item) != u32_at(frame, at + 4) {
                return Err("frame item checksum mismatch".into());
            }
            Some(ItemPos {
                seq,
                offset: payload_at + (at + head) as u64,
                len: len as u32,
            })
        } else {
            None
        };
        replay(item, pos)?;
        items += 1;
        at += head + len;
    }
    Ok(items)
}

/// Reads back the item at `pos` from its segment `file`, checking its checksum: a log entry
/// that left memory.
pub fn read_item(file: &File, pos: ItemPos) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let bad = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "WAL item in segment {} at offset {}: {what}",
                pos.seq, pos.offset
            ),
        )
    };
    let start = pos
        .offset
        .checked_sub(ITEM_HEADER_LEN as u64)
        .ok_or_else(|| bad("offset before any item"))?;
    let mut buf = vec![0u8; ITEM_HEADER_LEN + pos.len as usize];
    file.read_exact_at(&mut buf, start)?;
    if u32_at(&buf, 0) != pos.len {
        return Err(bad("length differs from the index"));
    }
    let item = buf.split_off(ITEM_HEADER_LEN);
    if crc32fast::hash(&item) != u32_at(&buf, 4) {
        return Err(bad("checksum mismatch"));
    }
    Ok(item)
}

fn encode_header(payload: &[u8]) -> Result<[u8; HEADER_LEN], WalError> {
    let too_large = WalError::TooLarge {
        len: payload.len(),
        max: MAX_RECORD_BYTES,
    };
    if payload.len() > MAX_RECORD_BYTES {
        return Err(too_large);
    }
    let len_bytes = u32::try_from(payload.len())
        .map_err(|_| too_large)?
        .to_le_bytes();
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&len_bytes);
    h[4..8].copy_from_slice(&crc32fast::hash(&len_bytes).to_le_bytes());
    h[8..12].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    Ok(h)
}

fn encode_record(buf: &mut Vec<u8>, payload: &[u8]) -> Result<(), WalError> {
    buf.extend_from_slice(&encode_header(payload)?);
    buf.extend_from_slice(payload);
    Ok(())
}

/// Where a segment's bytes are read from: the file itself at recovery, which is never read
/// whole (a checkpoint segment is as large as the live state), or a buffer in tests.
pub(crate) trait Source {
    /// The length in bytes.
    fn len(&self) -> u64;
    /// Fills `buf` from `at`; the range is within `len`.
    fn read_at(&self, at: u64, buf: &mut [u8]) -> io::Result<()>;
}

impl Source for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_at(&self, at: u64, buf: &mut [u8]) -> io::Result<()> {
        let at = at as usize;
        let src = self
            .get(at..at + buf.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// A segment file, read by position.
struct FileSource {
    file: File,
    len: u64,
}

impl FileSource {
    fn open(path: &Path) -> io::Result<FileSource> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(FileSource { file, len })
    }
}

impl Source for FileSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, at: u64, buf: &mut [u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.read_exact_at(buf, at)
    }
}

/// Reads the record at `at` into `payload` (reused across records, so recovery holds one
/// record at a time), or says why it is not a valid record.
fn read_record(
    src: &(impl Source + ?Sized),
    at: u64,
    payload: &mut Vec<u8>,
) -> io::Result<Result<(), &'static str>> {
    let rest = src.len().saturating_sub(at);
    if rest < HEADER_LEN as u64 {
        return Ok(Err("truncated record header"));
    }
    let mut h = [0u8; HEADER_LEN];
    src.read_at(at, &mut h)?;
    let len = match parse_header(&h) {
        Ok(len) => len,
        Err(reason) => return Ok(Err(reason)),
    };
    if (HEADER_LEN + len) as u64 > rest {
        return Ok(Err("payload extends past end of file"));
    }
    payload.resize(len, 0);
    src.read_at(at + HEADER_LEN as u64, payload)?;
    if crc32fast::hash(payload) != u32_at(&h, 8) {
        return Ok(Err("payload checksum mismatch"));
    }
    Ok(Ok(()))
}

/// The payload length a record header announces, if its own checksum holds and the length is
/// within the limit.
fn parse_header(h: &[u8]) -> Result<usize, &'static str> {
    if crc32fast::hash(&h[0..4]) != u32_at(h, 4) {
        return Err("length checksum mismatch");
    }
    let len = u32_at(h, 0) as usize;
    if len > MAX_RECORD_BYTES {
        return Err("record length exceeds maximum");
    }
    Ok(len)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// How much of a segment's tail the torn-write checks read at a time.
const SCAN_CHUNK: usize = 1 << 20;

/// Runs `f` over `src` from `from` to its end in chunks that overlap by `overlap` bytes, each
/// with its offset; stops early when `f` says so.
fn chunks(
    src: &(impl Source + ?Sized),
    from: u64,
    overlap: usize,
    mut f: impl FnMut(u64, &[u8]) -> io::Result<bool>,
) -> io::Result<bool> {
    let mut buf = vec![0u8; SCAN_CHUNK + overlap];
    let mut at = from;
    while at < src.len() {
        let n = (src.len() - at).min(buf.len() as u64) as usize;
        src.read_at(at, &mut buf[..n])?;
        if f(at, &buf[..n])? {
            return Ok(true);
        }
        if at + n as u64 >= src.len() {
            break;
        }
        at += (n - overlap.min(n - 1)) as u64;
    }
    Ok(false)
}

/// Whether a valid record starts anywhere at or after `from`: damage followed by one is not
/// a torn write, since every record is fsynced before the next one is written.
fn valid_record_in(src: &(impl Source + ?Sized), from: u64) -> io::Result<bool> {
    let mut payload = Vec::new();
    chunks(src, from, HEADER_LEN - 1, |base, buf| {
        for i in 0..buf.len().saturating_sub(HEADER_LEN - 1) {
            // The header's own checksum rules out nearly every offset without reading on.
            if parse_header(&buf[i..i + HEADER_LEN]).is_ok()
                && read_record(src, base + i as u64, &mut payload)?.is_ok()
            {
                return Ok(true);
            }
        }
        Ok(false)
    })
}

/// Whether every byte from `from` on is zero.
fn zeros_from(src: &(impl Source + ?Sized), from: u64) -> io::Result<bool> {
    let nonzero = chunks(src, from, 0, |_, buf| Ok(buf.iter().any(|&b| b != 0)))?;
    Ok(!nonzero)
}

#[derive(Debug)]
struct Scan {
    /// Items replayed (a version-1 record is one item).
    records: u64,
    /// Offset of the first byte not part of a valid record (the length, if clean).
    valid_len: u64,
    /// The segment's format version.
    version: u16,
    /// The largest record in it.
    largest: u64,
}

/// Replays one segment (`path` only labels errors), one record in memory at a time. Torn
/// damage is tolerated only when `is_last`: older segments were fsynced before the next one
/// was created.
fn scan_segment(
    path: &Path,
    seq: u64,
    src: &(impl Source + ?Sized),
    is_last: bool,
    replay: &mut Replay<'_>,
) -> Result<Scan, WalError> {
    let corrupt = |offset: u64, reason: String| WalError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    let io = io_err(path);
    let total = src.len();
    let mut head = [0u8; SEGMENT_HEADER_LEN];
    let head_len = total.min(SEGMENT_HEADER_LEN as u64) as usize;
    if let Err(e) = src.read_at(0, &mut head[..head_len]) {
        return Err(io(e));
    }
    let (version, start) = segment_format(path, &head[..head_len])?;
    if !is_last && version >= FIRST_HEADED_VERSION && start < SEGMENT_HEADER_LEN {
        return Err(corrupt(
            0,
            "segment header cut short (in a non-final segment)".into(),
        ));
    }
    let (mut off, mut records, mut largest) = (start as u64, 0u64, 0u64);
    let mut payload = Vec::new();
    while off < total {
        let read = read_record(src, off, &mut payload).map_err(io_err(path))?;
        let reason = match read {
            Ok(()) => {
                let replayed = if version == 1 {
                    replay(&payload, None).map(|()| 1)
                } else {
                    let at = off + HEADER_LEN as u64;
                    replay_frame(&payload, version, seq, at, replay)
                };
                records += replayed.map_err(|message| WalError::Replay {
                    path: path.to_path_buf(),
                    offset: off,
                    message,
                })?;
                off += (HEADER_LEN + payload.len()) as u64;
                largest = largest.max(payload.len() as u64);
                continue;
            }
            Err(reason) => reason,
        };
        if !is_last {
            return Err(corrupt(off, format!("{reason} (in a non-final segment)")));
        }
        // Version 1 wrote several records per fsync, so only a damaged final record, or
        // zeros, could be torn there.
        let torn = if version == 1 {
            let final_record = || -> io::Result<bool> {
                let mut h = [0u8; HEADER_LEN];
                src.read_at(off, &mut h)?;
                Ok(total - off == (HEADER_LEN + u32_at(&h, 0) as usize) as u64)
            };
            matches!(
                reason,
                "truncated record header" | "payload extends past end of file"
            ) || zeros_from(src, off).map_err(io_err(path))?
                || (reason == "payload checksum mismatch"
                    && final_record().map_err(io_err(path))?)
        } else {
            !valid_record_in(src, off + 1).map_err(io_err(path))?
        };
        if torn {
            break;
        }
        let reason = if version == 1 {
            reason.to_string()
        } else {
            format!("{reason}, with valid records after it")
        };
        return Err(corrupt(off, reason));
    }
    Ok(Scan {
        records,
        valid_len: off,
        version,
        largest,
    })
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    seq: u64,
    len: u64,
}

#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    /// Older live segments, ascending by seq.
    sealed: Vec<Segment>,
    active: Segment,
    file: File,
    buf: Vec<u8>,
    /// Set after a failed fsync (Linux may drop the dirty pages and then report success
    /// on retry) or an unrepairable partial write: further writes would lie about
    /// durability, so the owner must reopen.
    failed: bool,
}

impl Wal {
    /// Opens (creating dir if absent), replays every record through `replay`, applies the
    /// torn-tail rule, and leaves the last segment open for appending (or creates segment
    /// 1). On error `replay` may already have seen some records; discard that state.
    pub fn open(
        opts: WalOptions,
        mut replay: impl FnMut(&[u8], Option<ItemPos>) -> Result<(), String>,
    ) -> Result<(Wal, RecoveryReport), WalError> {
        let dir = opts.dir;
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let (mut seqs, mut removed_tmp) = (Vec::new(), false);
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(TMP_SUFFIX) {
                let path = entry.path();
                warn!(path = %path.display(), "removing leftover WAL checkpoint temp file");
                fs::remove_file(&path).map_err(io_err(&path))?;
                removed_tmp = true;
            } else if let Some(seq) = parse_segment_name(name) {
                seqs.push(seq);
            }
        }
        if removed_tmp {
            sync_dir(&dir)?;
        }
        seqs.sort_unstable();

        let mut report = RecoveryReport {
            segments: seqs.len(),
            ..RecoveryReport::default()
        };
        let mut sealed = Vec::with_capacity(seqs.len());
        let mut last_version = FORMAT_VERSION;
        for (i, &seq) in seqs.iter().enumerate() {
            if i > 0 && seq != seqs[i - 1] + 1 {
                // Not fatal: a checkpoint's unlinks of old segments may persist out of order
                // if we crash before its final directory fsync.
                let (dir, prev) = (dir.display(), seqs[i - 1]);
                warn!(%dir, prev, next = seq, "gap in WAL segment sequence");
            }
            let path = segment_path(&dir, seq);
            let src = FileSource::open(&path).map_err(io_err(&path))?;
            let scan = scan_segment(&path, seq, &src, i + 1 == seqs.len(), &mut replay)?;
            last_version = scan.version;
            let dropped = src.len() - scan.valid_len;
            if dropped > 0 {
                let (file, offset) = (path.display(), scan.valid_len);
                warn!(%file, offset, dropped, "truncating torn WAL tail");
                let truncate = |f: File| f.set_len(scan.valid_len).and_then(|()| f.sync_all());
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(truncate)
                    .map_err(io_err(&path))?;
                report.torn_tail = Some((path, scan.valid_len, dropped));
            }
            report.records += scan.records;
            report.bytes += scan.valid_len;
            report.largest_record = report.largest_record.max(scan.largest);
            let len = scan.valid_len;
            sealed.push(Segment { seq, len });
        }

        // A node appends only to a segment of the current format, with its header whole.
        let (active, file) = match sealed.pop() {
            Some(last)
                if last_version == FORMAT_VERSION && last.len >= SEGMENT_HEADER_LEN as u64 =>
            {
                (last, open_segment(&segment_path(&dir, last.seq), false)?)
            }
            Some(last) if last.len < SEGMENT_HEADER_LEN as u64 => {
                // Created at a crash before its header was whole: start it again.
                let path = segment_path(&dir, last.seq);
                fs::remove_file(&path).map_err(io_err(&path))?;
                let file = open_segment(&path, true)?;
                file.sync_all().map_err(io_err(&path))?;
                sync_dir(&dir)?;
                let len = SEGMENT_HEADER_LEN as u64;
                (Segment { seq: last.seq, len }, file)
            }
            last => {
                let seq = last.map_or(1, |l| l.seq + 1);
                sealed.extend(last);
                let path = segment_path(&dir, seq);
                let file = open_segment(&path, true)?;
                file.sync_all().map_err(io_err(&path))?;
                sync_dir(&dir)?;
                let len = SEGMENT_HEADER_LEN as u64;
                (Segment { seq, len }, file)
            }
        };
        let wal = Wal {
            dir,
            segment_bytes: opts.segment_bytes,
            sealed,
            active,
            file,
            buf: Vec::new(),
            failed: false,
        };
        Ok((wal, report))
    }

    /// Writes `items` to the active segment as one frame (one record, one `write_all`), and
    /// returns where each item lies. Does NOT fsync; the caller fsyncs before the next frame,
    /// since recovery counts on every frame but the last being durable. Rotates first if the
    /// active segment is past `segment_bytes`. A frame over `MAX_RECORD_BYTES` fails unwritten.
    pub fn append<'a>(
        &mut self,
        items: impl IntoIterator<Item = &'a [u8]> + Clone,
    ) -> Result<Vec<ItemPos>, WalError> {
        self.check_usable()?;
        let frame = encode_frame(items.clone())?;
        if frame.is_empty() {
            return Ok(Vec::new());
        }
        self.buf.clear();
        encode_record(&mut self.buf, &frame)?;
        if self.active.len > SEGMENT_HEADER_LEN as u64 && self.active.len >= self.segment_bytes {
            self.rotate()?;
        }
        if let Err(e) = self.file.write_all(&self.buf) {
            // A partial frame would sit in front of every later record and read as
            // corruption at the next open, so cut it off or refuse further writes.
            if self.file.set_len(self.active.len).is_err() {
                self.failed = true;
            }
            return Err(io_err(&self.active_path())(e));
        }
        let at = self.active.len + HEADER_LEN as u64;
        self.active.len += self.buf.len() as u64;
        Ok(item_positions(self.active.seq, at, items))
    }

    /// fdatasync the active segment; returns how long it took (for the fsync histogram).
    pub fn sync(&mut self) -> Result<Duration, WalError> {
        self.check_usable()?;
        let start = Instant::now();
        self.sync_active()?;
        Ok(start.elapsed())
    }

    pub fn total_bytes(&self) -> u64 {
        self.active.len + self.sealed.iter().map(|s| s.len).sum::<u64>()
    }

    pub fn segment_count(&self) -> usize {
        self.sealed.len() + 1
    }

    /// Writes `records` (a full dump of live state) into a new segment via tmp + rename,
    /// makes it active, then deletes every older segment. Crash-safe at every step given
    /// idempotent records (see module docs).
    #[cfg(test)]
    pub fn checkpoint<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a [u8]>,
        moved: impl FnOnce(&[ItemPos]),
    ) -> Result<(), WalError> {
        self.checkpoint_from(records.into_iter().map(Ok), moved)
    }

    /// As [`Self::checkpoint`], with items produced one at a time (read back from the old
    /// segments as they are written), so that a checkpoint holds one frame in memory, not the
    /// whole live state. An item that cannot be produced fails the checkpoint, which then
    /// leaves the old segments in place.
    pub fn checkpoint_from<V: AsRef<[u8]>>(
        &mut self,
        records: impl IntoIterator<Item = io::Result<V>>,
        moved: impl FnOnce(&[ItemPos]),
    ) -> Result<(), WalError> {
        self.check_usable()?;
        // After a crash between the rename and the deletes, the old active segment
        // replays as a non-final one, where an unsynced torn tail would read as corruption.
        self.sync_active()?;
        let seq = self.active.seq + 1;
        let tmp = self.dir.join(format!("{seq:020}{TMP_SUFFIX}"));
        let path = segment_path(&self.dir, seq);
        let written = write_synced_file(&tmp, seq, records)
            .and_then(|w| fs::rename(&tmp, &path).map_err(io_err(&path)).map(|()| w));
        let (len, positions) = written.inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })?;
        // The checkpoint is now visible on disk: anything appended to the old active
        // segment would replay *before* it and be overwritten by staler state.
        self.file = open_segment(&path, false).inspect_err(|_| self.failed = true)?;
        moved(&positions);
        let old = std::mem::replace(&mut self.active, Segment { seq, len });
        self.sealed.push(old);
        self.sync_dir_or_fail()?;
        // Oldest first, so the surviving set stays contiguous if we stop part-way.
        while let Some(first) = self.sealed.first() {
            let old = segment_path(&self.dir, first.seq);
            fs::remove_file(&old).map_err(io_err(&old))?;
            self.sealed.remove(0);
        }
        self.sync_dir_or_fail()
    }

    fn rotate(&mut self) -> Result<(), WalError> {
        self.sync_active()?;
        let seq = self.active.seq + 1;
        self.file = open_segment(&segment_path(&self.dir, seq), true)?;
        let len = SEGMENT_HEADER_LEN as u64;
        let old = std::mem::replace(&mut self.active, Segment { seq, len });
        self.sealed.push(old);
        self.sync_dir_or_fail()
    }

    fn check_usable(&self) -> Result<(), WalError> {
        if !self.failed {
            return Ok(());
        }
        let msg = "WAL disabled after an earlier failed write or fsync; reopen to recover";
        Err(io_err(&self.active_path())(io::Error::other(msg)))
    }

    fn sync_active(&mut self) -> Result<(), WalError> {
        let res = self.file.sync_data();
        self.failed |= res.is_err();
        res.map_err(io_err(&self.active_path()))
    }

    fn sync_dir_or_fail(&mut self) -> Result<(), WalError> {
        sync_dir(&self.dir).inspect_err(|_| self.failed = true)
    }

    fn active_path(&self) -> PathBuf {
        segment_path(&self.dir, self.active.seq)
    }
}

/// A checkpoint's frames: this many bytes of items each, at most (one larger item goes
/// alone). The file is fsynced whole before it becomes a segment, so frames here only keep
/// records under the limit.
const CHECKPOINT_FRAME_BYTES: usize = 16 << 20;

/// Streams items into a fresh segment file `seq`, in frames, and fsyncs it; a checkpoint can
/// be as large as the whole live state, so it is not staged in memory. Returns the bytes
/// written and where each item lies.
fn write_synced_file<V: AsRef<[u8]>>(
    path: &Path,
    seq: u64,
    items: impl IntoIterator<Item = io::Result<V>>,
) -> Result<(u64, Vec<ItemPos>), WalError> {
    let mut o = OpenOptions::new();
    let file = o.write(true).create(true).truncate(true).open(path);
    let mut w = BufWriter::with_capacity(1 << 20, file.map_err(io_err(path))?);
    w.write_all(&segment_header()).map_err(io_err(path))?;
    let mut len = SEGMENT_HEADER_LEN as u64;
    let mut positions = Vec::new();
    let mut frame: Vec<V> = Vec::new();
    let mut frame_bytes = 0usize;
    let mut flush = |frame: &mut Vec<V>, w: &mut BufWriter<File>| -> Result<(), WalError> {
        if frame.is_empty() {
            return Ok(());
        }
        let payload = encode_frame(frame.iter().map(|v| v.as_ref()))?;
        let header = encode_header(&payload)?;
        w.write_all(&header)
            .and_then(|()| w.write_all(&payload))
            .map_err(io_err(path))?;
        let at = len + HEADER_LEN as u64;
        positions.extend(item_positions(seq, at, frame.iter().map(|v| v.as_ref())));
        frame.clear();
        len += (HEADER_LEN + payload.len()) as u64;
        Ok(())
    };
    for item in items {
        let item = item.map_err(io_err(path))?;
        let item_len = item.as_ref().len();
        if !frame.is_empty() && frame_bytes + item_len > CHECKPOINT_FRAME_BYTES {
            flush(&mut frame, &mut w)?;
            frame_bytes = 0;
        }
        frame_bytes += item_len + ITEM_HEADER_LEN;
        frame.push(item);
    }
    flush(&mut frame, &mut w)?;
    let file = w.into_inner().map_err(|e| io_err(path)(e.into_error()))?;
    file.sync_all().map_err(io_err(path))?;
    Ok((len, positions))
}

/// Writes a version-2 segment holding `items` in one frame, as an earlier raftnode did.
#[cfg(test)]
pub(crate) fn write_version_2_segment(path: &Path, items: &[Vec<u8>]) {
    let mut seg = SEGMENT_MAGIC.to_vec();
    seg.extend_from_slice(&2u16.to_le_bytes());
    let mut frame = Vec::new();
    for item in items {
        frame.extend_from_slice(&(item.len() as u32).to_le_bytes());
        frame.extend_from_slice(item);
    }
    encode_record(&mut seg, &frame).expect("a small frame");
    fs::write(path, seg).expect("a writable test dir");
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    fn opts(dir: &Path, segment_bytes: u64) -> WalOptions {
        WalOptions {
            dir: dir.to_path_buf(),
            segment_bytes,
        }
    }

    fn rec(i: usize) -> Vec<u8> {
        format!("record-{i:04}-{}", "x".repeat(i % 7)).into_bytes()
    }

    fn reopen(dir: &Path) -> Result<(Vec<Vec<u8>>, RecoveryReport, Wal), WalError> {
        let mut got = Vec::new();
        let (wal, report) = Wal::open(opts(dir, 1 << 20), |r, _| {
            got.push(r.to_vec());
            Ok(())
        })?;
        Ok((got, report, wal))
    }

    /// Appends `n` records one batch each, synced; returns them.
    fn write_records(dir: &Path, n: usize, segment_bytes: u64) -> Vec<Vec<u8>> {
        let (mut wal, _) = Wal::open(opts(dir, segment_bytes), |_, _| Ok(())).unwrap();
        let recs: Vec<_> = (0..n).map(rec).collect();
        for r in &recs {
            wal.append([r.as_slice()]).unwrap();
        }
        wal.sync().unwrap();
        recs
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .collect();
        v.sort();
        v
    }

    /// Bytes of rec(i) written alone as a frame.
    fn framed(i: usize) -> u64 {
        (HEADER_LEN + ITEM_HEADER_LEN + rec(i).len()) as u64
    }

    /// Offset of record `i` in a single segment holding rec(0).., one frame each.
    fn offset_of(i: usize) -> u64 {
        SEGMENT_HEADER_LEN as u64 + (0..i).map(framed).sum::<u64>()
    }

    fn flip(path: &Path, offset: u64) {
        let mut b = fs::read(path).unwrap();
        b[offset as usize] ^= 0x40;
        fs::write(path, b).unwrap();
    }

    /// (records, valid_len) when accepted, else the offset reported as corrupt.
    fn scan(buf: &[u8], is_last: bool) -> Result<(u64, u64), u64> {
        match scan_segment(Path::new("/seg"), 1, buf, is_last, &mut |_, _| Ok(())) {
            Ok(s) => Ok((s.records, s.valid_len)),
            Err(WalError::Corrupt { offset, .. }) => Err(offset),
            Err(e) => panic!("{e}"),
        }
    }

    /// Version 1 (no segment header, several records per fsync): only a damaged final record
    /// or zeros are torn.
    #[test]
    fn scan_classifies_torn_and_corrupt_in_version_1() {
        let mut buf = Vec::new();
        for r in (0..3).map(rec) {
            encode_record(&mut buf, &r).unwrap();
        }
        let v1_offset = |i: usize| {
            (0..i)
                .map(|j| (HEADER_LEN + rec(j).len()) as u64)
                .sum::<u64>()
        };
        let (r1, r2, full) = (v1_offset(1), v1_offset(2), buf.len() as u64);
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = buf.clone();
            f(&mut b);
            b
        };
        assert_eq!(scan(&buf, true), Ok((3, full)));
        assert_eq!(scan(&buf, false), Ok((3, full)));
        assert_eq!(scan(&[], false), Ok((0, 0)));
        // Cut inside the last payload, and inside the last header.
        assert_eq!(scan(&buf[..buf.len() - 3], true), Ok((2, r2)));
        assert_eq!(scan(&buf[..r2 as usize + 5], true), Ok((2, r2)));
        assert_eq!(scan(&buf[..buf.len() - 3], false), Err(r2));
        // Garbage payload in the final record.
        let garbage_end = with(&|b| *b.last_mut().unwrap() ^= 1);
        assert_eq!(scan(&garbage_end, true), Ok((2, r2)));
        assert_eq!(scan(&garbage_end, false), Err(r2));
        // Zero-filled tail, long enough to hold a whole (invalid) header.
        let zeros = with(&|b| b.extend_from_slice(&[0u8; 100]));
        assert_eq!(scan(&zeros, true), Ok((3, full)));
        assert_eq!(scan(&zeros, false), Err(full));
        // Payload or length damage with records after it.
        let payload = with(&|b| b[r1 as usize + HEADER_LEN + 2] ^= 1);
        assert_eq!(scan(&payload, true), Err(r1));
        let length = with(&|b| b[r1 as usize] ^= 1);
        assert_eq!(scan(&length, true), Err(r1));
        // A checksummed but absurd length is corruption, not a payload past EOF.
        let huge = (MAX_RECORD_BYTES as u32 + 1).to_le_bytes();
        let bad_len = with(&|b| {
            b[r2 as usize..r2 as usize + 4].copy_from_slice(&huge);
            b[r2 as usize + 4..r2 as usize + 8]
                .copy_from_slice(&crc32fast::hash(&huge).to_le_bytes());
        });
        assert_eq!(scan(&bad_len, true), Err(r2));
    }

    /// Version 2 (one frame per fsync): damage with no valid record after it is torn,
    /// wherever it starts and whatever it looks like; damage with a valid record after it is
    /// corruption.
    #[test]
    fn scan_classifies_torn_and_corrupt_frames() {
        let mut buf = segment_header().to_vec();
        for i in 0..3 {
            encode_record(&mut buf, &encode_frame([rec(i).as_slice()]).unwrap()).unwrap();
        }
        let (r1, r2, full) = (offset_of(1), offset_of(2), buf.len() as u64);
        let header = SEGMENT_HEADER_LEN as u64;
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = buf.clone();
            f(&mut b);
            b
        };
        assert_eq!(scan(&buf, true), Ok((3, full)));
        assert_eq!(scan(&buf[..SEGMENT_HEADER_LEN], false), Ok((0, header)));
        // The last frame's header garbled (its pages persisted out of order), payload intact.
        let head = with(&|b| b[r2 as usize] ^= 0x55);
        assert_eq!(scan(&head, true), Ok((2, r2)));
        assert_eq!(scan(&head, false), Err(r2));
        // Zeros over the middle of the last frame.
        let hole = with(&|b| b[r2 as usize + 3..r2 as usize + 14].fill(0));
        assert_eq!(scan(&hole, true), Ok((2, r2)));
        // Random bytes after the last frame.
        let junk = with(&|b| b.extend_from_slice(b"\x13\x37 not a record at all"));
        assert_eq!(scan(&junk, true), Ok((3, full)));
        // Damage to an earlier frame, with a valid one after it.
        let early = with(&|b| b[r1 as usize + HEADER_LEN + 6] ^= 1);
        assert_eq!(scan(&early, true), Err(r1));
        // A frame whose items do not add up, under a valid checksum, is a replay error.
        let mut bad = segment_header().to_vec();
        encode_record(&mut bad, &[9, 0, 0, 0, 1]).unwrap();
        assert!(matches!(
            scan_segment(Path::new("/seg"), 1, bad.as_slice(), true, &mut |_, _| Ok(
                ()
            )),
            Err(WalError::Replay { .. })
        ));
        // A format from the future is refused, not guessed at.
        let mut future = bad.clone();
        future[6] = 4;
        assert!(matches!(
            scan_segment(
                Path::new("/seg"),
                1,
                future.as_slice(),
                true,
                &mut |_, _| Ok(())
            ),
            Err(WalError::Version { version: 4, .. })
        ));
    }

    /// The last batch is one frame: whatever part of it reached the disk, at any item
    /// boundary, in any order, recovery drops all of it and keeps every synced frame.
    #[test]
    fn a_torn_last_batch_is_dropped_whole_at_every_boundary() {
        let tmp = TempDir::new().unwrap();
        let synced = write_records(tmp.path(), 4, 1 << 20);
        let seg = segment_files(tmp.path()).remove(0);
        let clean = fs::read(&seg).unwrap();
        let batch: Vec<Vec<u8>> = (10..15).map(rec).collect();
        let (mut wal, _) = Wal::open(opts(tmp.path(), 1 << 20), |_, _| Ok(())).unwrap();
        wal.append(batch.iter().map(Vec::as_slice)).unwrap();
        drop(wal);
        let full = fs::read(&seg).unwrap();
        let start = clean.len();
        // Item boundaries inside the frame's payload, and the frame's own edges.
        let mut cuts = vec![start, start + 4, start + HEADER_LEN];
        let mut at = start + HEADER_LEN;
        for item in &batch {
            at += ITEM_HEADER_LEN + item.len();
            cuts.push(at);
        }
        for &cut in &cuts {
            let variants: [(&str, Vec<u8>); 3] = [
                ("cut short", full[..cut].to_vec()),
                ("tail only", {
                    let mut b = full.clone();
                    b[start..cut].fill(0);
                    b
                }),
                ("head only", {
                    let mut b = full.clone();
                    b[cut..].fill(0);
                    b
                }),
            ];
            for (how, bytes) in variants {
                if bytes == full || bytes == clean {
                    continue;
                }
                fs::write(&seg, &bytes).unwrap();
                let (got, report, _) =
                    reopen(tmp.path()).unwrap_or_else(|e| panic!("{how} at {cut}: {e}"));
                assert_eq!(got, synced, "{how} at {cut}");
                assert_eq!(
                    report.torn_tail.map(|t| t.1),
                    Some(start as u64),
                    "{how} at {cut}"
                );
                assert_eq!(fs::read(&seg).unwrap(), clean, "{how} at {cut}");
            }
        }
    }

    /// Segments written before frames (version 1) replay as they were; new writes go to a
    /// new segment of the current format.
    #[test]
    fn version_1_segments_are_read_and_never_appended_to() {
        let tmp = TempDir::new().unwrap();
        let old: Vec<Vec<u8>> = (0..5).map(rec).collect();
        let mut v1 = Vec::new();
        for r in &old {
            encode_record(&mut v1, r).unwrap();
        }
        let first = segment_path(tmp.path(), 1);
        fs::write(&first, &v1).unwrap();
        let (got, report, mut wal) = reopen(tmp.path()).unwrap();
        assert_eq!(got, old);
        assert_eq!(report.records, 5);
        wal.append([b"new".as_slice()]).unwrap();
        wal.sync().unwrap();
        drop(wal);
        assert_eq!(fs::read(&first).unwrap(), v1);
        let files = segment_files(tmp.path());
        assert_eq!(files.len(), 2);
        assert!(fs::read(&files[1]).unwrap().starts_with(SEGMENT_MAGIC));
        let (got, _, _) = reopen(tmp.path()).unwrap();
        assert_eq!(got.len(), 6);
        assert_eq!(got.last().unwrap(), b"new");
    }

    /// A segment created at a crash before its header was whole is started again.
    #[test]
    fn a_segment_with_half_a_header_is_started_again() {
        let tmp = TempDir::new().unwrap();
        let recs = write_records(tmp.path(), 3, 1 << 20);
        let next = segment_path(tmp.path(), 2);
        fs::write(&next, &SEGMENT_MAGIC[..3]).unwrap();
        let (got, _, mut wal) = reopen(tmp.path()).unwrap();
        assert_eq!(got, recs);
        wal.append([b"after".as_slice()]).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (got, _, _) = reopen(tmp.path()).unwrap();
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn round_trip_across_rotations() {
        let tmp = TempDir::new().unwrap();
        let (mut wal, report) = Wal::open(opts(tmp.path(), 100), |_, _| Ok(())).unwrap();
        assert_eq!(report, RecoveryReport::default());
        let mut all = Vec::new();
        for batch in 0..40 {
            let recs: Vec<_> = (0..batch % 3 + 1).map(|i| rec(batch * 3 + i)).collect();
            wal.append(recs.iter().map(Vec::as_slice)).unwrap();
            all.extend(recs);
        }
        wal.sync().unwrap();
        let files = segment_files(tmp.path());
        assert!(wal.segment_count() > 3);
        assert_eq!(files.len(), wal.segment_count());
        let on_disk: u64 = files.iter().map(|f| fs::metadata(f).unwrap().len()).sum();
        assert_eq!(wal.total_bytes(), on_disk);
        drop(wal);
        let (got, report, wal) = reopen(tmp.path()).unwrap();
        assert_eq!(got, all);
        assert_eq!(report.records, all.len() as u64);
        assert_eq!(report.segments, files.len());
        assert_eq!(report.bytes, on_disk);
        assert_eq!(report.torn_tail, None);
        assert_eq!(wal.total_bytes(), on_disk);
    }

    /// Every item's position, as the append reports it, as recovery reports it, and as a
    /// checkpoint reports it, reads that item back alone; a damaged item is caught.
    #[test]
    fn items_are_found_again_by_position() {
        let tmp = TempDir::new().unwrap();
        let (mut wal, _) = Wal::open(opts(tmp.path(), 200), |_, _| Ok(())).unwrap();
        let recs: Vec<Vec<u8>> = (0..20).map(rec).collect();
        let mut appended = Vec::new();
        for pair in recs.chunks(2) {
            appended.extend(wal.append(pair.iter().map(Vec::as_slice)).unwrap());
            wal.sync().unwrap();
        }
        assert!(wal.segment_count() > 2, "the items span rotations");
        drop(wal);
        let mut replayed = Vec::new();
        let (mut wal, _) = Wal::open(opts(tmp.path(), 200), |item, pos| {
            replayed.push((item.to_vec(), pos.unwrap()));
            Ok(())
        })
        .unwrap();
        assert_eq!(replayed.iter().map(|r| r.1).collect::<Vec<_>>(), appended);
        let read = |pos: ItemPos| {
            let file = File::open(segment_path(tmp.path(), pos.seq)).unwrap();
            read_item(&file, pos)
        };
        for (item, pos) in &replayed {
            assert_eq!(&read(*pos).unwrap(), item);
        }
        let mut moved = Vec::new();
        wal.checkpoint(recs.iter().map(Vec::as_slice), |p| moved = p.to_vec())
            .unwrap();
        for (pos, item) in moved.iter().zip(&recs) {
            assert_eq!(&read(*pos).unwrap(), item);
        }
        let last = moved[moved.len() - 1];
        flip(&segment_path(tmp.path(), last.seq), last.offset + 2);
        let err = read(last).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
    }

    /// Version 2 segments (items without checksums) replay, without positions; new writes go
    /// to a new segment of the current format.
    #[test]
    fn version_2_segments_are_read_and_never_appended_to() {
        let tmp = TempDir::new().unwrap();
        let mut v2 = SEGMENT_MAGIC.to_vec();
        v2.extend_from_slice(&2u16.to_le_bytes());
        let old: Vec<Vec<u8>> = (0..3).map(rec).collect();
        let mut frame = Vec::new();
        for item in &old {
            frame.extend_from_slice(&(item.len() as u32).to_le_bytes());
            frame.extend_from_slice(item);
        }
        encode_record(&mut v2, &frame).unwrap();
        fs::write(segment_path(tmp.path(), 1), &v2).unwrap();
        let mut got = Vec::new();
        let (mut wal, _) = Wal::open(opts(tmp.path(), 1 << 20), |item, pos| {
            got.push((item.to_vec(), pos));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            got,
            old.iter().map(|i| (i.clone(), None)).collect::<Vec<_>>()
        );
        let pos = wal.append([rec(9).as_slice()]).unwrap();
        assert_eq!(pos[0].seq, 2);
        wal.sync().unwrap();
        assert_eq!(fs::read(segment_path(tmp.path(), 1)).unwrap(), v2);
        let (got, _, _) = reopen(tmp.path()).unwrap();
        assert_eq!(got.len(), 4);
    }

    /// Recovery reads a segment record by record, never whole: a large segment costs one
    /// record's memory.
    #[test]
    fn recovery_holds_one_record_at_a_time() {
        let tmp = TempDir::new().unwrap();
        let (mut wal, _) = Wal::open(opts(tmp.path(), 1 << 30), |_, _| Ok(())).unwrap();
        let item = vec![7u8; 1000];
        for _ in 0..8192 {
            wal.append([item.as_slice()]).unwrap();
        }
        wal.sync().unwrap();
        drop(wal);
        let (got, report, _) = reopen(tmp.path()).unwrap();
        assert_eq!(got.len(), 8192);
        assert!(report.bytes > 8_000_000, "{report:?}");
        assert_eq!(report.largest_record, 1008, "{report:?}");
    }

    #[test]
    fn torn_tail_is_truncated_and_log_stays_appendable() {
        let tmp = TempDir::new().unwrap();
        let recs = write_records(tmp.path(), 10, 1 << 20);
        let seg = segment_files(tmp.path()).remove(0);
        let len = fs::metadata(&seg).unwrap().len();
        fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let (got, report, mut wal) = reopen(tmp.path()).unwrap();
        assert_eq!(got, recs[..9]);
        let dropped = framed(9) - 3;
        assert_eq!(report.torn_tail, Some((seg.clone(), offset_of(9), dropped)));
        assert_eq!(fs::metadata(&seg).unwrap().len(), offset_of(9));
        wal.append([b"after".as_slice()]).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (got, report, _) = reopen(tmp.path()).unwrap();
        assert_eq!(got.last().unwrap(), b"after");
        assert_eq!(got.len(), 10);
        assert_eq!(report.torn_tail, None);
    }

    #[test]
    fn garbage_final_payload_is_torn() {
        let tmp = TempDir::new().unwrap();
        let recs = write_records(tmp.path(), 10, 1 << 20);
        let seg = segment_files(tmp.path()).remove(0);
        flip(&seg, fs::metadata(&seg).unwrap().len() - 1);
        let (got, report, _) = reopen(tmp.path()).unwrap();
        assert_eq!(got, recs[..9]);
        let dropped = framed(9);
        assert_eq!(report.torn_tail, Some((seg, offset_of(9), dropped)));
    }

    #[test]
    fn zero_filled_tail_is_torn() {
        let tmp = TempDir::new().unwrap();
        let recs = write_records(tmp.path(), 10, 1 << 20);
        let seg = segment_files(tmp.path()).remove(0);
        let len = fs::metadata(&seg).unwrap().len();
        let mut f = fs::OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[0u8; 4096]).unwrap();
        drop(f);
        let (got, report, _) = reopen(tmp.path()).unwrap();
        assert_eq!(got, recs);
        assert_eq!(report.torn_tail, Some((seg.clone(), len, 4096)));
        assert_eq!(fs::metadata(&seg).unwrap().len(), len);
    }

    fn assert_corrupt(dir: &Path, seg: &Path, offset: u64, reason: &str) {
        let len = fs::metadata(seg).unwrap().len();
        let err = reopen(dir).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, WalError::Corrupt { .. }), "{msg}");
        assert!(msg.contains(&seg.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("at offset {offset}:")), "{msg}");
        assert!(msg.contains(reason), "{msg}");
        assert_eq!(fs::metadata(seg).unwrap().len(), len, "must not truncate");
    }

    #[test]
    fn flipped_payload_mid_last_segment_is_corrupt() {
        let tmp = TempDir::new().unwrap();
        write_records(tmp.path(), 10, 1 << 20);
        let seg = segment_files(tmp.path()).remove(0);
        flip(&seg, offset_of(2) + HEADER_LEN as u64 + 1);
        assert_corrupt(tmp.path(), &seg, offset_of(2), "payload checksum mismatch");
    }

    #[test]
    fn flipped_length_mid_last_segment_is_corrupt() {
        let tmp = TempDir::new().unwrap();
        write_records(tmp.path(), 10, 1 << 20);
        let seg = segment_files(tmp.path()).remove(0);
        flip(&seg, offset_of(3) + 1);
        assert_corrupt(tmp.path(), &seg, offset_of(3), "length checksum mismatch");
    }

    #[test]
    fn any_damage_in_non_last_segment_is_corrupt() {
        type Damage = fn(&Path);
        let cut: Damage = |p| {
            let len = fs::metadata(p).unwrap().len();
            let f = fs::OpenOptions::new().write(true).open(p).unwrap();
            f.set_len(len - 3).unwrap();
        };
        let garbage_end: Damage = |p| flip(p, fs::metadata(p).unwrap().len() - 1);
        let zeros: Damage = |p| {
            let mut f = fs::OpenOptions::new().append(true).open(p).unwrap();
            f.write_all(&[0u8; 64]).unwrap();
        };
        for damage in [cut, garbage_end, zeros] {
            let tmp = TempDir::new().unwrap();
            write_records(tmp.path(), 30, 64);
            let files = segment_files(tmp.path());
            assert!(files.len() > 2);
            damage(&files[0]);
            let err = reopen(tmp.path()).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, WalError::Corrupt { .. }), "{msg}");
            assert!(msg.contains(&files[0].display().to_string()), "{msg}");
        }
    }

    #[test]
    fn replay_error_names_segment_and_offset() {
        let tmp = TempDir::new().unwrap();
        write_records(tmp.path(), 5, 1 << 20);
        let err = Wal::open(opts(tmp.path(), 1 << 20), |r, _| {
            if r == rec(3).as_slice() {
                Err("nope".into())
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, WalError::Replay { offset, .. } if offset == offset_of(3)));
        assert!(
            msg.contains("00000000000000000001.wal") && msg.contains("nope"),
            "{msg}"
        );
    }

    #[test]
    fn oversized_record_is_rejected_unwritten() {
        let tmp = TempDir::new().unwrap();
        let (mut wal, _) = Wal::open(opts(tmp.path(), 1 << 20), |_, _| Ok(())).unwrap();
        let big = vec![0u8; MAX_RECORD_BYTES + 1];
        let err = wal.append([b"ok".as_slice(), big.as_slice()]).unwrap_err();
        assert!(matches!(err, WalError::TooLarge { .. }));
        assert_eq!(wal.total_bytes(), SEGMENT_HEADER_LEN as u64);
        let err = wal.checkpoint([big.as_slice()], |_| {}).unwrap_err();
        assert!(matches!(err, WalError::TooLarge { .. }));
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn checkpoint_replaces_old_segments() {
        let tmp = TempDir::new().unwrap();
        write_records(tmp.path(), 30, 64);
        let ckpt: Vec<Vec<u8>> = vec![b"state-a".to_vec(), b"state-b".to_vec()];
        let (old, _, mut wal) = reopen(tmp.path()).unwrap();
        assert_eq!(old.len(), 30);
        assert!(wal.segment_count() > 2);
        wal.checkpoint(ckpt.iter().map(Vec::as_slice), |_| {})
            .unwrap();
        let files = segment_files(tmp.path());
        assert_eq!(files.len(), 1);
        assert_eq!(wal.segment_count(), 1);
        assert_eq!(wal.total_bytes(), fs::metadata(&files[0]).unwrap().len());
        wal.append([b"later".as_slice()]).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (got, report, _) = reopen(tmp.path()).unwrap();
        assert_eq!(got, [ckpt[0].clone(), ckpt[1].clone(), b"later".to_vec()]);
        assert_eq!(report.segments, 1);
    }

    #[test]
    fn leftover_tmp_is_removed_at_open() {
        let tmp = TempDir::new().unwrap();
        let recs = write_records(tmp.path(), 5, 1 << 20);
        let leftover = tmp.path().join("00000000000000000002.wal.tmp");
        fs::write(&leftover, b"half a checkpoint").unwrap();
        fs::write(tmp.path().join("notes.txt"), b"not ours").unwrap();
        let (got, report, _) = reopen(tmp.path()).unwrap();
        assert_eq!(got, recs);
        assert_eq!(report.segments, 1);
        assert!(!leftover.exists());
        assert!(tmp.path().join("notes.txt").exists());
    }

    #[test]
    fn crash_after_rename_before_deletes_replays_old_then_checkpoint() {
        let tmp = TempDir::new().unwrap();
        let old = write_records(tmp.path(), 30, 64);
        let saved: Vec<(PathBuf, Vec<u8>)> = segment_files(tmp.path())
            .into_iter()
            .map(|p| (p.clone(), fs::read(&p).unwrap()))
            .collect();
        let ckpt = [b"ckpt-1".as_slice(), b"ckpt-2".as_slice()];
        let (_, _, mut wal) = reopen(tmp.path()).unwrap();
        wal.checkpoint(ckpt, |_| {}).unwrap();
        drop(wal);
        for (p, bytes) in &saved {
            fs::write(p, bytes).unwrap();
        }
        let (got, report, wal) = reopen(tmp.path()).unwrap();
        let mut expected = old;
        expected.extend(ckpt.iter().map(|r| r.to_vec()));
        assert_eq!(got, expected);
        assert_eq!(report.segments, saved.len() + 1);
        assert_eq!(wal.segment_count(), saved.len() + 1);
    }
}
