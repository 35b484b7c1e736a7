//! The leak verdict: a plain function from what an owner still holds after its stop deadline to
//! what gets counted and named. Kept free of I/O so that the policy is tested on its own.

/// Direction of a counted connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Accepted by one of our servers.
    Inbound,
    /// Dialled by us.
    Outbound,
}

impl Direction {
    /// As in the `direction` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// One resource still alive after its owner stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Residual {
    /// A task, by name.
    Task(String),
    /// A thread, by name.
    Thread(String),
    /// A connection, by direction and peer.
    Connection(Direction, String),
}

/// A leak verdict: how many of each resource remained, and their names for the error log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leak {
    /// Tasks left.
    pub tasks: u64,
    /// Threads left.
    pub threads: u64,
    /// Connections left.
    pub connections: u64,
    /// What each was, for the error log.
    pub names: Vec<String>,
}

/// Anything left after the deadline is a leak; nothing left is no verdict at all.
pub fn verdict(residual: &[Residual]) -> Option<Leak> {
    if residual.is_empty() {
        return None;
    }
    let mut leak = Leak {
        tasks: 0,
        threads: 0,
        connections: 0,
        names: Vec::with_capacity(residual.len()),
    };
    for r in residual {
        match r {
            Residual::Task(n) => {
                leak.tasks += 1;
                leak.names.push(format!("task {n}"));
            }
            Residual::Thread(n) => {
                leak.threads += 1;
                leak.names.push(format!("thread {n}"));
            }
            Residual::Connection(d, peer) => {
                leak.connections += 1;
                let dir = match d {
                    Direction::Inbound => "inbound",
                    Direction::Outbound => "outbound",
                };
                leak.names.push(format!("{dir} connection {peer}"));
            }
        }
    }
    Some(leak)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_left_is_no_leak() {
        assert_eq!(verdict(&[]), None);
    }

    #[test]
    fn each_kind_is_counted_and_named() {
        let leak = verdict(&[
            Residual::Task("apply".into()),
            Residual::Thread("rn-wal".into()),
            Residual::Connection(Direction::Inbound, "127.0.0.1:5000".into()),
            Residual::Task("snapshot".into()),
        ])
        .unwrap();
        assert_eq!((leak.tasks, leak.threads, leak.connections), (2, 1, 1));
        assert_eq!(
            leak.names,
            vec![
                "task apply",
                "thread rn-wal",
                "inbound connection 127.0.0.1:5000",
                "task snapshot"
            ]
        );
    }
}
