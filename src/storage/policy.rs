//! The storage engine's decisions, as plain functions over plain data: how the writer thread
//! forms one batch (one write and one fsync) out of what the groups queued, and when the WAL
//! is checkpointed. Tested here without files or threads.

/// Bounds of one WAL batch: a burst can neither delay its first writer's fsync without end nor
/// make one write of unbounded size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most queued operations in one batch.
    pub max_ops: usize,
    /// Most payload bytes in one batch; a single larger operation still forms a batch alone.
    pub max_bytes: usize,
}

/// The writer's limits.
pub const BATCH_LIMITS: BatchLimits = BatchLimits {
    max_ops: 4096,
    max_bytes: 32 << 20,
};

/// Bytes of items in one WAL frame, at most (a larger item goes alone): batches are at most
/// this size already, so only one large append becomes several frames (and fsyncs).
pub const FRAME_BYTES: usize = 32 << 20;

/// Bytes of writes that need no fsync held back before they are written anyway.
pub const UNSYNCED_BYTES: usize = 1 << 20;

/// How many of the items of `sizes`, in order, go in each frame: up to `max_bytes` each, and
/// at least one.
pub fn frames(sizes: &[usize], max_bytes: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut n, mut bytes) = (0usize, 0usize);
    for &size in sizes {
        if n > 0 && bytes + size > max_bytes {
            out.push(n);
            (n, bytes) = (0, 0);
        }
        n += 1;
        bytes += size;
    }
    if n > 0 {
        out.push(n);
    }
    out
}

/// A batch being formed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Operations admitted so far.
    pub ops: usize,
    /// Their payload bytes.
    pub bytes: usize,
}

impl Batch {
    /// Admits an operation of `bytes` if it fits within `limits`; the first always does, so
    /// that every operation is written eventually.
    pub fn admit(&mut self, bytes: usize, limits: BatchLimits) -> bool {
        let fits = self.ops == 0
            || (self.ops < limits.max_ops && self.bytes.saturating_add(bytes) <= limits.max_bytes);
        if fits {
            self.ops += 1;
            self.bytes = self.bytes.saturating_add(bytes);
        }
        fits
    }
}

/// What the checkpoint decision looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalSize {
    /// Bytes in every live segment.
    pub total_bytes: u64,
    /// Live segments, the active one included.
    pub segments: usize,
    /// Size of the last checkpoint (0 before the first).
    pub last_checkpoint_bytes: u64,
    /// The configured threshold (`--wal-checkpoint-bytes`).
    pub threshold_bytes: u64,
}

/// Whether the live state should be rewritten into a fresh segment now: the WAL has grown past
/// the threshold, to at least twice what the last checkpoint wrote (so that a large live state
/// does not checkpoint after every batch), and there is an older segment to drop.
pub fn checkpoint_due(w: WalSize) -> bool {
    w.total_bytes >= w.threshold_bytes
        && w.total_bytes >= w.last_checkpoint_bytes.saturating_mul(2)
        && w.segments >= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_bounded_by_ops_and_bytes() {
        let limits = BatchLimits {
            max_ops: 3,
            max_bytes: 100,
        };
        // (sizes offered, how many are admitted before the first refusal)
        let cases: &[(&[usize], usize)] = &[
            (&[10, 10, 10, 10], 3), // op bound
            (&[60, 30, 20], 2),     // byte bound: 60 + 30 fits, + 20 does not
            (&[500, 1], 1),         // one oversize op forms a batch alone
            (&[100], 1),            // exactly the bound
            (&[0, 0, 0, 0], 3),     // empty payloads still count as ops
            (&[40, 61], 1),         // the second would pass 100
        ];
        for (sizes, admitted) in cases {
            let mut b = Batch::default();
            let n = sizes.iter().take_while(|s| b.admit(**s, limits)).count();
            assert_eq!(n, *admitted, "sizes {sizes:?}");
            assert_eq!(b.ops, *admitted);
        }
    }

    #[test]
    fn checkpoint_trigger() {
        let w = |total, segments, last| WalSize {
            total_bytes: total,
            segments,
            last_checkpoint_bytes: last,
            threshold_bytes: 1000,
        };
        let cases = [
            (w(999, 5, 0), false),    // under the threshold
            (w(1000, 5, 0), true),    // at it
            (w(1000, 1, 0), false),   // nothing older to drop
            (w(1500, 3, 800), false), // not yet twice the last checkpoint
            (w(1600, 3, 800), true),  // twice it
            (w(5000, 2, 0), true),
        ];
        for (input, due) in cases {
            assert_eq!(checkpoint_due(input), due, "{input:?}");
        }
    }
}
