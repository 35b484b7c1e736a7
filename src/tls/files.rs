//! Reading PEM files: certificate chains, private keys and CA bundles, with errors that name
//! the setting and the file.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate, key or CA file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{setting} {path}: {reason}")]
pub struct TlsError {
    /// The setting that names the file (`peer_cert_file`, ...).
    pub setting: &'static str,
    /// The file.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

impl TlsError {
    pub(crate) fn new(setting: &'static str, path: &Path, reason: impl ToString) -> Self {
        TlsError {
            setting,
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Every certificate of a PEM file, leaf first.
pub fn certs(setting: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::new(setting, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(setting, path, e))?;
    if certs.is_empty() {
        return Err(TlsError::new(setting, path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn key(setting: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::new(setting, path, e))
}

/// The CA certificates of a PEM bundle, as trust roots.
pub fn roots(setting: &'static str, paths: &[&Path]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for path in paths {
        for cert in certs(setting, path)? {
            store.add(cert).map_err(|e| {
                TlsError::new(setting, path, format!("not a usable CA certificate: {e}"))
            })?;
        }
    }
    Ok(Arc::new(store))
}
