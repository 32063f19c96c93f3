//! TLS for the API: the server's certificate chain and private key, read from PEM files and
//! checked before the store opens, with errors that name the file and the fix. rustls (with
//! ring) through tonic. Rights requests carry biometric templates and request secrets, so off
//! loopback they must not travel in clear; the `/metrics` endpoint stays plain HTTP (it carries
//! counts only).
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use tonic::transport::{Identity, ServerTlsConfig};

/// How long a client may take to complete the TLS handshake (tonic sets no limit): a
/// connection that opens and stays silent must not hold a task for ever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's certificate chain and its private key, both PEM files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (`--tls-cert`).
    pub cert: PathBuf,
    /// The leaf certificate's private key: PKCS#8, PKCS#1 or SEC1 (`--tls-key`).
    pub key: PathBuf,
}

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} {}: {error}; give a PEM file the server can read", path.display())]
    Read { what: &'static str, path: PathBuf, error: std::io::Error },
    #[error(
        "{} holds no PEM {what} (no \"-----BEGIN {label}\" line); give --tls-cert the server's \
         certificate chain and --tls-key its private key, both PEM",
        path.display()
    )]
    NotPem { what: &'static str, label: &'static str, path: PathBuf },
    #[error(
        "the TLS certificate {} and key {} cannot be used together ({reason}); give the \
         certificate's own key, PEM (PKCS#8, PKCS#1 or SEC1)",
        cert.display(),
        key.display()
    )]
    Rejected { cert: PathBuf, key: PathBuf, reason: String },
}

impl TlsFiles {
    /// Reads and checks both files: the server configuration tonic serves with.
    pub(crate) fn server_config(&self) -> Result<ServerTlsConfig, TlsError> {
        let cert = read_pem(&self.cert, "certificate", "CERTIFICATE")?;
        let key = read_pem(&self.key, "private key", "PRIVATE KEY")?;
        let config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key)).timeout(HANDSHAKE_TIMEOUT);
        // tonic parses the PEM only when the server is built: build one here, so a bad pair is
        // refused now, naming both files, rather than as a bare transport error.
        tonic::transport::Server::builder().tls_config(config.clone()).map_err(|e| TlsError::Rejected {
            cert: self.cert.clone(),
            key: self.key.clone(),
            reason: error_chain(&e),
        })?;
        Ok(config)
    }
}

/// The file's bytes, if it holds a PEM block whose label contains `label`.
fn read_pem(path: &Path, what: &'static str, label: &'static str) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|error| TlsError::Read { what, path: path.to_path_buf(), error })?;
    let text = String::from_utf8_lossy(&bytes);
    let has_block = text.lines().any(|l| l.starts_with("-----BEGIN ") && l.contains(label) && l.ends_with("-----"));
    if !has_block {
        return Err(TlsError::NotPem { what, label, path: path.to_path_buf() });
    }
    Ok(bytes)
}

/// An error and its sources, joined: tonic's own message is often only "transport error".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}
