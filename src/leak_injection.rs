//! Deliberate leaks, compiled only with the `leak-injection` feature, to prove that detection
//! works end to end: an operator (or a test) arms one, and the next stop of a group or of the
//! shared RPC server leaves exactly that resource behind, to be named by the leak verdict.
//!
//! Also one deliberate fault, for the same kind of proof of exactly-once writes: the reply to
//! a forwarded proposal lost after the proposal took effect, or the leader dying right then.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use crate::group::Group;
use crate::ledger::{Direction, ItemGuard, Owner};

/// What an armed leak leaves behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeakKind {
    /// A task that ignores its owner's cancellation.
    Task,
    /// A thread that never exits.
    Thread,
    /// A socket nobody closes.
    Connection,
}

/// What happens to the next forwarded proposal this node applies as leader, instead of its
/// reply reaching the node that forwarded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposeFault {
    /// The reply is lost: the forwarding node hears "unavailable" and proposes again.
    LoseReply,
    /// This process exits at once (status 137), as if killed.
    Exit,
}

/// Leaks armed for the next stops, and the fault armed for the next forwarded proposal.
#[derive(Default)]
pub struct Armed {
    group: Mutex<Vec<LeakKind>>,
    rpc_server: Mutex<u32>,
    propose: Mutex<Option<ProposeFault>>,
}

/// What an injected connection leak holds forever: the socket and its ledger guard.
static KEPT: Mutex<Vec<(Option<std::net::TcpStream>, ItemGuard)>> = Mutex::new(Vec::new());

fn keep(stream: Option<std::net::TcpStream>, guard: ItemGuard) {
    KEPT.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((stream, guard));
}

impl Armed {
    /// Arms one leak of `kind` for the next group stop.
    pub fn arm_group(&self, kind: LeakKind) {
        self.group
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(kind);
    }

    /// Arms `fault` for the next forwarded proposal that takes effect here.
    pub fn arm_propose(&self, fault: ProposeFault) {
        *self.propose.lock().unwrap_or_else(|e| e.into_inner()) = Some(fault);
    }

    /// The armed proposal fault, disarmed.
    pub fn take_propose(&self) -> Option<ProposeFault> {
        self.propose
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Arms one leaked inbound connection for the next stop of the shared RPC server.
    pub fn arm_rpc_server(&self) {
        *self.rpc_server.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    }

    /// Leaves the oldest armed resource in the stopping group's owner.
    /// One armed leak per stop, so that arming several spreads them over several stops.
    pub fn before_group_stop(&self, group: &Group, grpc_addr: SocketAddr) {
        let kind = {
            let mut armed = self.group.lock().unwrap_or_else(|e| e.into_inner());
            (!armed.is_empty()).then(|| armed.remove(0))
        };
        let owner = group.owner();
        if let Some(kind) = kind {
            tracing::warn!(
                group = group.id,
                ?kind,
                "injecting a leak into this group's stop"
            );
            match kind {
                // Ignores the owner's cancellation, as a forgotten background loop would.
                LeakKind::Task => {
                    owner.spawn("injected-leak-task", std::future::pending::<()>());
                }
                LeakKind::Thread => {
                    let _ = owner.spawn_thread("rn-injected-leak", || loop {
                        std::thread::sleep(Duration::from_secs(3600));
                    });
                }
                // A real socket to our own gRPC port that nobody will ever close.
                LeakKind::Connection => {
                    let stream =
                        std::net::TcpStream::connect_timeout(&grpc_addr, Duration::from_secs(1))
                            .ok();
                    let guard = owner
                        .track_connection(Direction::Outbound, format!("{grpc_addr} (injected)"));
                    keep(stream, guard);
                }
            }
        }
    }

    /// Leaves one inbound connection on the stopping RPC server's books.
    pub fn before_rpc_stop(&self, owner: &Owner) {
        let mut n = self.rpc_server.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..*n {
            tracing::warn!("injecting a leaked inbound connection into the gRPC server's stop");
            keep(
                None,
                owner.track_connection(Direction::Inbound, "injected inbound connection"),
            );
        }
        *n = 0;
    }
}
