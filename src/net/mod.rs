//! What both servers (the shared gRPC server and the HTTP server) put between the listening
//! socket and the protocol: a capped accept loop that survives fd exhaustion, and an
//! inactivity bound on accepted connections. Kept apart from either server so that the two
//! apply the same limits the same way.

pub mod accept;
pub mod idle;

pub use accept::{Accepted, Admission};
pub use idle::Idle;
