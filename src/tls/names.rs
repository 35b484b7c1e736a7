//! The name a node's certificate carries: `raftnode-node-<id>`, as a DNS subject alternative
//! name. A peer dials a node under that name, so the node must prove it is the node it dials;
//! and a node checks that a caller's certificate names the node id the caller claims.

use rustls::client::verify_server_name;
use rustls::server::ParsedCertificate;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::raft::types::NodeId;

/// The DNS name of node `id`.
pub fn node_name(id: NodeId) -> String {
    format!("raftnode-node-{id}")
}

/// The server name to dial node `id` under.
pub fn server_name(id: NodeId) -> ServerName<'static> {
    match ServerName::try_from(node_name(id)) {
        Ok(n) => n,
        // "raftnode-node-" and digits are always a valid DNS name.
        Err(_) => unreachable!("raftnode-node-<id> is a DNS name"),
    }
}

/// Whether the SNI a client sent names a node: peers dial under it.
pub fn is_node_name(sni: &str) -> bool {
    sni.strip_prefix("raftnode-node-")
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `cert` names node `id`.
pub fn names_node(cert: &CertificateDer<'_>, id: NodeId) -> bool {
    let Ok(parsed) = ParsedCertificate::try_from(cert) else {
        return false;
    };
    verify_server_name(&parsed, &server_name(id)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names() {
        assert_eq!(node_name(3), "raftnode-node-3");
        assert!(is_node_name("raftnode-node-12"));
        assert!(!is_node_name("raftnode-node-"));
        assert!(!is_node_name("raftnode-node-1x"));
        assert!(!is_node_name("node1.example"));
    }
}
