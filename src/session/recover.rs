//! Lock-error recovery in the session: statement retry and transaction
//! replay, decided by `crate::retry` and run here while nothing of the
//! failed command's response has reached the client.
use super::SessionError;
use super::command::{Session, cmd};
use crate::ops::metrics::labels;
use crate::retry::{self, Recovery, Situation};
use crate::wire::packets;
use crate::wire::response::Expect;
use bytes::Bytes;
use std::time::Duration;

impl Session {
    /// Send `payload` and return the first packet of its response. A lock
    /// error as the first packet may be retried or replayed; the client then
    /// sees only the final answer.
    pub(super) async fn send_recovering(&mut self, payload: &[u8], retry_unsafe: bool, in_tx: bool) -> Result<Bytes, SessionError> {
        // A side query (settings, validation) may have run since the command arrived.
        self.server.reset_seq();
        self.send_to_server(payload).await?;
        let started = std::time::Instant::now();
        let mut first = self.read_server().await?;
        let original = first.clone();
        let mut attempt = 0u32;
        let mut waited = Duration::ZERO;
        let mut pending: Option<(Recovery, u16)> = None;
        loop {
            let err = packets::parse_err(&first).filter(|e| e.code != packets::PROGRESS_CODE);
            if let Some((kind, code)) = pending.take() {
                let outcome = if err.as_ref().is_some_and(|e| e.code == code) { None } else { Some("succeeded") };
                if let Some(outcome) = outcome {
                    self.count_recovery(kind, code, outcome);
                    tracing::info!(
                        code,
                        attempts = attempt,
                        waited_ms = waited.as_millis() as u64,
                        kind = kind_name(kind),
                        "lock error recovered"
                    );
                }
            }
            let Some(err) = err else { break };
            if matches!(err.code, retry::LOCK_WAIT_TIMEOUT | retry::DEADLOCK) {
                for key in &self.txn.locking_shapes {
                    self.shared.metrics.contention.lock_error(key, err.code);
                }
            }
            // With every rule in shadow the app sees what it sees direct, lock errors included.
            if self.all_shadow() {
                break;
            }
            let cfg = &self.live.config.retry;
            let situation =
                Situation { code: err.code, in_transaction: in_tx, rollback_on_timeout: self.rollback_on_timeout, retry_unsafe };
            let kind = retry::classify(cfg, situation);
            if kind == Recovery::None {
                break;
            }
            // The budget covers the server's lock waits as well as thaw's sleeps.
            let Some(wait) = retry::backoff(cfg, attempt, started.elapsed()) else {
                self.count_recovery(kind, err.code, "exhausted");
                tracing::warn!(
                    code = err.code,
                    attempts = attempt,
                    waited_ms = waited.as_millis() as u64,
                    kind = kind_name(kind),
                    "lock error: giving up, the client gets the error"
                );
                break;
            };
            tracing::info!(
                code = err.code,
                attempt = attempt + 1,
                wait_ms = wait.as_millis() as u64,
                kind = kind_name(kind),
                "lock error: retrying"
            );
            // A client that gave up (read timeout) must not have its statement
            // re-run behind its back: stop, and let the dropped backend connection
            // roll back.
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.client.closed() => {
                    tracing::info!(code = err.code, "client went away during a lock-error retry; abandoning it");
                    return Err(SessionError::ClientClosed);
                }
            }
            waited += wait;
            attempt += 1;
            if kind == Recovery::ReplayTransaction
                && let Err(why) = self.replay().await?
            {
                self.count_recovery(kind, err.code, "refused");
                tracing::warn!(code = err.code, reason = why, "transaction not replayed; the client gets the original error");
                // A partial replay may have run: make sure nothing of it survives.
                self.side_query("ROLLBACK").await?;
                self.txn.end();
                return Ok(original);
            }
            pending = Some((kind, err.code));
            self.server.reset_seq();
            self.send_to_server(payload).await?;
            first = tokio::select! {
                p = self.server.read() => p?.ok_or(SessionError::BackendClosed)?,
                _ = self.client.closed() => {
                    tracing::info!(code = err.code, "client went away during a lock-error retry; abandoning it");
                    return Err(SessionError::ClientClosed);
                }
            };
        }
        Ok(first)
    }

    fn count_recovery(&self, kind: Recovery, code: u16, outcome: &str) {
        let family = if kind == Recovery::ReplayTransaction { &self.shared.metrics.replays } else { &self.shared.metrics.retries };
        family.get_or_create(&labels([("code", code.to_string()), ("outcome", outcome.to_string())])).inc();
    }

    /// Re-run the recorded transaction; every response must match what the
    /// client saw, byte for byte (insert ids and affected rows included).
    async fn replay(&mut self) -> Result<Result<(), &'static str>, SessionError> {
        let Some(entries) = self.txn.recorder.entries().map(<[_]>::to_vec) else {
            return Ok(Err(self.txn.recorder.unreplayable.unwrap_or("nothing recorded for this transaction")));
        };
        // The replay re-runs the app's statements, not thaw's re-locks.
        self.txn.captures.unprotect_all();
        for e in entries {
            self.server.reset_seq();
            self.server.send(&e.command).await?;
            self.server.flush().await?;
            let expect = if e.command.first() == Some(&cmd::STMT_EXECUTE) { Expect::Execute } else { Expect::Query };
            if self.read_digest(expect).await? != Some(e.digest) {
                return Ok(Err("a replayed statement returned a different result than the client saw"));
            }
        }
        // Replayed executes carried their own types.
        for s in self.stmts.values_mut() {
            s.server_types_stale = true;
        }
        Ok(Ok(()))
    }
}

fn kind_name(k: Recovery) -> &'static str {
    match k {
        Recovery::RetryStatement => "statement_retry",
        Recovery::ReplayTransaction => "transaction_replay",
        Recovery::None => "none",
    }
}
