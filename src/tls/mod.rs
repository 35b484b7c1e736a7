//! TLS for both servers and for the peer channels, with rustls (ring). Peers authenticate each
//! other with certificates of one CA (mutual TLS) that name them (`names.rs`); clients get the
//! server's client certificate and, with a client CA, must present one of theirs. Everything a
//! handshake uses is built from the files into one [`TlsState`], replaced whole on a reload:
//! new connections use the new certificates, established ones keep theirs.
//!
//! The gRPC port is shared by peers and clients, so it offers both certificates: a peer dials
//! under the SNI `raftnode-node-<id>` and gets the node's peer certificate, any other name gets
//! the client certificate. It accepts a client certificate from either CA (or none, when no
//! client CA is set: token clients); whether a caller is a peer is decided per connection
//! after the handshake, against the peer CA alone ([`TlsState::peer_certificate`]).

mod files;
pub mod io;
pub mod names;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::{CertificateDer, UnixTime};

pub use files::TlsError;

use crate::raft::types::NodeId;

/// The certificate files, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// This node's certificate (chain) for peers; it names `raftnode-node-<id>`.
    pub peer_cert: PathBuf,
    /// Its key.
    pub peer_key: PathBuf,
    /// The CA that signs every node's peer certificate.
    pub peer_ca: PathBuf,
    /// The certificate clients see, on HTTP and gRPC; its key.
    pub client: Option<(PathBuf, PathBuf)>,
    /// The CA whose certificates clients must present, if they must.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Every file, for the watch that reloads when one changes.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut p = vec![
            self.peer_cert.clone(),
            self.peer_key.clone(),
            self.peer_ca.clone(),
        ];
        if let Some((c, k)) = &self.client {
            p.extend([c.clone(), k.clone()]);
        }
        p.extend(self.client_ca.clone());
        p
    }
}

/// What handshakes use, built from one reading of the files.
pub struct TlsState {
    /// The shared gRPC server's.
    pub grpc_server: Arc<ServerConfig>,
    /// The HTTP server's, when clients get TLS.
    pub http_server: Option<Arc<ServerConfig>>,
    /// Dialling peers.
    pub peer_client: Arc<ClientConfig>,
    peer_verifier: Arc<dyn ClientCertVerifier>,
}

impl TlsState {
    /// Whether `chain` (a caller's certificates, leaf first) is a peer's: signed by the peer
    /// CA. Returns the leaf when it is.
    pub fn peer_certificate(
        &self,
        chain: &[CertificateDer<'static>],
    ) -> Option<CertificateDer<'static>> {
        let (leaf, intermediates) = chain.split_first()?;
        self.peer_verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .ok()?;
        Some(leaf.clone())
    }
}

/// The node's TLS: its files and what was last built from them.
pub struct Tls {
    node: NodeId,
    files: TlsFiles,
    state: RwLock<Arc<TlsState>>,
}

impl Tls {
    /// Reads the files of node `node`; fails, naming the setting and the file, when one cannot
    /// be used or the peer certificate does not name this node.
    pub fn load(node: NodeId, files: TlsFiles) -> Result<Arc<Tls>, TlsError> {
        let state = build(node, &files)?;
        Ok(Arc::new(Tls {
            node,
            files,
            state: RwLock::new(Arc::new(state)),
        }))
    }

    /// What handshakes use now.
    pub fn current(&self) -> Arc<TlsState> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the files as they are now, without putting them in force.
    pub fn read(&self) -> Result<TlsState, TlsError> {
        build(self.node, &self.files)
    }

    /// Puts `state` in force for the handshakes that start from now on.
    pub fn install(&self, state: TlsState) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(state);
    }

    /// The files.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

/// ring, built with a C compiler alone (aws-lc-rs wants cmake and more on a fresh machine).
/// rustls marks it deprecated for its lack of post-quantum key exchange: X25519 and the NIST
/// curves stay, which protects today's traffic but not against recording it for a future
/// quantum computer. Passed explicitly: a library installs no process-wide provider.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certified(
    provider: &CryptoProvider,
    setting: (&'static str, &'static str),
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = files::certs(setting.0, cert)?;
    let key_der = files::key(setting.1, key)?;
    CertifiedKey::from_der(chain, key_der, provider)
        .map(Arc::new)
        .map_err(|e| {
            TlsError::new(
                setting.1,
                key,
                format!("does not match the certificate, or is not usable: {e}"),
            )
        })
}

fn build(node: NodeId, f: &TlsFiles) -> Result<TlsState, TlsError> {
    let provider = provider();
    let peer = certified(
        &provider,
        ("peer_cert_file", "peer_key_file"),
        &f.peer_cert,
        &f.peer_key,
    )?;
    if !names::names_node(&peer.cert[0], node) {
        return Err(TlsError::new(
            "peer_cert_file",
            &f.peer_cert,
            format!(
                "does not name this node: it needs the DNS name {} (a subject alternative name)",
                names::node_name(node)
            ),
        ));
    }
    let client = match &f.client {
        Some((c, k)) => Some(certified(
            &provider,
            ("client_cert_file", "client_key_file"),
            c,
            k,
        )?),
        None => None,
    };
    let peer_roots = files::roots("peer_ca_file", &[&f.peer_ca])?;
    fn bad_ca<'a>(
        setting: &'static str,
        path: &'a std::path::Path,
    ) -> impl Fn(rustls::server::VerifierBuilderError) -> TlsError + 'a {
        move |e| TlsError::new(setting, path, e)
    }
    let peer_verifier =
        WebPkiClientVerifier::builder_with_provider(peer_roots.clone(), provider.clone())
            .build()
            .map_err(bad_ca("peer_ca_file", &f.peer_ca))?;

    // gRPC: peers' certificates, and clients' when a client CA is set (then required).
    let mut accepted: Vec<&std::path::Path> = vec![&f.peer_ca];
    accepted.extend(f.client_ca.as_deref());
    let grpc_roots = files::roots("peer_ca_file", &accepted)?;
    let grpc_verifier = WebPkiClientVerifier::builder_with_provider(grpc_roots, provider.clone());
    let grpc_verifier = if f.client_ca.is_some() {
        grpc_verifier.build()
    } else {
        grpc_verifier.allow_unauthenticated().build()
    }
    .map_err(bad_ca("peer_ca_file", &f.peer_ca))?;
    let resolver = Arc::new(BySni {
        peer: peer.clone(),
        client: client.clone(),
    });
    let protocol = |e: rustls::Error| TlsError::new("peer_cert_file", &f.peer_cert, e);
    let mut grpc = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(protocol)?
        .with_client_cert_verifier(grpc_verifier)
        .with_cert_resolver(resolver);
    grpc.alpn_protocols = vec![b"h2".to_vec()];

    // HTTP: the client certificate; a client CA makes clients' certificates required.
    let http_server = match &client {
        None => None,
        Some(key) => {
            let builder = ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(protocol)?;
            let builder = match &f.client_ca {
                Some(ca) => {
                    let roots = files::roots("client_ca_file", &[ca])?;
                    let v = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                        .build()
                        .map_err(bad_ca("client_ca_file", ca))?;
                    builder.with_client_cert_verifier(v)
                }
                None => builder.with_no_client_auth(),
            };
            let mut http = builder.with_cert_resolver(Arc::new(BySni {
                peer: key.clone(),
                client: None,
            }));
            http.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(Arc::new(http))
        }
    };

    let mut peer_client = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(protocol)?
        .with_root_certificates(peer_roots)
        .with_client_auth_cert(peer.cert.clone(), files::key("peer_key_file", &f.peer_key)?)
        .map_err(|e| TlsError::new("peer_key_file", &f.peer_key, e))?;
    peer_client.alpn_protocols = vec![b"h2".to_vec()];

    Ok(TlsState {
        grpc_server: Arc::new(grpc),
        http_server,
        peer_client: Arc::new(peer_client),
        peer_verifier,
    })
}

/// Picks the certificate by the name the caller dialled: a node's name gets the peer
/// certificate, anything else the client certificate (when there is one).
#[derive(Debug)]
struct BySni {
    peer: Arc<CertifiedKey>,
    client: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match (&self.client, hello.server_name()) {
            (Some(client), sni) if !sni.is_some_and(names::is_node_name) => Some(client.clone()),
            _ => Some(self.peer.clone()),
        }
    }
}
