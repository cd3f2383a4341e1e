//! Mutual TLS on the gRPC listener, with rustls (no OpenSSL).
//!
//! - [`TlsFiles`] names the PEM files: the server's certificate chain and
//!   key, and the CA bundle client certificates must chain to (without it,
//!   server-only TLS).
//! - [`load`] reads and checks them — the key matches the certificate,
//!   nothing is expired or not yet valid — into a rustls `ServerConfig`
//!   that, with a client CA, refuses a handshake without a certificate that
//!   chains to it.
//! - [`TlsSource`] holds the configuration in force and reloads the files
//!   when they change: new handshakes use the new material, established
//!   connections keep theirs, and a bad new file is refused with a log line
//!   while the old material stays.
//! - [`incoming`] accepts TCP connections and hands tonic the ones whose
//!   handshake succeeded (each handshake on its own task, bounded in time).
//! - [`identity`]: the caller's SPIFFE ID from its certificate, the
//!   forwarded identity behind trusted proxies, and `allowed_identities`
//!   patterns.

pub mod identity;

use crate::metrics::Metrics;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// The PEM files of the gRPC listener's TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain (leaf first).
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates client certificates must chain to; `None`: clients
    /// present none (server-only TLS).
    pub client_ca: Option<PathBuf>,
}

/// Why TLS material was refused.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no PEM item of the kind needed.
    #[error("{path}: no {what} in it")]
    Missing {
        /// The file.
        path: String,
        /// What was looked for.
        what: &'static str,
    },
    /// The key is not the certificate's.
    #[error("{key} is not the key of the certificate in {cert}")]
    KeyMismatch {
        /// The key file.
        key: String,
        /// The certificate file.
        cert: String,
    },
    /// A certificate is outside its validity period.
    #[error("{path}: the certificate {subject} is {state} (valid {not_before} to {not_after})")]
    Validity {
        /// The file.
        path: String,
        /// Its subject.
        subject: String,
        /// `expired` or `not yet valid`.
        state: &'static str,
        /// Valid from (RFC 3339).
        not_before: String,
        /// Valid to (RFC 3339).
        not_after: String,
    },
    /// A certificate does not parse.
    #[error("{path}: not an X.509 certificate: {reason}")]
    Certificate {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the material.
    #[error("{0}")]
    Rustls(String),
}

/// Loaded, checked material: the rustls configuration and what the
/// expiry metric reports.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The server configuration (ALPN h2).
    pub config: Arc<ServerConfig>,
    /// The server certificate's serial, hex.
    pub serial: String,
    /// (certificate, expiry as seconds since the Unix epoch): `server`, and
    /// `client_ca` per CA in the bundle (`client_ca_0`, …).
    pub expiries: Vec<(String, i64)>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.display().to_string(), source })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(TlsError::Missing { path: path.display().to_string(), what: "PEM certificate" });
    }
    Ok(certs)
}

/// A certificate's serial (hex), subject and validity, checked against now.
fn inspect(path: &Path, der: &CertificateDer<'_>) -> Result<(String, i64), TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| TlsError::Certificate { path: path.display().to_string(), reason: e.to_string() })?;
    let validity = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    let state = if now < validity.not_before {
        Some("not yet valid")
    } else if now > validity.not_after {
        Some("expired")
    } else {
        None
    };
    if let Some(state) = state {
        let rfc = |t: &x509_parser::time::ASN1Time| t.to_rfc2822().unwrap_or_else(|_| t.to_string());
        return Err(TlsError::Validity {
            path: path.display().to_string(),
            subject: cert.subject().to_string(),
            state,
            not_before: rfc(&validity.not_before),
            not_after: rfc(&validity.not_after),
        });
    }
    Ok((cert.raw_serial_as_string(), validity.not_after.timestamp()))
}

/// The application protocol a listener speaks (its ALPN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// gRPC: HTTP/2.
    H2,
    /// The metrics listener: HTTP/1.1.
    Http11,
}

impl Alpn {
    fn protocols(self) -> Vec<Vec<u8>> {
        match self {
            Alpn::H2 => vec![b"h2".to_vec()],
            Alpn::Http11 => vec![b"http/1.1".to_vec()],
        }
    }
}

/// Reads and checks the files.
pub fn load(files: &TlsFiles, alpn: Alpn) -> Result<Loaded, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&files.cert)?;
    let (serial, server_expiry) = inspect(&files.cert, &chain[0])?;
    let key_pem = read(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| TlsError::Missing { path: files.key.display().to_string(), what: "PEM private key" })?;
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| TlsError::Rustls(format!("{}: {e}", files.key.display())))?;
    let certified = rustls::sign::CertifiedKey::new(chain.clone(), signing_key);
    if certified.keys_match().is_err() {
        return Err(TlsError::KeyMismatch {
            key: files.key.display().to_string(),
            cert: files.cert.display().to_string(),
        });
    }
    let mut expiries = vec![("server".to_string(), server_expiry)];
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for (i, der) in certificates(ca)?.into_iter().enumerate() {
                let (_, expiry) = inspect(ca, &der)?;
                expiries.push((format!("client_ca_{i}"), expiry));
                roots.add(der).map_err(|e| TlsError::Rustls(format!("{}: {e}", ca.display())))?;
            }
            // Required: no certificate, or one that does not chain to the
            // bundle, fails the handshake.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Rustls(format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config =
        builder.with_single_cert(chain, key).map_err(|e| TlsError::Rustls(format!("{}: {e}", files.cert.display())))?;
    config.alpn_protocols = alpn.protocols();
    Ok(Loaded { config: Arc::new(config), serial, expiries })
}

/// The TLS configuration in force, reloaded from its files.
#[derive(Debug)]
pub struct TlsSource {
    files: TlsFiles,
    alpn: Alpn,
    current: RwLock<Loaded>,
    metrics: Metrics,
}

impl TlsSource {
    /// Loads the files (refusing to start on bad ones).
    pub fn new(files: TlsFiles, alpn: Alpn, metrics: Metrics) -> Result<Arc<Self>, TlsError> {
        let loaded = load(&files, alpn)?;
        metrics.tls_loaded(&loaded.expiries);
        Ok(Arc::new(Self { files, alpn, current: RwLock::new(loaded), metrics }))
    }

    /// The configuration new handshakes use.
    pub fn config(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(c) => c.config.clone(),
            Err(p) => p.into_inner().config.clone(),
        }
    }

    /// The server certificate's serial in force.
    pub fn serial(&self) -> String {
        match self.current.read() {
            Ok(c) => c.serial.clone(),
            Err(p) => p.into_inner().serial.clone(),
        }
    }

    /// Reloads the files: the new material for new handshakes, or — when
    /// it is bad — a log line and the old material kept.
    pub fn reload(&self) -> Result<String, TlsError> {
        match load(&self.files, self.alpn) {
            Ok(loaded) => {
                let serial = loaded.serial.clone();
                self.metrics.tls_loaded(&loaded.expiries);
                self.metrics.tls_reload(true);
                match self.current.write() {
                    Ok(mut c) => *c = loaded,
                    Err(p) => *p.into_inner() = loaded,
                }
                tracing::info!(serial, "TLS material reloaded; new connections use it");
                Ok(serial)
            }
            Err(e) => {
                self.metrics.tls_reload(false);
                tracing::warn!(error = %e, serial = %self.serial(), "new TLS material refused; the old stays in force");
                Err(e)
            }
        }
    }

    /// Checks the files every `every` and reloads when their bytes change.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let fingerprint = |files: &TlsFiles| -> Vec<Option<Vec<u8>>> {
            [Some(&files.cert), Some(&files.key), files.client_ca.as_ref()]
                .into_iter()
                .map(|p| p.and_then(|p| std::fs::read(p).ok()))
                .collect()
        };
        let mut last = fingerprint(&self.files);
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let now = fingerprint(&self.files);
            if now != last {
                last = now;
                let _ = self.reload();
            }
        }
    }
}

/// What a TLS connection tells each request on it (a request extension):
/// the peer's address and the SPIFFE ID of its verified certificate, read
/// once per connection.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    /// The peer's address.
    pub remote: Option<SocketAddr>,
    /// The SPIFFE ID in the client certificate; `None` without one.
    pub spiffe_id: Option<Arc<str>>,
}

/// An accepted TLS connection, with its peer's identity.
#[derive(Debug)]
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    peer: PeerIdentity,
}

impl TlsConnection {
    fn new(stream: TlsStream<TcpStream>) -> Self {
        let (tcp, session) = stream.get_ref();
        let spiffe_id = session.peer_certificates().and_then(|certs| certs.first()).and_then(identity::spiffe_id);
        let peer = PeerIdentity { remote: tcp.peer_addr().ok(), spiffe_id: spiffe_id.map(Arc::from) };
        Self { stream, peer }
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = PeerIdentity;

    fn connect_info(&self) -> PeerIdentity {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// TLS connections for tonic: each accepted TCP connection's handshake runs
/// on its own task with the configuration in force when it arrived, within
/// `handshake_timeout`; failures are counted and logged, never served.
pub fn incoming(
    listener: TcpListener,
    source: Arc<TlsSource>,
    handshake_timeout: Duration,
) -> ReceiverStream<Result<TlsConnection, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            // The server dropped the stream (it shut down): stop accepting,
            // which closes the listener.
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = tx.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(source.config());
            let (tx, metrics) = (tx.clone(), source.metrics.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(TlsConnection::new(stream))).await;
                    }
                    Ok(Err(e)) => {
                        let reason = failure_reason(&e);
                        metrics.tls_handshake_failed(reason);
                        tracing::debug!(%peer, reason, error = %e, "TLS handshake refused");
                    }
                    Err(_) => {
                        metrics.tls_handshake_failed("timeout");
                        tracing::debug!(%peer, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Why a handshake failed, as the `reason` label of
/// `meridian_tls_handshake_failures_total`.
pub fn failure_reason(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::NoCertificatesPresented) => "no_client_certificate",
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer)) => "unknown_issuer",
        Some(Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. })) => {
            "expired"
        }
        Some(Error::InvalidCertificate(_)) => "bad_certificate",
        Some(
            Error::InvalidMessage(_) | Error::InappropriateHandshakeMessage { .. } | Error::InappropriateMessage { .. },
        ) => "not_tls",
        Some(Error::PeerIncompatible(_) | Error::NoApplicationProtocol) => "incompatible",
        Some(_) => "other",
        None => "io",
    }
}

/// The TLS connections of [`incoming`] as an axum listener: the REST
/// listener under TLS, and the metrics listener with `--metrics-tls`.
#[derive(Debug)]
pub struct TlsListener {
    connections: ReceiverStream<Result<TlsConnection, std::io::Error>>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `listener` with `source`'s configuration.
    pub fn new(listener: TcpListener, source: Arc<TlsSource>, handshake_timeout: Duration) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(Self { connections: incoming(listener, source, handshake_timeout), local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsConnection;
    /// The peer's address and verified identity (the REST front's
    /// `allowed_identities` and per-caller limits read it).
    type Addr = PeerIdentity;

    async fn accept(&mut self) -> (TlsConnection, PeerIdentity) {
        use tokio_stream::StreamExt;
        loop {
            match self.connections.next().await {
                Some(Ok(connection)) => {
                    let peer = connection.peer.clone();
                    return (connection, peer);
                }
                Some(Err(_)) => continue,
                // The accept task ended: no connection will come.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<PeerIdentity> {
        Ok(PeerIdentity { remote: Some(self.local), spiffe_id: None })
    }
}
