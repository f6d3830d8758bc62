//! The listener: accept clients, one task each; reload rules; drain on
//! SIGTERM/SIGINT (stop accepting, let open transactions finish within the
//! grace period, then close the rest).
use crate::config::Config;
use crate::ops::reload::Generation;
use crate::ops::{self, Metrics};
use crate::rules::RuleSet;
use crate::session::backend::{TlsError, TlsSetup};
use crate::session::{self, Shared};
use std::sync::Arc;
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
    let (gen_tx, gen_rx) = watch::channel(Arc::new(Generation { number: 1, config: config.clone(), rules: Arc::new(rules) }));
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
    });
    // Admin first: once the proxy port accepts, /metrics and /readyz answer too.
    let admin = ops::admin::bind(config.admin).await.map_err(|e| ServerError::Bind(config.admin, e))?;
    tokio::spawn(ops::admin::serve(
        admin,
        ops::admin::AdminState { metrics: metrics.clone(), generation: gen_rx.clone(), drain: drain_rx.clone() },
    ));
    let listener = TcpListener::bind(config.listen).await.map_err(|e| ServerError::Bind(config.listen, e))?;
    tokio::spawn(ops::reload::watch(ops::reload::Reloader::new(resolve, config_path, gen_tx, metrics.clone()), hup));

    tracing::info!(listen = %config.listen, backend = %config.backend, admin = %config.admin, rules = %config.rules.display(), "thaw listening");
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => { sessions.spawn(session::serve(stream, peer, shared.clone())); }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
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
