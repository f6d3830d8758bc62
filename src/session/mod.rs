//! One task per client connection: connect the backend, relay the
//! handshake, then relay commands until either side goes away.
pub mod backend;
pub mod budget;
mod capture;
mod command;
pub mod handshake;
mod query;
mod recover;
mod response;
pub mod state;
mod stream;
mod txn;
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
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot connect to backend {0}: {1}")]
    Connect(String, String),
    #[error("client closed the connection")]
    ClientClosed,
    #[error("backend closed the connection")]
    BackendClosed,
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
        match run(client, shared).await {
            Ok(()) | Err(SessionError::ClientClosed) => tracing::debug!("connection closed"),
            Err(SessionError::BackendClosed) => tracing::info!("backend closed the connection"),
            Err(e) => tracing::warn!(error = %e, "connection ended with an error"),
        }
    }
    .instrument(span)
    .await;
    m.connections_open.dec();
}

async fn run(client: TcpStream, shared: Arc<Shared>) -> Result<(), SessionError> {
    let _ = client.set_nodelay(true);
    let cfg = &shared.config;
    // Until the client has logged in, its packets are held to the handshake limit.
    let mut client = PacketIo::new(client, cfg.limits.handshake_max_bytes);
    let connect_timeout = Duration::from_millis(shared.generation.borrow().config.connect_timeout_ms);
    let connect = tokio::time::timeout(connect_timeout, TcpStream::connect(&cfg.backend)).await;
    let tcp = match connect {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(backend_unreachable(&mut client, &shared, e.to_string()).await),
        Err(_) => return Err(backend_unreachable(&mut client, &shared, "timed out".into()).await),
    };
    let _ = tcp.set_nodelay(true);
    let server = PacketIo::new(BackendStream::Plain(tcp), cfg.max_packet_bytes);
    let relayed = match handshake::relay(&mut client, server, &shared.tls, cfg.max_packet_bytes).await {
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

/// The client has sent nothing yet: answer with a pre-handshake ERR as a
/// server would (no SQLSTATE; a server-side code, never a client 2xxx code).
async fn backend_unreachable(client: &mut handshake::ClientIo, shared: &Shared, why: String) -> SessionError {
    shared.metrics.backend_connect_failures.inc();
    tracing::warn!(backend = %shared.config.backend, error = %why, "cannot connect to backend");
    let msg = format!("thaw: cannot connect to backend {}: {why}", shared.config.backend);
    let _ = client.send(&crate::wire::packets::build_err_no_state(1040, &msg)).await;
    let _ = client.flush().await;
    SessionError::Connect(shared.config.backend.clone(), why)
}
