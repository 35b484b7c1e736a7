//! The node's credentials at run time: what it checks clients against, re-read on demand
//! ([`crate::Node::reload_security`], which the binary calls on SIGHUP) and when the files
//! change, so that rotating a token or a certificate never needs a restart. A file that does
//! not parse is logged and counted, and what was in force stays.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::auth::Authorizer;
use crate::node::config::NodeConfig;
use crate::node::error::NodeError;
use crate::node::shared::NodeCore;
use crate::tls::Tls;

/// How often the watch looks at the files' modification times.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Tokens in force after the reload, when a token file is configured.
    pub tokens: Option<usize>,
    /// Whether certificates were re-read (TLS is on).
    pub certificates: bool,
}

/// Why a reload left the credentials as they were.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The token file did not parse.
    #[error(transparent)]
    Tokens(#[from] crate::auth::TokenError),
    /// A certificate, key or CA file cannot be used.
    #[error(transparent)]
    Certificates(#[from] crate::tls::TlsError),
}

/// Re-reads every credential file; logs and counts the outcome.
pub(crate) fn reload(core: &NodeCore, why: &str) -> Result<ReloadReport, ReloadError> {
    let r = reload_files(core.auth.as_deref(), core.tls.as_deref());
    let result = match &r {
        Ok(report) => {
            tracing::info!(
                why,
                tokens = ?report.tokens,
                certificates = report.certificates,
                "credentials reloaded"
            );
            "ok"
        }
        Err(e) => {
            tracing::error!(why, error = %e, "credentials not reloaded; the previous ones stay in force");
            "error"
        }
    };
    core.rpc_metrics
        .security_reloads
        .with_label_values(&[result])
        .inc();
    r
}

/// Reads every file before it puts any in force: a reload takes effect whole or not at all,
/// never with new certificates and old tokens because the token file had a typo.
fn reload_files(auth: Option<&Authorizer>, tls: Option<&Tls>) -> Result<ReloadReport, ReloadError> {
    let table = auth.map(Authorizer::read).transpose()?;
    let state = tls.map(Tls::read).transpose()?;
    let tokens = auth.zip(table).map(|(a, t)| a.install(t));
    if let Some((t, s)) = tls.zip(state) {
        t.install(s);
    }
    Ok(ReloadReport {
        tokens,
        certificates: tls.is_some(),
    })
}

/// The files a reload reads.
fn watched(core: &NodeCore) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = core.auth.iter().map(|a| a.path().to_path_buf()).collect();
    files.extend(core.tls.iter().flat_map(|t| t.files().paths()));
    files
}

fn stamps(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

/// Reloads whenever a credential file's modification time changes, until `stop`.
pub(crate) async fn watch(core: Weak<NodeCore>, stop: CancellationToken) {
    let files = match core.upgrade() {
        Some(c) => watched(&c),
        None => return,
    };
    if files.is_empty() {
        return;
    }
    let mut seen = stamps(&files);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(WATCH_EVERY) => {}
        }
        let now = stamps(&files);
        if now == seen {
            continue;
        }
        seen = now;
        let Some(core) = core.upgrade() else { return };
        let _ = reload(&core, "a credential file changed");
    }
}

/// Says so when a secret file (a key, the token file) is readable by every user of the
/// machine: a secret is only as private as its file.
fn warn_if_world_readable(path: &std::path::Path, what: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o004 != 0 {
            tracing::warn!(
                file = %path.display(),
                "the {what} is readable by every user of this machine; make it readable by the \
                 node's user only (chmod 600)"
            );
        }
    }
}

/// Reads the TLS files at start: a bad file stops the start, naming the setting.
pub(crate) fn load_tls(config: &NodeConfig) -> Result<Option<Arc<Tls>>, NodeError> {
    let Some(files) = config.tls_files()? else {
        tracing::warn!(
            "no peer TLS (peer_cert_file, peer_key_file, peer_ca_file): node-to-node traffic is \
             plain text, and anyone who reaches the gRPC port can speak for a peer"
        );
        return Ok(None);
    };
    let client_tls = files.client.is_some();
    warn_if_world_readable(&files.peer_key, "peer key file");
    if let Some((_, key)) = &files.client {
        warn_if_world_readable(key, "client key file");
    }
    let tls = Tls::load(config.node_id, files).map_err(|e| NodeError::Config {
        field: e.setting,
        reason: e.to_string(),
    })?;
    if !client_tls {
        tracing::warn!(
            "no client TLS (client_cert_file, client_key_file): the HTTP API is plain text; \
             gRPC clients see the peer certificate"
        );
    }
    Ok(Some(tls))
}

/// Reads the token file at start: a bad file stops the start, naming the setting.
pub(crate) fn load_tokens(
    config: &NodeConfig,
    failures: prometheus::IntCounterVec,
) -> Result<Option<Arc<Authorizer>>, NodeError> {
    let Some(path) = &config.auth_token_file else {
        tracing::warn!(
            "no auth_token_file: any client that reaches the gRPC or HTTP port can read, write \
             and administer this node"
        );
        return Ok(None);
    };
    warn_if_world_readable(path, "token file");
    let a = Authorizer::load(path, failures).map_err(|e| NodeError::Config {
        field: "auth_token_file",
        reason: e.to_string(),
    })?;
    Ok(Some(Arc::new(a)))
}
