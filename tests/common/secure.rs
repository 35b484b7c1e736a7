//! The suite's secure mode: the whole process-test suite run again with TLS and tokens on.
//!
//! With `RAFTNODE_TEST_SECURE` naming a directory made by `scripts/dev-certs DIR 9`, every node
//! the harness starts runs with peer mutual TLS (node N presents `node-N.pem`), TLS for clients
//! on gRPC and HTTP (`server.pem`), and the token file; the harness's HTTP clients trust that
//! CA and send the admin token. `scripts/test-all` runs the suite once plain and once so.
//!
//! A test that configures security itself (any of [`OWN_SECURITY_FLAGS`] among a node's extra
//! flags) keeps exactly its own configuration, and a test that must speak plain text on
//! purpose (raw sockets, raw node-to-node calls) turns it off for its nodes with
//! `Node::suite_security = false`. Everything else runs secured without knowing it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use raftnode::harness::process::ServeArgs;

/// The variable that turns secure mode on: the dev-certs directory.
pub const ENV: &str = "RAFTNODE_TEST_SECURE";

/// Node ids the dev-certs directory must hold certificates for (`scripts/dev-certs DIR 9`).
pub const NODES: u64 = 9;

/// Flags by which a test sets its own security; the suite's is then left out for that node.
pub const OWN_SECURITY_FLAGS: &[&str] = &[
    "--peer-cert-file",
    "--peer-key-file",
    "--peer-ca-file",
    "--client-cert-file",
    "--client-key-file",
    "--client-ca-file",
    "--auth-token-file",
    "--metrics-auth",
];

/// The secure mode's certificates and admin token.
#[derive(Debug)]
pub struct Material {
    pub dir: PathBuf,
    pub ca_pem: Vec<u8>,
    pub admin_token: String,
}

impl Material {
    fn load(dir: &Path) -> Material {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "{ENV}={}: reading {}: {e} (make the directory with scripts/dev-certs DIR {NODES})",
                    dir.display(),
                    path.display()
                )
            })
        };
        let last = dir.join(format!("node-{NODES}.pem"));
        assert!(
            last.exists(),
            "{ENV}={}: no {} (make it with scripts/dev-certs DIR {NODES})",
            dir.display(),
            last.display()
        );
        Material {
            dir: dir.to_path_buf(),
            ca_pem: read("ca.pem"),
            admin_token: String::from_utf8_lossy(&read("admin.token"))
                .trim()
                .to_string(),
        }
    }

    /// The flags that secure node `id`: peer mTLS, client TLS and the token file.
    pub fn serve_flags(&self, id: u64) -> Vec<String> {
        assert!(
            (1..=NODES).contains(&id),
            "secure mode has certificates for nodes 1..={NODES}, not {id}"
        );
        let f = |name: &str| self.dir.join(name).display().to_string();
        let mut flags = ServeArgs::peer_tls_flags(&self.dir, id);
        flags.extend([
            "--client-cert-file".to_string(),
            f("server.pem"),
            "--client-key-file".to_string(),
            f("server-key.pem"),
            "--auth-token-file".to_string(),
            f("tokens"),
        ]);
        flags
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

/// The secure mode's material, or `None` when the suite runs plain.
pub fn material() -> Option<&'static Material> {
    static MATERIAL: OnceLock<Option<Material>> = OnceLock::new();
    MATERIAL
        .get_or_init(|| {
            let dir = std::env::var_os(ENV).filter(|d| !d.is_empty())?;
            Some(Material::load(Path::new(&dir)))
        })
        .as_ref()
}

/// Whether `args` set security themselves.
pub fn sets_own_security(args: &[String]) -> bool {
    args.iter()
        .any(|a| OWN_SECURITY_FLAGS.contains(&a.split('=').next().unwrap_or(a)))
}
