//! The client transport: plain TCP, or TLS that thaw terminates when
//! `client_tls` is configured and the client sends an SSLRequest.
use crate::config::ClientTlsConfig;
use bytes::{Buf, Bytes};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<Prefixed>>),
    /// Only while the transport is being swapped for TLS.
    Detached,
}

impl ClientStream {
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            ClientStream::Plain(s) => Some(s),
            ClientStream::Tls(s) => Some(&s.get_ref().0.inner),
            ClientStream::Detached => None,
        }
    }

    /// Close with an RST instead of a FIN (a reset shown as a reset).
    pub fn set_zero_linger(&self) -> io::Result<()> {
        match self.tcp() {
            Some(t) => t.set_zero_linger(),
            None => Ok(()),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }
}

fn detached() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "client transport detached")
}

impl AsyncRead for ClientStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
            ClientStream::Detached => Poll::Ready(Err(detached())),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
            ClientStream::Detached => Poll::Ready(Err(detached())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
            ClientStream::Detached => Poll::Ready(Err(detached())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
            ClientStream::Detached => Poll::Ready(Ok(())),
        }
    }
}

/// A TCP stream whose first bytes were already read (a TLS ClientHello that
/// arrived in the same read as the SSLRequest).
pub struct Prefixed {
    pre: Bytes,
    inner: TcpStream,
}

impl Prefixed {
    pub fn new(pre: Bytes, inner: TcpStream) -> Self {
        Prefixed { pre, inner }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pre.is_empty() {
            let n = this.pre.len().min(buf.remaining());
            buf.put_slice(&this.pre[..n]);
            this.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    #[error("client_tls: reading {0}: {1}")]
    Read(String, String),
    #[error("client_tls: {0}")]
    Config(String),
}

/// The TLS server side, built from `client_tls` at start.
pub fn acceptor(cfg: &ClientTlsConfig) -> Result<TlsAcceptor, ClientTlsError> {
    let shown = |p: &std::path::Path| p.display().to_string();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert)
        .map_err(|e| ClientTlsError::Read(shown(&cfg.cert), e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| ClientTlsError::Read(shown(&cfg.cert), e.to_string()))?;
    if certs.is_empty() {
        return Err(ClientTlsError::Read(shown(&cfg.cert), "no certificates in file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|e| ClientTlsError::Read(shown(&cfg.key), e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ClientTlsError::Config(format!("{} and {}: {e}", shown(&cfg.cert), shown(&cfg.key))))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn prefixed_yields_the_prefix_then_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        peer.write_all(b" world").await.unwrap();
        drop(peer);
        let mut p = Prefixed::new(Bytes::from_static(b"hello"), tcp);
        let mut got = Vec::new();
        p.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello world");
    }

    #[test]
    fn missing_files_are_named() {
        let cfg = ClientTlsConfig { cert: "/nonexistent/cert.pem".into(), key: "/nonexistent/key.pem".into() };
        let err = acceptor(&cfg).err().expect("no such file").to_string();
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    }
}
