//! The token file: one `token role [name]` per line, `#` comments and blank lines ignored.
//! Parsed strictly (a line that is not understood is an error naming its line, never its
//! token), and kept only as SHA-256 digests, so that a lookup's timing and a memory dump say
//! nothing about the tokens themselves.

use std::collections::HashMap;
use std::path::Path;

/// The identity a request was admitted with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The token's name, from its line of the file.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

/// What a token may do; each role includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads: GET of keys (any read mode), status, and the program's GET routes.
    Read,
    /// Reads, plus writes: put and delete, and the program's other routes.
    Write,
    /// Everything: groups, membership, leader transfer, the RPC-server restart.
    Admin,
}

impl Role {
    /// Its name in the token file.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        [Role::Read, Role::Write, Role::Admin]
            .into_iter()
            .find(|r| r.name() == s)
    }
}

/// Shorter tokens are refused: they could be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// It cannot be read.
    #[error("token file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A line is wrong; the message names the line, never the token.
    #[error("token file {path}, line {line}: {reason}")]
    Line {
        /// The file.
        path: String,
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// It lists no token: nobody could do anything.
    #[error("token file {0} lists no token")]
    Empty(String),
}

type Digest = [u8; 32];

fn digest(token: &[u8]) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The tokens of one reading of the file.
#[derive(Debug)]
pub struct TokenTable {
    by_digest: HashMap<Digest, Identity>,
}

impl TokenTable {
    /// Reads and parses the file at `path`.
    pub fn read(path: &Path) -> Result<TokenTable, TokenError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }

    /// Parses the text of a token file called `path` in errors.
    pub fn parse(text: &str, path: &str) -> Result<TokenTable, TokenError> {
        let mut by_digest = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let err = |reason: String| TokenError::Line {
                path: path.to_string(),
                line: line_no,
                reason,
            };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (token, role, name) = match fields.as_slice() {
                [t, r] => (*t, *r, format!("line-{line_no}")),
                [t, r, n] => (*t, *r, (*n).to_string()),
                _ => {
                    return Err(err(format!(
                        "expected `token role [name]`, found {} fields",
                        fields.len()
                    )))
                }
            };
            if token.len() < MIN_TOKEN_LEN {
                return Err(err(format!(
                    "the token is shorter than {MIN_TOKEN_LEN} characters"
                )));
            }
            let role = Role::parse(role)
                .ok_or_else(|| err(format!("unknown role {role:?}: read, write or admin")))?;
            if by_digest
                .insert(digest(token.as_bytes()), Identity { name, role })
                .is_some()
            {
                return Err(err("the token is listed twice".to_string()));
            }
        }
        if by_digest.is_empty() {
            return Err(TokenError::Empty(path.to_string()));
        }
        Ok(TokenTable { by_digest })
    }

    /// The identity of `token`, if it is one.
    pub fn find(&self, token: &[u8]) -> Option<Identity> {
        self.by_digest.get(&digest(token)).cloned()
    }

    /// How many tokens it holds.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether it holds none (never true of a parsed table).
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_are_named_and_tokens_never_shown() {
        let cases = [
            ("only-one-field-here-x", "line 1", "fields"),
            ("a-long-enough-token-1 owner", "line 1", "unknown role"),
            ("short read", "line 1", "shorter"),
            ("# c\n\na-long-enough-token-1 read a b", "line 3", "fields"),
            (
                "a-long-enough-token-1 read\na-long-enough-token-1 admin",
                "line 2",
                "twice",
            ),
        ];
        for (text, line, what) in cases {
            let e = TokenTable::parse(text, "t").unwrap_err().to_string();
            assert!(e.contains(line) && e.contains(what), "{text:?}: {e}");
            assert!(!e.contains("a-long-enough-token-1"), "{e} shows the token");
        }
        assert!(matches!(
            TokenTable::parse("# nothing\n", "t"),
            Err(TokenError::Empty(_))
        ));
    }

    #[test]
    fn names_default_to_the_line() {
        let t = TokenTable::parse("\nthe-token-0123456789 write\n", "t").unwrap();
        let id = t.find(b"the-token-0123456789").unwrap();
        assert_eq!((id.name.as_str(), id.role), ("line-2", Role::Write));
        assert!(t.find(b"the-token-012345678").is_none());
    }
}
