//! One task per client connection: connect the backend, relay the
//! handshake, then relay commands until either side goes away.
pub mod backend;
pub mod budget;
pub(crate) mod capture;
pub mod client_tls;
mod command;
pub mod compress;
mod decide;
mod defer;
pub mod handshake;
mod prepared;
mod query;
mod recover;
mod response;
pub mod state;
mod stream;
pub(crate) mod txn;
mod validate;

use crate::config::Config;
use crate::ops::Metrics;
use crate::ops::metrics::labels;
use crate::ops::reload::Generation;
use crate::wire::{PacketIo, WireError};
use backend::{BackendStream, TlsError, TlsSetup};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::Instrument;

/// Everything sessions share: read-mostly, swapped as a whole on reload.
pub struct Shared {
    /// Settings fixed for the process's life (listen, backend, TLS, packet limit).
    pub config: Config,
    pub tls: TlsSetup,
    /// Config and rules that reloads replace.
    pub generation: watch::Receiver<Arc<Generation>>,
    pub metrics: Arc<Metrics>,
    /// Flips to true when draining starts.
    pub drain: watch::Receiver<bool>,
    /// Fingerprints of unhandled statements already logged (log once each).
    pub logged_unhandled: Mutex<HashSet<String>>,
    /// `limits.global_buffer_bytes`: shared by every connection.
    pub buffers: Arc<budget::Budget>,
    /// `cannot connect to backend` lines: at most one per 10 s during an outage.
    pub backend_warn: crate::ops::throttle::WarnLimiter,
    /// `connection-phase deadline passed` lines (TLS, auth): at most one per 10 s.
    pub timeout_warn: crate::ops::throttle::WarnLimiter,
    /// `backend_tls: preferred` falling back to plain text: at most one line per 10 s.
    pub tls_fallback_warn: crate::ops::throttle::WarnLimiter,
    /// Failed TLS handshakes with clients: at most one line per 10 s.
    pub client_tls_warn: crate::ops::throttle::WarnLimiter,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("TLS handshake with the client failed: {0}")]
    ClientTls(std::io::Error),
    #[error("cannot connect to backend {0}: {1}")]
    Connect(String, String),
    #[error("client closed the connection")]
    ClientClosed,
    #[error("backend closed the connection")]
    BackendClosed,
    #[error("{0} did not finish within {1} ms")]
    Timeout(&'static str, u64),
    #[error("protocol: {0}")]
    Protocol(&'static str),
}

impl From<std::io::Error> for SessionError {
    fn from(e: std::io::Error) -> Self {
        SessionError::Wire(WireError::Io(e))
    }
}

pub async fn serve(client: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let m = shared.metrics.clone();
    m.connections_total.inc();
    m.connections_open.inc();
    let span = tracing::info_span!("conn", client = %peer, thread_id = tracing::field::Empty);
    async {
        match run(client, shared.clone()).await {
            Ok(()) | Err(SessionError::ClientClosed) => tracing::debug!("connection closed"),
            Err(SessionError::BackendClosed) => tracing::info!("backend closed the connection"),
            // Logged (rate limited) where it happened.
            Err(e @ SessionError::Connect(..)) => tracing::debug!(error = %e, "connection ended"),
            Err(e @ SessionError::Timeout(..)) => {
                if let Some(suppressed) = shared.timeout_warn.check() {
                    tracing::warn!(error = %e, suppressed, "connection-phase deadline passed; closed");
                }
            }
            Err(e @ SessionError::ClientTls(_)) => {
                if let Some(suppressed) = shared.client_tls_warn.check() {
                    tracing::warn!(error = %e, suppressed, "TLS handshake with a client failed; closed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "connection ended with an error"),
        }
    }
    .instrument(span)
    .await;
    m.connections_open.dec();
}

async fn run(client: TcpStream, shared: Arc<Shared>) -> Result<(), SessionError> {
    let _ = client.set_nodelay(true);
    // Timeouts, keepalive and the probe user follow reloads, from the next connection on.
    let generation = shared.generation.borrow().clone();
    let live = &generation.config;
    set_keepalive(&client, live.tcp_keepalive_secs);
    let cfg = &shared.config;
    // Until the client has logged in, its packets are held to the handshake limit.
    let mut client = PacketIo::new(client_tls::ClientStream::Plain(client), cfg.limits.handshake_max_bytes);
    let connect_timeout = Duration::from_millis(live.connect_timeout_ms);
    let connect = tokio::time::timeout(connect_timeout, TcpStream::connect(&cfg.backend)).await;
    let tcp = match connect {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(backend_unreachable(&mut client, &shared, e.to_string()).await),
        Err(_) => return Err(backend_unreachable(&mut client, &shared, "timed out".into()).await),
    };
    let _ = tcp.set_nodelay(true);
    set_keepalive(&tcp, live.tcp_keepalive_secs);
    let server = PacketIo::new(BackendStream::Plain(tcp), cfg.max_packet_bytes);
    let deadlines = handshake::Deadlines::from_config(live);
    let compression = compress::Policy::from_config(live);
    let relayed = match handshake::relay(
        &mut client,
        server,
        &shared,
        &deadlines,
        live.probe.as_ref(),
        compression,
        generation.client_tls.as_deref(),
    )
    .await
    {
        Err(SessionError::Wire(WireError::TooLarge(n, max))) => {
            shared.metrics.packets_too_large.get_or_create(&labels([("phase", "handshake".into())])).inc();
            tracing::warn!(bytes = n, limit = max, "client packet before login over limits.handshake_max_bytes; closing");
            let _ = refuse_too_large(&mut client, "limits.handshake_max_bytes", max).await;
            return Err(SessionError::Wire(WireError::TooLarge(n, max)));
        }
        r => r?,
    };
    let Some((server, state)) = relayed else {
        return Ok(());
    };
    drop(generation);
    client.set_max_packet(cfg.max_packet_bytes);
    tracing::Span::current().record("thread_id", state.thread_id);
    tracing::debug!(user = %state.user, schema = ?state.schema, "authenticated");
    command::Session::new(client, server, state, shared).run().await
}

/// A client packet over one of thaw's limits: ERR 1153 as the server sends
/// for one over its max_allowed_packet (the connection is closed after it).
pub(crate) async fn refuse_too_large(client: &mut handshake::ClientIo, setting: &str, limit: usize) -> Result<(), SessionError> {
    let msg = format!("Got a packet bigger than 'max_allowed_packet' bytes (thaw: {setting} is {limit})");
    client.send(&crate::wire::packets::build_err(1153, "08S01", &msg)).await?;
    Ok(client.flush().await?)
}

/// TCP keepalive (idle time `secs`, then probes every `secs / 3`, at least 1 s); 0 leaves it off.
fn set_keepalive(tcp: &TcpStream, secs: u64) {
    if secs == 0 {
        return;
    }
    let idle = Duration::from_secs(secs);
    let ka = socket2::TcpKeepalive::new().with_time(idle).with_interval(Duration::from_secs((secs / 3).max(1)));
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&ka) {
        tracing::debug!(error = %e, "cannot set TCP keepalive");
    }
}

/// The client has sent nothing yet: answer with a pre-handshake ERR as a
/// server would (no SQLSTATE; a server-side code, never a client 2xxx code).
pub(crate) async fn backend_unreachable(client: &mut handshake::ClientIo, shared: &Shared, why: String) -> SessionError {
    shared.metrics.backend_connect_failures.inc();
    if let Some(suppressed) = shared.backend_warn.check() {
        tracing::warn!(backend = %shared.config.backend, error = %why, suppressed, "cannot connect to backend");
    }
    let msg = format!("thaw: cannot connect to backend {}: {why}", shared.config.backend);
    let _ = client.send(&crate::wire::packets::build_err_no_state(1040, &msg)).await;
    let _ = client.flush().await;
    SessionError::Connect(shared.config.backend.clone(), why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keepalive_is_set_only_when_configured() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        set_keepalive(&tcp, 0);
        assert!(!socket2::SockRef::from(&tcp).keepalive().unwrap());
        set_keepalive(&tcp, 30);
        let sock = socket2::SockRef::from(&tcp);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(30));
    }
}
