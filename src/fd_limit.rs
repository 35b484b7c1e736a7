//! The process's file-descriptor budget. Every connection, WAL segment and table file is an
//! fd; the usual soft limit of 1,024 would run out long before `max_connections` does, so the
//! binary raises the soft limit to the hard one at start (as the Go runtime does), and says
//! when even that cannot hold both servers full.

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit now in force.
pub fn raise() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Ok(lim.rlim_cur)
}

/// Descriptors the node needs besides its two servers' connections: the WAL, the state
/// engine's tables, peer channels, the process's own.
const RESERVE: u64 = 1024;

/// The soft limit that holds `max_connections` on both servers and the node's own files.
pub fn needed(max_connections: usize) -> u64 {
    (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(RESERVE)
}
