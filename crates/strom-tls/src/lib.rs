//! TLS for Strom's doors (rustls, ring provider; no OpenSSL).
//!
//! [`Tls`] is one door's server side: a certificate chain and its key from PEM files
//! (`--tls-cert`, `--tls-key`), optionally a CA bundle whose certificates clients must
//! present (`--tls-client-ca`, mutual TLS: a client without a certificate signed by it fails
//! the handshake). [`Tls::reload`] re-reads the files (on SIGHUP): handshakes after it use the
//! new files, connections already open keep theirs. A reload that fails (a missing file, a key
//! that does not match) changes nothing.
//!
//! [`common_name`] gives the subject CN of a client certificate: the Kafka door's principal
//! `User:<CN>` on SSL listeners.
//!
//! [`client_config`] is the client's side (the `strom` CLI and bench): the brokers' CA
//! bundle, optionally a client certificate for mutual TLS. [`scram`] holds SCRAM's
//! arithmetic, for the broker's credentials and the client's proofs alike.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
pub use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

pub use rustls;
pub use tokio_rustls::TlsConnector;

pub mod scram;

/// The files of a door's TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates client certificates must chain to; `None`: no client certificate
    /// is asked for.
    pub client_ca: Option<PathBuf>,
}

/// Why TLS files cannot be used; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// A door's TLS server side (see the crate docs).
pub struct Tls {
    files: TlsFiles,
    alpn: Vec<Vec<u8>>,
    config: RwLock<Arc<ServerConfig>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads `files`; `alpn` is what the door offers in ALPN (e.g. `http/1.1`; empty: none).
    pub fn load(files: TlsFiles, alpn: Vec<Vec<u8>>) -> Result<Tls, TlsError> {
        let config = build(&files, &alpn)?;
        Ok(Tls {
            files,
            alpn,
            config: RwLock::new(Arc::new(config)),
        })
    }

    /// The files it serves.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Re-reads the files; on error the previous certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = build(&self.files, &self.alpn)?;
        *self.config.write() = Arc::new(config);
        Ok(())
    }

    /// Runs the server side of a handshake on `stream`, for at most `timeout`.
    pub async fn accept<S>(&self, stream: S, timeout: Duration) -> io::Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = TlsAcceptor::from(self.config.read().clone());
        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("TLS handshake not done within {} ms", timeout.as_millis()),
            )),
        }
    }
}

/// The subject common name of the client's certificate on `stream`, if it sent one.
pub fn peer_common_name<S>(stream: &TlsStream<S>) -> Option<String> {
    let (_, conn) = stream.get_ref();
    conn.peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|c| common_name(c.as_ref()))
}

/// The (first) common name in the subject of the DER certificate `der`.
pub fn common_name(der: &[u8]) -> Option<String> {
    use x509_cert::der::{Decode, Tag, Tagged};
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    const CN: x509_cert::der::oid::ObjectIdentifier =
        x509_cert::der::oid::ObjectIdentifier::new_unwrap("2.5.4.3");
    for rdn in cert.tbs_certificate.subject.0.iter() {
        for atv in rdn.0.iter() {
            if atv.oid != CN {
                continue;
            }
            // DirectoryString: the content octets of these string types are the text.
            let text = matches!(
                atv.value.tag(),
                Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::TeletexString
            );
            if text {
                return std::str::from_utf8(atv.value.value())
                    .ok()
                    .map(str::to_owned);
            }
        }
    }
    None
}

/// A client's TLS: servers must present a certificate chain to one of the CA certificates
/// in the PEM file `ca`; with `identity` (certificate chain, key) the client presents its
/// own (mutual TLS).
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in certs(ca, "CA file")? {
        roots
            .add(c)
            .map_err(|e| TlsError(format!("CA file {}: {e}", ca.display())))?;
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS versions: {e}")))?
        .with_root_certificates(roots);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = certs(cert, "client certificate file")?;
            let key_pem = read(key, "client key file")?;
            let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| TlsError(format!("client key file {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| TlsError(format!("client certificate {}: {e}", cert.display())))
        }
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError(format!("cannot read {what} {}: {e}", path.display())))
}

fn certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{what} {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

fn build(files: &TlsFiles, alpn: &[Vec<u8>]) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(&files.cert, "certificate file")?;
    let key_pem = read(&files.key, "key file")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsError(format!("key file {}: {e}", files.key.display())))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS versions: {e}")))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in certs(ca, "client CA file")? {
                roots
                    .add(c)
                    .map_err(|e| TlsError(format!("client CA file {}: {e}", ca.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError(format!("client CA file {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        TlsError(format!(
            "certificate {} and key {}: {e}",
            files.cert.display(),
            files.key.display()
        ))
    })?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}

#[cfg(test)]
mod tests;
