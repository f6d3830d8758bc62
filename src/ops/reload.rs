//! Hot reload of the rules: on SIGHUP and when the files change on disk.
//! Files are polled by content, not by inotify events: a Kubernetes ConfigMap
//! update swaps a `..data` symlink, which event watchers see inconsistently;
//! re-reading the paths always sees what a reader would.
use super::Metrics;
use crate::ops::metrics::labels;
use crate::rules::RuleSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

pub const POLL: Duration = Duration::from_secs(1);

pub struct Reloader {
    rules_path: PathBuf,
    config_path: Option<PathBuf>,
    tx: watch::Sender<Arc<RuleSet>>,
    metrics: Arc<Metrics>,
    generation: i64,
    fingerprint: u64,
}

impl Reloader {
    pub fn new(rules_path: PathBuf, config_path: Option<PathBuf>, tx: watch::Sender<Arc<RuleSet>>, metrics: Arc<Metrics>) -> Self {
        let mut r = Reloader { rules_path, config_path, tx, metrics, generation: 1, fingerprint: 0 };
        r.fingerprint = r.files_fingerprint();
        r
    }

    /// Content hash of every file that makes up the rules (and the config).
    fn files_fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        hash_path(&self.rules_path, &mut h);
        if let Some(c) = &self.config_path {
            hash_path(c, &mut h);
        }
        h.finish()
    }

    /// Validate fully, then swap; an invalid set keeps the old rules.
    pub fn reload(&mut self, why: &str) {
        self.fingerprint = self.files_fingerprint();
        match RuleSet::load(&self.rules_path) {
            Ok(rules) => {
                self.generation += 1;
                let _ = self.tx.send(Arc::new(rules));
                self.metrics.rules_generation.set(self.generation);
                self.metrics.reloads.get_or_create(&labels([("outcome", "success".into())])).inc();
                tracing::info!(generation = self.generation, trigger = why, path = %self.rules_path.display(), "rules reloaded");
            }
            Err(e) => {
                self.metrics.reloads.get_or_create(&labels([("outcome", "failure".into())])).inc();
                tracing::error!(error = %e, trigger = why, "rules reload rejected; keeping the rules in force");
            }
        }
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

pub async fn watch(mut r: Reloader) {
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "no SIGHUP handler; reload on file change only");
            None
        }
    };
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
