//! The allocator policy of the `raftnode` process (not of a program that embeds the library,
//! which chooses its own).
//!
//! glibc raises its mmap threshold each time a large block is freed, up to 32 MiB, so that after
//! the first large values (256 KiB puts, log entries, engine blocks) such blocks come from the
//! heap arenas instead of their own mappings. The heap then fragments and is not returned: a
//! state-engine load of 256 KiB values held 1,072 MiB of RSS after 4 GiB with glibc's defaults,
//! and 84 MiB with the threshold fixed (docs/STORAGE.md). Fixing the threshold turns the dynamic
//! raise off; bounding the arenas keeps every worker thread from growing a heap of its own.
//! An operator's own `MALLOC_MMAP_THRESHOLD_` or `MALLOC_ARENA_MAX` wins.
//!
//! Small blocks still come from the heap, and glibc returns only the top of a heap to the OS:
//! pages freed in its middle stay resident. Under a load of 1 KiB puts, 500 of a node's 644 MiB
//! were such free pages (one `malloc_trim(0)` took it to 148 MiB), so the node hands them back
//! every [`TRIM_EVERY`].

use std::time::Duration;

use crate::ledger::Owner;

/// How often freed heap pages are handed back to the OS.
pub const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Blocks this large or larger get a mapping of their own, returned to the OS when freed.
const MMAP_THRESHOLD: i32 = 128 << 10;

/// Applies the policy; call it first thing in `main`, before other threads start.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |var: &str| std::env::var_os(var).is_some();
        // SAFETY: mallopt only changes allocator parameters; called before any thread starts.
        unsafe {
            if !set("MALLOC_MMAP_THRESHOLD_") {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            }
            if !set("MALLOC_ARENA_MAX") {
                let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
                libc::mallopt(libc::M_ARENA_MAX, cores.clamp(2, 8) as i32);
            }
        }
    }
}

/// Hands the heap pages that are free back to the OS (glibc's `malloc_trim`). It walks the
/// heaps, so it runs on a thread of its own.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages; it is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Starts the thread that trims every [`TRIM_EVERY`] until `owner` stops. One thread for the
/// process's life: a blocking-pool thread per trim would come and go, and the thread count
/// that leak checks compare across restarts would flicker with it.
pub fn start_trimming(owner: &Owner) -> std::io::Result<()> {
    let token = owner.token().clone();
    owner.spawn_thread("rn-malloc-trim", move || {
        // Polled, so that a stop is seen within 100 ms.
        let step = Duration::from_millis(100);
        loop {
            let mut waited = Duration::ZERO;
            while waited < TRIM_EVERY {
                if token.is_cancelled() {
                    return;
                }
                std::thread::sleep(step);
                waited += step;
            }
            trim();
        }
    })?;
    Ok(())
}
