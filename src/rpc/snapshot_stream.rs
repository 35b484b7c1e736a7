//! Snapshots of any size between nodes: the leader streams the snapshot file in pieces of
//! [`CHUNK_BYTES`] over `RaftService/SendSnapshot`, each with its offset and checksum; the
//! follower appends them to a temporary file of its own and installs it when the stream ends.
//!
//! Why a stream: a snapshot as one message was bounded by the message size, held in memory
//! several times over on both sides, and given one fixed timeout, so a group whose state
//! outgrew those could never bring a lagging follower back. Here neither side holds more than
//! a piece or two, and the deadline grows with the file. A transfer that breaks is started
//! again from the beginning by openraft's next attempt; the follower's partial file is removed
//! as soon as its stream ends.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::raft::SnapshotResponse;
use tonic::{Status, Streaming};

use crate::ledger::Owner;
use crate::raft::snapshot_data::SnapshotData;
use crate::raft::state_machine::Snapshot;
use crate::raft::types::{GroupId, SnapshotMeta, TypeConfig, Vote};
use crate::rpc::client::{self, CallError};
use crate::rpc::cluster::PeerClient;
use crate::rpc::codec;
use crate::rpc::pb::SnapshotChunk;
use crate::rpc::router::Router;
use crate::storage::snapshot_file::SnapshotFile;

/// The size of one piece: large enough that per-message costs vanish, small enough that a
/// piece is far below any message limit.
pub const CHUNK_BYTES: usize = 1 << 20;

/// How long a follower waits for the next piece before it gives the transfer up: a leader
/// that vanished without closing its connection must not hold a partial file for ever.
const PIECE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the first piece carries besides its data: the leader's vote, the snapshot's
/// metadata, and the file's length.
type Header = (Vote, SnapshotMeta, u64);

/// Sends snapshot `file` of `group`, described by `meta`, to the peer behind `client`, within
/// `timeout`; file reads run on `owner`'s blocking threads. Returns the follower's answer to
/// the install.
#[allow(clippy::too_many_arguments)]
pub async fn send(
    mut client: PeerClient,
    owner: &Owner,
    group: GroupId,
    vote: Vote,
    meta: SnapshotMeta,
    file: SnapshotFile,
    timeout: Duration,
    span: &tracing::Span,
) -> Result<SnapshotResponse<TypeConfig>, CallError> {
    let file = Arc::new(file);
    let len = file.len();
    let header: Header = (vote, meta, len);
    let header = codec::encode(&header).map_err(CallError::Status)?;
    // A read that fails ends the stream early; the follower then refuses the short file, and
    // this side reports the read's own error rather than that refusal.
    let read_error: Arc<Mutex<Option<String>>> = Arc::default();
    let pieces = {
        let read_error = Arc::clone(&read_error);
        let owner = owner.clone();
        futures::stream::unfold(0u64, move |offset| {
            let file = Arc::clone(&file);
            let owner = owner.clone();
            let read_error = Arc::clone(&read_error);
            let header = if offset == 0 {
                header.clone()
            } else {
                Vec::new()
            };
            async move {
                if offset >= len {
                    return None;
                }
                let n = (len - offset).min(CHUNK_BYTES as u64) as usize;
                let read = owner
                    .spawn_blocking("snapshot-read", move || file.read_range(offset, n))
                    .await;
                let read = read.map_err(|e| e.to_string());
                let data = match read.and_then(|r| r.map_err(|e| e.to_string())) {
                    Ok(data) => data,
                    Err(e) => {
                        *lock(&read_error) = Some(e);
                        return None;
                    }
                };
                let piece = SnapshotChunk {
                    group_id: group,
                    header,
                    offset,
                    crc32: crc32fast::hash(&data),
                    data,
                };
                Some((piece, offset + n as u64))
            }
        })
    };
    let mut request = tonic::Request::new(pieces);
    if !span.is_none() {
        crate::otel::propagation::inject_metadata(span, request.metadata_mut());
    }
    let sent = tokio::time::timeout(timeout, client.send_snapshot(request)).await;
    if let Some(e) = lock(&read_error).take() {
        return Err(CallError::Status(Status::internal(format!(
            "reading the snapshot to send: {e}"
        ))));
    }
    match sent {
        Err(_) => Err(CallError::Timeout(timeout)),
        Ok(Err(status)) => Err(CallError::Status(status)),
        Ok(Ok(reply)) => client::response(&reply.into_inner().payload),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The group a stream is for, from its first piece, before anything else is read: the server
/// names its span and its metrics by it.
pub(crate) async fn first_piece(
    stream: &mut Streaming<SnapshotChunk>,
) -> Result<SnapshotChunk, Status> {
    next_piece(stream)
        .await?
        .ok_or_else(|| Status::invalid_argument("an empty snapshot stream"))
}

async fn next_piece(
    stream: &mut Streaming<SnapshotChunk>,
) -> Result<Option<SnapshotChunk>, Status> {
    match tokio::time::timeout(PIECE_TIMEOUT, stream.message()).await {
        Ok(piece) => piece,
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no piece of the snapshot for {PIECE_TIMEOUT:?}"
        ))),
    }
}

/// Receives the rest of a snapshot stream that began with `first`, then installs it; returns
/// the reply payload (the install's `Result<SnapshotResponse, String>`).
pub(crate) async fn receive(
    router: &dyn Router,
    first: SnapshotChunk,
    mut rest: Streaming<SnapshotChunk>,
) -> Result<Vec<u8>, Status> {
    let group = first.group_id;
    let (vote, meta, len): Header = codec::decode(&first.header)?;
    let raft = router
        .raft(group, true)
        .ok_or_else(|| Status::not_found(format!("group {group} is not running on this node")))?;
    let dir = router.snapshot_dir().to_path_buf();
    let mut file = blocking(move || SnapshotFile::receiving(&dir, group)).await?;
    let mut next = Some(first);
    while let Some(piece) = next.take() {
        check(&piece, group, file.written(), len)?;
        file = blocking(move || file.write(&piece.data).map(|()| file)).await?;
        if file.written() < len {
            next = next_piece(&mut rest).await?;
        }
    }
    if file.written() != len {
        return Err(Status::invalid_argument(format!(
            "the snapshot stream of group {group} ended after {} of {len} bytes",
            file.written()
        )));
    }
    let file = blocking(move || file.finish()).await?;
    let snapshot = Snapshot {
        meta,
        snapshot: SnapshotData::File(file),
    };
    let installed = raft
        .install_full_snapshot(vote, snapshot)
        .await
        .map_err(|e| e.to_string());
    codec::encode(&installed)
}

/// Whether `piece` may be appended to a file of `group` that holds `written` of `len` bytes.
fn check(piece: &SnapshotChunk, group: GroupId, written: u64, len: u64) -> Result<(), Status> {
    if piece.group_id != group {
        return Err(Status::invalid_argument(format!(
            "a piece for group {} in the snapshot stream of group {group}",
            piece.group_id
        )));
    }
    if piece.offset != written {
        return Err(Status::invalid_argument(format!(
            "a snapshot piece at offset {} where {written} was expected",
            piece.offset
        )));
    }
    if written + piece.data.len() as u64 > len {
        return Err(Status::invalid_argument(format!(
            "the snapshot stream carries more than the {len} bytes it announced"
        )));
    }
    if crc32fast::hash(&piece.data) != piece.crc32 {
        return Err(Status::data_loss(format!(
            "the snapshot piece at offset {} fails its checksum",
            piece.offset
        )));
    }
    Ok(())
}

/// Runs file work off the runtime; a failure is this node's, reported as INTERNAL.
async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, Status>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    crate::ledger::spawn_blocking_current(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(group: GroupId, offset: u64, data: &[u8]) -> SnapshotChunk {
        SnapshotChunk {
            group_id: group,
            header: Vec::new(),
            offset,
            data: data.to_vec(),
            crc32: crc32fast::hash(data),
        }
    }

    #[test]
    fn pieces_out_of_place_or_damaged_are_refused() {
        assert!(check(&piece(1, 0, b"abc"), 1, 0, 10).is_ok());
        let wrong_group = check(&piece(2, 0, b"abc"), 1, 0, 10).unwrap_err();
        assert_eq!(wrong_group.code(), tonic::Code::InvalidArgument);
        let gap = check(&piece(1, 4, b"abc"), 1, 3, 10).unwrap_err();
        assert!(gap.message().contains("offset 4 where 3"), "{gap}");
        let long = check(&piece(1, 8, b"abc"), 1, 8, 10).unwrap_err();
        assert!(long.message().contains("more than"), "{long}");
        let mut damaged = piece(1, 0, b"abc");
        damaged.data[1] ^= 1;
        assert_eq!(
            check(&damaged, 1, 0, 10).unwrap_err().code(),
            tonic::Code::DataLoss
        );
    }
}
