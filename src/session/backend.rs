//! The backend transport: plain TCP, or TLS that thaw negotiates on its own
//! leg while the client speaks plain text on loopback.
use crate::config::{TlsConfig, TlsMode};
use rustls::pki_types::pem::PemObject;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, pki_types::ServerName};

pub enum BackendStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            BackendStream::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            BackendStream::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for BackendStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading CA file {0}: {1}")]
    Ca(String, String),
    #[error("invalid TLS server name {0:?}")]
    Name(String),
    #[error("TLS handshake with the backend failed: {0}")]
    Handshake(io::Error),
}

/// Built once per config: the connector and the name the certificate must carry.
#[derive(Clone)]
pub struct TlsSetup {
    pub mode: TlsMode,
    connector: Option<(TlsConnector, ServerName<'static>)>,
}

impl TlsSetup {
    pub fn new(cfg: &TlsConfig, backend: &str) -> Result<TlsSetup, TlsError> {
        if cfg.mode == TlsMode::Disabled {
            return Ok(TlsSetup { mode: cfg.mode, connector: None });
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions");
        let config = match &cfg.ca_file {
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                let pem = std::fs::read(path).map_err(|e| TlsError::Ca(path.display().to_string(), e.to_string()))?;
                let mut found = 0;
                for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| TlsError::Ca(path.display().to_string(), e.to_string()))?;
                    roots.add(cert).map_err(|e| TlsError::Ca(path.display().to_string(), e.to_string()))?;
                    found += 1;
                }
                if found == 0 {
                    return Err(TlsError::Ca(path.display().to_string(), "no certificates in file".into()));
                }
                let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| TlsError::Ca(path.display().to_string(), e.to_string()))?;
                let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = if cfg.verifies_identity() {
                    verifier
                } else {
                    Arc::new(Relaxed { chain: Some(verifier), provider: provider.clone() })
                };
                builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth()
            }
            None => builder.dangerous().with_custom_certificate_verifier(Arc::new(Relaxed { chain: None, provider })).with_no_client_auth(),
        };
        let host = cfg.server_name.clone().unwrap_or_else(|| host_of(backend).to_string());
        let name = ServerName::try_from(host.clone()).map_err(|_| TlsError::Name(host))?;
        Ok(TlsSetup { mode: cfg.mode, connector: Some((TlsConnector::from(Arc::new(config)), name)) })
    }

    pub async fn upgrade(&self, tcp: TcpStream) -> Result<BackendStream, TlsError> {
        let (connector, name) = self.connector.as_ref().expect("upgrade only when TLS is configured");
        let tls = connector.connect(name.clone(), tcp).await.map_err(TlsError::Handshake)?;
        Ok(BackendStream::Tls(Box::new(tls)))
    }
}

fn host_of(addr: &str) -> &str {
    match addr.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    }
}

/// Certificate checks short of full verification: with CAs, the chain is
/// verified but not the host name; without, nothing is (encryption only,
/// documented). Handshake signatures are always checked.
#[derive(Debug)]
struct Relaxed {
    chain: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Relaxed {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(rustls::client::danger::ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext { .. })) => {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
