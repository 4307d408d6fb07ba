//! The serving certificate: loaded before binding (a bad Secret fails at
//! start-up), then re-read when the files change. Kubernetes updates a mounted
//! Secret by swapping a `..data` symlink, which path-based inotify watches can
//! miss, so the files' contents are polled. A failed reload keeps the old
//! certificate and is logged and counted.

use parking_lot::RwLock;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use super::metrics::ServerMetrics;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: String },
    #[error("{path}: cannot parse PEM: {problem}")]
    Pem { path: String, problem: String },
    #[error("certificate {cert} and key {key} do not form a usable pair: {source}")]
    Pair {
        cert: String,
        key: String,
        source: rustls::Error,
    },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The PEM bytes of a certificate and key, as read from disk.
pub type PemPair = (Vec<u8>, Vec<u8>);

/// Reads and checks a PEM certificate chain and private key. The bytes are
/// returned too, so the file watcher compares against what was loaded, not
/// against whatever is on disk when it first runs.
pub fn load_certified_key(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(CertifiedKey, PemPair), TlsError> {
    let pair = read_pair(cert_path, key_path)?;
    let key = parse_certified_key(cert_path, key_path, &pair.0, &pair.1)?;
    Ok((key, pair))
}

fn read_pair(cert_path: &Path, key_path: &Path) -> Result<PemPair, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    Ok((read(cert_path)?, read(key_path)?))
}

fn parse_certified_key(
    cert_path: &Path,
    key_path: &Path,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert_path.display().to_string(),
            problem: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.display().to_string(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem {
        path: key_path.display().to_string(),
        problem: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|source| TlsError::Pair {
        cert: cert_path.display().to_string(),
        key: key_path.display().to_string(),
        source,
    })
}

/// Serves whatever certificate was loaded last, to every client: the API
/// server sends no SNI when the webhook URL is an IP address.
#[derive(Debug)]
pub struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

impl ReloadingCert {
    pub fn new(key: CertifiedKey) -> Arc<Self> {
        Arc::new(ReloadingCert {
            current: RwLock::new(Arc::new(key)),
        })
    }

    fn replace(&self, key: CertifiedKey) {
        *self.current.write() = Arc::new(key);
    }
}

/// TLS 1.2 and 1.3 only; HTTP/2 and HTTP/1.1 by ALPN.
pub fn server_config(cert: Arc<ReloadingCert>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Polls the certificate files and swaps in a changed pair once it parses and
/// matches. A half-written Secret (new certificate, old key) fails the match
/// and is retried on the next poll.
pub async fn watch_files(
    cert: Arc<ReloadingCert>,
    loaded: PemPair,
    cert_path: PathBuf,
    key_path: PathBuf,
    interval: Duration,
    metrics: ServerMetrics,
) {
    let mut last = Some(loaded);
    // Whether the last poll could not read the files: counted once per
    // outage, so the reload alert sees it without one increment per poll.
    let mut unreadable = false;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let pair = match read_pair(&cert_path, &key_path) {
            Ok(pair) => pair,
            Err(error) => {
                // The kubelet swaps Secret files atomically, so a file that
                // cannot be read is a failed reload: the old certificate
                // keeps serving, but no renewal will reach it.
                if !unreadable {
                    metrics.tls_reload(false);
                    tracing::error!(%error, "cannot read the serving certificate; keeping the current one");
                }
                unreadable = true;
                continue;
            }
        };
        if unreadable {
            tracing::info!("serving certificate files readable again");
            unreadable = false;
        }
        if last.as_ref() == Some(&pair) {
            continue;
        }
        match parse_certified_key(&cert_path, &key_path, &pair.0, &pair.1) {
            Ok(key) => {
                cert.replace(key);
                metrics.tls_reload(true);
                tracing::info!(cert = %cert_path.display(), "serving certificate reloaded");
                last = Some(pair);
            }
            Err(error) => {
                metrics.tls_reload(false);
                tracing::error!(%error, "serving certificate changed but cannot be used; keeping the current one");
                // Remember the bad pair so it is reported once, not every poll.
                last = Some(pair);
            }
        }
    }
}
