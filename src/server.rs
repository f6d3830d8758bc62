//! The listener: accept clients, one task each; reload rules; drain on
//! SIGTERM/SIGINT (stop accepting, let open transactions finish within the
//! grace period, then close the rest).
use crate::config::Config;
use crate::ops::reload::Generation;
use crate::ops::throttle::{Backoff, WarnLimiter};
use crate::ops::{self, Metrics};
use crate::rules::RuleSet;
use crate::session::backend::{TlsError, TlsSetup};
use crate::session::{self, Shared};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {0}: {1}")]
    Bind(std::net::SocketAddr, std::io::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    ClientTls(#[from] crate::session::client_tls::ClientTlsError),
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
}

pub async fn run(
    config: Config,
    config_path: Option<std::path::PathBuf>,
    resolve: ops::reload::Resolve,
    rules: RuleSet,
) -> Result<(), ServerError> {
    let hup = ops::reload::hangup_signal();
    let mut term = signal(SignalKind::terminate()).map_err(ServerError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServerError::Signal)?;
    let metrics = Arc::new(Metrics::new());
    let (drain_tx, drain_rx) = watch::channel(false);
    let (gen_tx, gen_rx) = watch::channel(Arc::new(Generation::new(1, config.clone(), rules)?));
    metrics.rules_generation.set(1);
    metrics.zero_rule_series(gen_rx.borrow().rules.tables().map(|t| t.name.as_str()));
    let tls = TlsSetup::new(&config.backend_tls, &config.backend)?;
    let shared = Arc::new(Shared {
        config: config.clone(),
        tls,
        generation: gen_rx.clone(),
        metrics: metrics.clone(),
        drain: drain_rx.clone(),
        logged_unhandled: Default::default(),
        buffers: crate::session::budget::Budget::new(config.limits.global_buffer_bytes, metrics.buffered_bytes.clone()),
        backend_warn: WarnLimiter::new(Duration::from_secs(10)),
        timeout_warn: WarnLimiter::new(Duration::from_secs(10)),
        tls_fallback_warn: WarnLimiter::new(Duration::from_secs(10)),
        client_tls_warn: WarnLimiter::new(Duration::from_secs(10)),
    });
    // Admin first: once the proxy port accepts, /metrics and /readyz answer too.
    let admin = ops::admin::bind(config.admin).await.map_err(|e| ServerError::Bind(config.admin, e))?;
    tokio::spawn(ops::admin::serve(admin, ops::admin::AdminState::new(metrics.clone(), gen_rx.clone(), drain_rx.clone())));
    let listener = TcpListener::bind(config.listen).await.map_err(|e| ServerError::Bind(config.listen, e))?;
    tokio::spawn(ops::reload::watch(ops::reload::Reloader::new(resolve, config_path, gen_tx, metrics.clone()), hup));

    tracing::info!(listen = %config.listen, backend = %config.backend, admin = %config.admin, rules = %config.rules.display(), "thaw listening");
    let mut sessions = JoinSet::new();
    let open = Arc::new(AtomicUsize::new(0));
    let accept_warn = WarnLimiter::new(Duration::from_secs(10));
    let refuse_warn = WarnLimiter::new(Duration::from_secs(10));
    let mut backoff = Backoff::default();
    let mut paused_until: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            accepted = listener.accept(), if paused_until.is_none() => match accepted {
                Ok((stream, peer)) => {
                    backoff.reset();
                    let max = gen_rx.borrow().config.max_connections;
                    match OpenGuard::try_new(&open, max) {
                        Some(guard) => {
                            let shared = shared.clone();
                            sessions.spawn(async move {
                                session::serve(stream, peer, shared).await;
                                drop(guard);
                            });
                        }
                        None => {
                            metrics.connections_refused.inc();
                            too_many_connections(&stream, max);
                            if let Some(suppressed) = refuse_warn.check() {
                                tracing::warn!(client = %peer, max_connections = max, suppressed, "max_connections reached: refused with 1040");
                            }
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: the pending connection keeps the
                    // listener readable, so back off instead of spinning.
                    metrics.accept_errors.get_or_create(&ops::metrics::labels([("listener", "proxy".into())])).inc();
                    let pause = backoff.fail();
                    if let Some(suppressed) = accept_warn.check() {
                        tracing::warn!(listener = "proxy", error = %e, retry_in_ms = pause.as_millis() as u64, suppressed, "accept failed");
                    }
                    paused_until = Some(tokio::time::Instant::now() + pause);
                }
            },
            _ = sleep_until_some(paused_until), if paused_until.is_some() => paused_until = None,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    drop(listener);
    let _ = drain_tx.send(true);
    metrics.draining.set(1);
    let grace = Duration::from_secs(gen_rx.borrow().config.shutdown_grace_secs);
    tracing::info!(open = sessions.len(), grace_secs = grace.as_secs(), "draining: no new connections; waiting for open transactions");
    let drained = tokio::time::timeout(grace, async { while sessions.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(open = sessions.len(), "grace period over: closing remaining connections");
        sessions.shutdown().await;
    }
    tracing::info!("thaw stopped");
    Ok(())
}

async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// One slot of `max_connections`, released when the session's task ends.
pub struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    pub fn try_new(open: &Arc<AtomicUsize>, max: usize) -> Option<OpenGuard> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok().map(|_| OpenGuard(open.clone()))
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The server's own answer when it is full: a pre-handshake ERR 1040 (no
/// SQLSTATE), written without waiting (a fresh socket's send buffer is empty)
/// so a flood cannot hold the accept loop; the backend is not contacted.
fn too_many_connections(stream: &tokio::net::TcpStream, max: usize) {
    let payload = crate::wire::packets::build_err_no_state(1040, &format!("Too many connections (thaw: max_connections={max})"));
    let len = (payload.len() as u32).to_le_bytes();
    let mut frame = vec![len[0], len[1], len[2], 0];
    frame.extend_from_slice(&payload);
    let _ = stream.try_write(&frame);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_guard_caps_and_releases() {
        let open = Arc::new(AtomicUsize::new(0));
        let a = OpenGuard::try_new(&open, 2).unwrap();
        let _b = OpenGuard::try_new(&open, 2).unwrap();
        assert!(OpenGuard::try_new(&open, 2).is_none());
        drop(a);
        assert!(OpenGuard::try_new(&open, 2).is_some());
        assert_eq!(open.load(Ordering::Acquire), 1, "the temporary guard was released");
    }
}
