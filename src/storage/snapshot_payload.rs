//! The payload of a snapshot file: the group's keys and values, as pairs, in key order. Files
//! of earlier versions hold the KV store's own encoding instead, which is still read.

use std::io::{self, Read, Write};

use crate::raft::types::GroupId;
use crate::storage::engine::{View, TAG_DATA};

/// How a snapshot file's payload is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Each key and value with a u32 length before it (format 3).
    Pairs,
    /// A u64 count, then MessagePack pairs of a string key and bytes (format 2's KV store).
    KvCountedPairs,
}

/// An `InvalidData` error: bytes read back from a file or the engine that do not decode.
pub fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Writes a group's keys and values from `view`: each as a little-endian u32 length and the
/// key, then a u32 length and the value.
pub fn write_pairs(view: &View, group: GroupId, out: &mut dyn Write) -> io::Result<()> {
    let mut out = io::BufWriter::with_capacity(1 << 20, out);
    for pair in view.scan(group, TAG_DATA) {
        let (k, v) = pair?;
        for part in [&k, &v] {
            let len = u32::try_from(part.len()).map_err(invalid)?;
            out.write_all(&len.to_le_bytes())?;
            out.write_all(part)?;
        }
    }
    out.flush()
}

/// Reads one length-prefixed part; None at a clean end of the payload.
fn read_part(input: &mut dyn Read, first: bool) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    if first {
        let mut got = 0;
        while got < 4 {
            match input.read(&mut len[got..])? {
                0 if got == 0 => return Ok(None),
                0 => return Err(invalid("a snapshot pair is cut short")),
                n => got += n,
            }
        }
    } else {
        input.read_exact(&mut len)?;
    }
    let mut part = vec![0u8; u32::from_le_bytes(len) as usize];
    input.read_exact(&mut part)?;
    Ok(Some(part))
}

/// The pairs of a payload, in either format, handed to `put` one by one.
pub fn read_pairs(
    input: &mut dyn Read,
    payload: Payload,
    mut put: impl FnMut(Vec<u8>, Vec<u8>) -> io::Result<()>,
) -> io::Result<()> {
    match payload {
        Payload::Pairs => {
            while let Some(k) = read_part(input, true)? {
                let v = read_part(input, false)?.ok_or_else(|| invalid("a value is missing"))?;
                put(k, v)?;
            }
        }
        Payload::KvCountedPairs => {
            let mut n = [0u8; 8];
            input.read_exact(&mut n)?;
            let mut input = input;
            for _ in 0..u64::from_le_bytes(n) {
                let (k, v): (String, serde_bytes::ByteBuf) =
                    rmp_serde::decode::from_read(&mut input).map_err(invalid)?;
                put(k.into_bytes(), v.into_vec())?;
            }
        }
    }
    Ok(())
}
