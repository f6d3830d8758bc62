//! Hot reload of the rules: on SIGHUP and when the files change on disk.
//! Files are polled by content, not by inotify events: a Kubernetes ConfigMap
//! update swaps a `..data` symlink, which event watchers see inconsistently;
//! re-reading the paths always sees what a reader would.
use super::Metrics;
use crate::config::{Config, ConfigError};
use crate::ops::metrics::labels;
use crate::rules::{RuleSet, RulesError};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

pub const POLL: Duration = Duration::from_secs(1);

/// The config and rules in force. Sessions take a new generation between
/// transactions; an open transaction keeps the one it started with.
pub struct Generation {
    pub number: i64,
    pub config: Config,
    pub rules: Arc<RuleSet>,
    /// `client_tls`: the TLS server side toward apps, its certificate and
    /// key read when this generation was made (a rotated certificate is a
    /// reload away).
    pub client_tls: Option<Arc<tokio_rustls::TlsAcceptor>>,
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation").field("number", &self.number).field("client_tls", &self.client_tls.is_some()).finish_non_exhaustive()
    }
}

impl Generation {
    pub fn new(number: i64, config: Config, rules: RuleSet) -> Result<Generation, crate::session::client_tls::ClientTlsError> {
        let client_tls = config.client_tls.as_ref().map(crate::session::client_tls::acceptor).transpose()?.map(Arc::new);
        Ok(Generation { number, config, rules: Arc::new(rules), client_tls })
    }
}

/// Re-reads the config file and applies command-line overrides again.
pub type Resolve = Box<dyn Fn() -> Result<Config, ConfigError> + Send>;

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error("rules path {0} does not exist")]
    Missing(String),
    #[error(transparent)]
    ClientTls(#[from] crate::session::client_tls::ClientTlsError),
}

pub struct Reloader {
    resolve: Resolve,
    config_path: Option<PathBuf>,
    tx: watch::Sender<Arc<Generation>>,
    metrics: Arc<Metrics>,
    fingerprint: u64,
}

impl Reloader {
    pub fn new(resolve: Resolve, config_path: Option<PathBuf>, tx: watch::Sender<Arc<Generation>>, metrics: Arc<Metrics>) -> Self {
        let mut r = Reloader { resolve, config_path, tx, metrics, fingerprint: 0 };
        r.fingerprint = r.files_fingerprint();
        r
    }

    fn current(&self) -> Arc<Generation> {
        self.tx.borrow().clone()
    }

    /// Content hash of every file that makes up the rules (and the config).
    fn files_fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        hash_path(&self.current().config.rules, &mut h);
        if let Some(c) = &self.config_path {
            hash_path(c, &mut h);
        }
        if let Some(t) = &self.current().config.client_tls {
            hash_path(&t.cert, &mut h);
            hash_path(&t.key, &mut h);
        }
        h.finish()
    }

    /// Validate fully, then swap; anything invalid keeps the generation in force.
    pub fn reload(&mut self, why: &str) {
        match self.load() {
            Ok(next) => {
                self.metrics.zero_rule_series(next.rules.tables().map(|t| t.name.as_str()));
                let number = next.number;
                let path = next.config.rules.display().to_string();
                let _ = self.tx.send(Arc::new(next));
                self.metrics.rules_generation.set(number);
                self.metrics.reloads.get_or_create(&labels([("outcome", "success".into())])).inc();
                tracing::info!(generation = number, trigger = why, rules = %path, "config and rules reloaded");
            }
            Err(e) => {
                self.metrics.reloads.get_or_create(&labels([("outcome", "failure".into())])).inc();
                tracing::error!(error = %e, trigger = why, "reload rejected; keeping the config and rules in force");
            }
        }
        // Also after a failure: wait for the next change instead of retrying every tick.
        self.fingerprint = self.files_fingerprint();
    }

    fn load(&self) -> Result<Generation, ReloadError> {
        let old = self.current();
        let mut config = (self.resolve)()?;
        if !config.rules.exists() {
            return Err(ReloadError::Missing(config.rules.display().to_string()));
        }
        let rules = RuleSet::load(&config.rules)?;
        // Sockets, the backend, the packet limit and logging are fixed for the
        // life of the process; everything else (rules, retry, redaction, probe,
        // timeouts, grace period) applies from this generation on.
        let fixed = &old.config;
        let mut ignored = Vec::new();
        macro_rules! keep {
            ($($field:ident).+) => {
                if config.$($field).+ != fixed.$($field).+ {
                    ignored.push(stringify!($($field).+));
                    config.$($field).+ = fixed.$($field).+.clone();
                }
            };
        }
        keep!(listen);
        keep!(admin);
        keep!(backend);
        keep!(backend_tls);
        keep!(max_packet_bytes);
        keep!(limits);
        keep!(admin_max_connections);
        keep!(log.format);
        keep!(log.level);
        if !ignored.is_empty() {
            tracing::warn!(keys = ?ignored, "these settings changed on disk but take effect only after a restart");
        }
        Ok(Generation::new(old.number + 1, config, rules)?)
    }
}

fn hash_path(path: &Path, h: &mut impl Hasher) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path).into_iter().flatten().flatten().map(|e| e.path()).collect();
        entries.sort();
        for e in entries {
            let name = e.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml")) {
                e.hash(h);
                std::fs::read(&e).unwrap_or_default().hash(h);
            }
        }
    } else {
        std::fs::read(path).unwrap_or_default().hash(h);
    }
}

/// Install the SIGHUP handler; call before anything else so an early SIGHUP
/// cannot kill the process (its default action).
pub fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "no SIGHUP handler; reload on file change only");
            None
        }
    }
}

pub async fn watch(mut r: Reloader, mut hup: Option<tokio::signal::unix::Signal>) {
    let mut tick = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => r.reload("SIGHUP"),
            _ = tick.tick() => {
                if r.files_fingerprint() != r.fingerprint {
                    r.reload("file change");
                }
            }
        }
    }
}
