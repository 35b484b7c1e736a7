//! The operator's CLI client: `raftnode kv|status|group` against a node's HTTP API.

use std::time::Duration;

use clap::{Args, Subcommand};

/// Which node a client command talks to.
#[derive(Debug, Args)]
pub struct Target {
    /// HTTP address of the node to talk to.
    #[arg(
        long,
        env = "RAFTNODE_HTTP_ADDR",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub http_addr: String,
    /// How to reach it.
    #[command(flatten)]
    pub credentials: Credentials,
}

/// What a client needs to reach secured nodes: HTTPS and the CA to trust, a client
/// certificate, a bearer token. Shared by the CLI's commands and the soak.
#[derive(Debug, Clone, Default, Args)]
pub struct Credentials {
    /// Talk HTTPS, trusting the CA in this PEM file (the node's client certificate's CA).
    #[arg(long, env = "RAFTNODE_CA_FILE", value_name = "FILE", global = true)]
    pub ca_file: Option<std::path::PathBuf>,
    /// A client certificate and key (PEM, in one file or two: see --key-file) to present to
    /// nodes that require one (--client-ca-file).
    #[arg(long, env = "RAFTNODE_CERT_FILE", value_name = "FILE", global = true)]
    pub cert_file: Option<std::path::PathBuf>,
    /// The key of --cert-file.
    #[arg(long, env = "RAFTNODE_KEY_FILE", value_name = "FILE", global = true)]
    pub key_file: Option<std::path::PathBuf>,
    /// File holding the bearer token to send (its first line). Wins over RAFTNODE_TOKEN.
    #[arg(long, value_name = "FILE", global = true)]
    pub token_file: Option<std::path::PathBuf>,
    /// The bearer token to send, when the node checks tokens.
    #[arg(
        long = "token",
        env = "RAFTNODE_TOKEN",
        hide_env_values = true,
        global = true,
        hide = true
    )]
    pub token: Option<String>,
}

impl Credentials {
    /// `https` when a CA is given, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.ca_file.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The token to send, if any: from the file, else from the variable.
    fn token(&self) -> Result<Option<String>, ClientError> {
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path).map_err(|e| ClientError::Token {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            let token = text.lines().next().unwrap_or("").trim().to_string();
            if token.is_empty() {
                return Err(ClientError::Token {
                    path: path.display().to_string(),
                    reason: "it is empty".into(),
                });
            }
            return Ok(Some(token));
        }
        Ok(self
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from))
    }

    /// An HTTP client that trusts the CA, presents the certificate and sends the token with
    /// every request.
    pub fn http_client(&self, timeout: Duration) -> Result<reqwest::Client, ClientError> {
        let mut builder = reqwest::Client::builder().timeout(timeout);
        if let Some(ca) = &self.ca_file {
            let pem = read_file(ca)?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| ClientError::Tls {
                path: ca.display().to_string(),
                reason: e.to_string(),
            })?;
            builder = builder
                .tls_built_in_root_certs(false)
                .add_root_certificate(cert);
        }
        if let Some(cert) = &self.cert_file {
            let mut pem = read_file(cert)?;
            if let Some(key) = &self.key_file {
                pem.extend(read_file(key)?);
            }
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| ClientError::Tls {
                path: cert.display().to_string(),
                reason: e.to_string(),
            })?;
            builder = builder.identity(id);
        }
        if let Some(token) = self.token()? {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ClientError::Token {
                    path: self.token_source(),
                    reason: "the token holds characters a header cannot carry".into(),
                })?;
            value.set_sensitive(true);
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        builder.build().map_err(ClientError::Build)
    }

    fn token_source(&self) -> String {
        match &self.token_file {
            Some(p) => p.display().to_string(),
            None => "RAFTNODE_TOKEN".into(),
        }
    }
}

/// `raftnode kv ...`.
#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Write a value (followers forward to the leader).
    Put {
        /// The group's id.
        group: u64,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Read a value.
    Get {
        /// The group's id.
        group: u64,
        /// The key.
        key: String,
        /// linearizable (default), lease, or local.
        #[arg(long, default_value = "linearizable")]
        read: String,
    },
    /// Delete a key.
    Delete {
        /// The group's id.
        group: u64,
        /// The key.
        key: String,
    },
}

/// `raftnode group ...`.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Start a group on the node (run it on every member).
    Add {
        /// The group's id.
        id: u64,
    },
    /// Stop a group on the node; its data stays unless --purge.
    Remove {
        /// The group's id.
        id: u64,
        /// Also remove the group's log and snapshot from this node.
        #[arg(long)]
        purge: bool,
    },
}

/// What a client command asks of the node.
pub enum Call {
    /// A KV read or write.
    Kv(KvCommand),
    /// `/v1/status`.
    Status,
    /// A group start or stop.
    Group(GroupCommand),
    /// `/healthz`, or `/readyz` when `ready`.
    Health {
        /// Readiness rather than liveness.
        ready: bool,
    },
}

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node did not answer.
    #[error("cannot reach {addr}: {source}")]
    Connect {
        /// The node's address.
        addr: String,
        /// What the HTTP client said.
        source: reqwest::Error,
    },
    /// A CA, certificate or key file cannot be used.
    #[error("{path}: {reason}")]
    Tls {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client cannot be built.
    #[error("cannot build the HTTP client: {0}")]
    Build(reqwest::Error),
    /// The token file (or variable) cannot be used.
    #[error("token {path}: {reason}")]
    Token {
        /// The file, or the variable.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The node answered with an error.
    #[error("{status}: {body}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The error body.
        body: String,
    },
}

fn read_file(path: &std::path::Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|e| ClientError::Tls {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn key_path(key: &str) -> String {
    // Keys may contain any character; escape what a URL path would misread.
    key.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs one call and returns what to print on success.
pub async fn run(target: &Target, call: Call) -> Result<String, ClientError> {
    let base = format!("{}://{}", target.credentials.scheme(), target.http_addr);
    let http = target.credentials.http_client(Duration::from_secs(30))?;
    let req = match call {
        Call::Status => http.get(format!("{base}/v1/status")),
        // A health probe must answer well within the container runtime's own probe timeout.
        Call::Health { ready } => http
            .get(format!(
                "{base}/{}",
                if ready { "readyz" } else { "healthz" }
            ))
            .timeout(Duration::from_secs(2)),
        Call::Kv(KvCommand::Put { group, key, value }) => http
            .put(format!("{base}/v1/kv/{group}/{}", key_path(&key)))
            .body(value),
        Call::Kv(KvCommand::Get { group, key, read }) => http.get(format!(
            "{base}/v1/kv/{group}/{}?read={read}",
            key_path(&key)
        )),
        Call::Kv(KvCommand::Delete { group, key }) => {
            http.delete(format!("{base}/v1/kv/{group}/{}", key_path(&key)))
        }
        Call::Group(GroupCommand::Add { id }) => http.put(format!("{base}/v1/groups/{id}")),
        Call::Group(GroupCommand::Remove { id, purge }) => {
            http.delete(format!("{base}/v1/groups/{id}?purge={purge}"))
        }
    };
    let resp = req.send().await.map_err(|source| ClientError::Connect {
        addr: base.clone(),
        source,
    })?;
    let status = resp.status();
    let body = resp.text().await.map_err(|source| ClientError::Connect {
        addr: base.clone(),
        source,
    })?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(ClientError::Refused {
            status: status.as_u16(),
            body: body.trim().to_string(),
        })
    }
}
