//! Who may do what: bearer tokens, each with a role, checked on every client request of both
//! servers. The node-to-node service is not a client's: peers prove who they are with their
//! certificates (`tls`), not with tokens.
//!
//! The token file is re-read on demand (SIGHUP, or when it changes), so that a rotation never
//! needs a restart; a file that does not parse leaves the tokens in force as they were. Tokens
//! live in memory only as digests, and are never logged: logs name a token by its name.

pub mod grpc;
pub mod http;
pub mod policy;
mod tokens;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use prometheus::IntCounterVec;

pub use tokens::{Identity, Role, TokenError, TokenTable};

/// Why a request was refused; the label of `raftnode_auth_failures_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// No `Authorization` header (or `authorization` metadata).
    #[error("this request needs a token: send `Authorization: Bearer <token>`")]
    Missing,
    /// The header is not `Bearer <token>`.
    #[error("the Authorization header must be `Bearer <token>`")]
    Malformed,
    /// No such token.
    #[error("the token is not valid")]
    Unknown,
    /// The token's role does not allow this request.
    #[error("the token's role does not allow this request")]
    Forbidden,
}

impl AuthFailure {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Unknown => "unknown_token",
            AuthFailure::Forbidden => "forbidden",
        }
    }

    /// Whether the caller is unknown (401) rather than known and not allowed (403).
    pub fn unauthenticated(self) -> bool {
        self != AuthFailure::Forbidden
    }
}

/// The tokens in force, shared by both servers and replaced whole on a reload.
pub struct Authorizer {
    path: PathBuf,
    table: RwLock<Arc<TokenTable>>,
    failures: IntCounterVec,
}

impl Authorizer {
    /// Reads the token file at `path`; refusals count in `failures` (by reason).
    pub fn load(path: &Path, failures: IntCounterVec) -> Result<Authorizer, TokenError> {
        let table = TokenTable::read(path)?;
        Ok(Authorizer {
            path: path.to_path_buf(),
            table: RwLock::new(Arc::new(table)),
            failures,
        })
    }

    /// The token file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the token file as it is now, without putting it in force: a reload reads every
    /// credential file first and installs only when all of them parse.
    pub fn read(&self) -> Result<TokenTable, TokenError> {
        TokenTable::read(&self.path)
    }

    /// Puts `table` in force; returns how many tokens it holds.
    pub fn install(&self, table: TokenTable) -> usize {
        let n = table.len();
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
        n
    }

    fn table(&self) -> Arc<TokenTable> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Admits a request that sent `authorization` (the header's value, if any) and needs
    /// `needed`; counts and returns the refusal otherwise.
    pub fn check(
        &self,
        authorization: Option<&[u8]>,
        needed: Role,
    ) -> Result<Identity, AuthFailure> {
        let r = self.admit(authorization, needed);
        if let Err(f) = &r {
            self.failures.with_label_values(&[f.reason()]).inc();
        }
        r
    }

    fn admit(&self, authorization: Option<&[u8]>, needed: Role) -> Result<Identity, AuthFailure> {
        let value = authorization.ok_or(AuthFailure::Missing)?;
        let token = bearer(value).ok_or(AuthFailure::Malformed)?;
        let id = self.table().find(token).ok_or(AuthFailure::Unknown)?;
        if id.role < needed {
            return Err(AuthFailure::Forbidden);
        }
        Ok(id)
    }
}

/// The token of an `Authorization: Bearer <token>` value (the scheme is case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authorizer(text: &str) -> (tempfile::TempDir, Authorizer) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, text).unwrap();
        let failures = IntCounterVec::new(prometheus::Opts::new("f", "f"), &["reason"]).unwrap();
        let a = Authorizer::load(&path, failures).unwrap();
        (dir, a)
    }

    const FILE: &str = "\
        # role per token\n\
        reader-token-0123456789 read dashboards\n\
        writer-token-0123456789 write app\n\
        admin-token-01234567890 admin oncall\n";

    #[test]
    fn roles_allow_what_they_include() {
        let (_d, a) = authorizer(FILE);
        let ok = |t: &str, r| a.check(Some(format!("Bearer {t}").as_bytes()), r);
        assert_eq!(
            ok("reader-token-0123456789", Role::Read).unwrap().name,
            "dashboards"
        );
        assert_eq!(
            ok("reader-token-0123456789", Role::Write),
            Err(AuthFailure::Forbidden)
        );
        assert!(ok("writer-token-0123456789", Role::Read).is_ok());
        assert_eq!(
            ok("writer-token-0123456789", Role::Admin),
            Err(AuthFailure::Forbidden)
        );
        assert!(ok("admin-token-01234567890", Role::Admin).is_ok());
        assert_eq!(
            ok("no-such-token-0123456", Role::Read),
            Err(AuthFailure::Unknown)
        );
        assert_eq!(a.check(None, Role::Read), Err(AuthFailure::Missing));
        assert_eq!(
            a.check(Some(b"Basic abc"), Role::Read),
            Err(AuthFailure::Malformed)
        );
        assert!(a
            .check(Some(b"bearer   writer-token-0123456789  "), Role::Write)
            .is_ok());
        assert_eq!(
            a.failures.with_label_values(&["forbidden"]).get(),
            2,
            "refusals are counted by reason"
        );
    }

    #[test]
    fn a_reload_that_fails_keeps_the_tokens_in_force() {
        let (_d, a) = authorizer(FILE);
        std::fs::write(a.path(), "new-admin-token-0123456 admin\n").unwrap();
        assert_eq!(a.install(a.read().unwrap()), 1);
        assert!(a
            .check(Some(b"Bearer new-admin-token-0123456"), Role::Admin)
            .is_ok());
        assert_eq!(
            a.check(Some(b"Bearer admin-token-01234567890"), Role::Read),
            Err(AuthFailure::Unknown)
        );
        std::fs::write(a.path(), "short admin\n").unwrap();
        assert!(a.read().is_err());
        assert!(a
            .check(Some(b"Bearer new-admin-token-0123456"), Role::Admin)
            .is_ok());
    }
}
