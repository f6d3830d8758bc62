//! Guarded writes held back to COMMIT (`defer_writes`).
//!
//! A guarded UPDATE of a captured row whose OK thaw knows in advance
//! (`Rewrite::deferrable`: the key alone in WHERE, deltas that change the
//! row) is answered at once with that OK and held back. At COMMIT the held
//! writes and the COMMIT run as one anonymous compound statement:
//!
//! ```sql
//! BEGIN NOT ATOMIC
//!   BEGIN DECLARE EXIT HANDLER FOR 1690 SIGNAL SQLSTATE '45000' SET MYSQL_ERRNO = 1644, MESSAGE_TEXT = 'thaw-deferred-1';
//!   <guarded UPDATE 1>
//!   ; IF ROW_COUNT() <> 1 THEN SIGNAL SQLSTATE '45000' SET MYSQL_ERRNO = 1644, MESSAGE_TEXT = 'thaw-deferred-1'; END IF;
//!   END;
//!   COMMIT;
//! END
//! ```
//!
//! so the row lock is held for one server-side step instead of every round
//! trip between the write and COMMIT. Packets merely pipelined after the
//! UPDATE would not do: a guard that fails would still let the COMMIT
//! behind it commit the rest of the transaction. The compound statement
//! stops at the SIGNAL, and nothing commits.
//!
//! Anything that could observe a held write or depend on it sends the held
//! writes first, in order (a flush): see [`Session::flush_cause`].
use super::SessionError;
use super::command::{Session, cmd};
use super::response::RelayOpts;
use super::validate::deadlock;
use crate::ops::metrics::labels;
use crate::rules::plan::hex_literal;
use crate::rules::{ErrorResponse, Rewrite, ViolationCheck, ViolationResponse};
use crate::sql::{Classified, TxControl};
use crate::wire::packets::{self, put_lenenc_int, put_lenenc_str};
use crate::wire::response::Expect;

pub use crate::rules::defer::Deferred;

const SIGNAL_PREFIX: &str = "thaw-deferred-";
const ROW_CHANGED: &str = "thaw: Deadlock found when trying to get lock; the row changed since it was read; try restarting transaction";

impl Session {
    /// `rw` may be answered now and sent with COMMIT (`rules::defer::may_defer`).
    pub(super) fn may_defer(&self, rw: &Rewrite, multi: bool) -> bool {
        let s = &self.state;
        crate::rules::defer::may_defer(&self.live.rules, rw, multi, s.mariadb, s.in_transaction(), &s.completion_type, &self.txn.deferred)
            // thaw's OK could not carry the transaction state the server's would.
            && !(s.tracks_transactions && s.session_track())
            // thaw's OK says `Rows matched: 1  Changed: 1  Warnings: 0` in English.
            && s.english_messages
            // The server refuses a write in a read-only transaction (1792): the
            // app must hear it at the UPDATE, not at COMMIT.
            && s.status & packets::status::IN_TRANS_READONLY == 0
    }

    /// Hold `rw` back when [`may_defer`](Self::may_defer) says so and its
    /// table has no triggers (a trigger's rows would be missing until
    /// COMMIT). `Ok(true)`: answered and held.
    pub(super) async fn try_defer(&mut self, rw: &Rewrite, multi: bool) -> Result<bool, SessionError> {
        if !self.may_defer(rw, multi) {
            return Ok(false);
        }
        let Some(row) = &rw.row else { return Ok(false) };
        let key = (row.schema.to_ascii_lowercase(), row.table.to_ascii_lowercase());
        let trigger_free = match self.trigger_free.get(&key) {
            Some(&free) => free,
            None => {
                let (Some(schema), Some(table)) = (hex_literal(row.schema.as_bytes(), 0), hex_literal(row.table.as_bytes(), 0)) else {
                    return Ok(false);
                };
                let r = self
                    .side_query(&format!(
                        "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = {schema} AND EVENT_OBJECT_TABLE = {table}"
                    ))
                    .await?;
                let free = r.err.is_none() && r.rows.first().and_then(|c| c.first().cloned().flatten()).as_deref() == Some(b"0");
                if self.trigger_free.len() < 64 {
                    self.trigger_free.insert(key, free);
                }
                free
            }
        };
        if !trigger_free {
            return Ok(false);
        }
        self.defer(rw).await?;
        Ok(true)
    }

    /// Answer `rw` with the OK the server would give and hold it back.
    async fn defer(&mut self, rw: &Rewrite) -> Result<(), SessionError> {
        // Rows matched 1 and changed 1: CLIENT_FOUND_ROWS or not, affected is 1.
        let mut ok = vec![packets::OK];
        put_lenenc_int(&mut ok, 1);
        put_lenenc_int(&mut ok, 0);
        // The last response's status, less what described that statement only
        // (a table scan before the write flags NO_INDEX_USED; the UPDATE by key is not).
        ok.extend_from_slice(&(self.state.status & packets::status::SESSION).to_le_bytes());
        ok.extend_from_slice(&0u16.to_le_bytes());
        put_lenenc_str(&mut ok, b"Rows matched: 1  Changed: 1  Warnings: 0");
        self.txn.captures.apply(&rw.on_success);
        self.txn.deferred.push(Deferred::of(rw));
        self.shared.metrics.deferred_writes.get_or_create(&labels([("rule", rw.rule.clone())])).inc();
        self.txn.held_last = true;
        self.client.send(&ok).await?;
        Ok(self.client.flush().await?)
    }

    /// Why the held writes must reach the server before this statement (`rules::defer::flush_cause`).
    pub(super) fn flush_cause(&self, ctl: &TxControl, class: Option<&Classified>, sql: &[u8]) -> Option<&'static str> {
        crate::rules::defer::flush_cause(&self.live.rules, ctl, class, sql, self.txn.held_last)
    }

    /// Send the held writes, in order. `Ok(false)`: one failed; the
    /// transaction is rolled back and the client has the error (as the
    /// answer to the statement that made thaw send them).
    pub(super) async fn flush_deferred(&mut self, cause: &'static str) -> Result<bool, SessionError> {
        let writes = std::mem::take(&mut self.txn.deferred);
        self.shared.metrics.deferred_flushes.get_or_create(&labels([("cause", cause.into())])).inc_by(writes.len() as u64);
        tracing::debug!(cause, writes = writes.len(), "held-back writes sent before the statement");
        for w in writes {
            let mut payload = vec![cmd::QUERY];
            payload.extend_from_slice(w.sql.as_bytes());
            let first = self.send_recovering(&payload, false, true).await?;
            let out = self.relay(first, Expect::Query, RelayOpts { silent: true, ..RelayOpts::default() }).await?;
            let matched = out
                .ok
                .as_ref()
                .and_then(|ok| if self.state.found_rows() { Some(ok.affected_rows) } else { super::query::rows_matched(&ok.info) });
            match (&out.err_info, matched) {
                (None, Some(1)) => self.after_statement(&TxControl::None, &payload, &out, true),
                (Some(e), _) if e.code != 1690 => {
                    let error =
                        ErrorResponse { code: e.code, sqlstate: sqlstate_of(e), message: String::from_utf8_lossy(&e.message).into_owned() };
                    self.after_statement(&TxControl::None, &payload, &out, false);
                    if self.state.in_transaction() {
                        self.abort_transaction(error).await?;
                    } else {
                        self.txn.end();
                        self.client.send(&packets::build_err(error.code, &error.sqlstate, &error.message)).await?;
                        self.client.flush().await?;
                    }
                    return Ok(false);
                }
                _ => {
                    self.deferred_failed(&w).await?;
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// COMMIT with held writes: one compound statement (module docs).
    pub(super) async fn commit_deferred(&mut self, ctl: &TxControl, packet: &[u8]) -> Result<(), SessionError> {
        let writes = std::mem::take(&mut self.txn.deferred);
        let block = compound(writes.iter().map(|w| w.sql.as_str()));
        let mut payload = vec![cmd::QUERY];
        payload.extend_from_slice(block.as_bytes());
        // A lock wait that rolls back only the statement rolls back one
        // write of several: re-sending the block would repeat the others.
        let retry_unsafe = writes.len() > 1 && self.rollback_on_timeout != Some(true);
        let first = self.send_recovering(&payload, retry_unsafe, true).await?;
        let out = self.relay(first, Expect::Query, RelayOpts { silent: true, ..RelayOpts::default() }).await?;
        let Some(e) = out.err_info.clone() else {
            self.shared.metrics.deferred_committed.inc_by(writes.len() as u64);
            // The answer to the app's COMMIT: nothing affected, the status after it.
            let mut ok = vec![packets::OK, 0, 0];
            ok.extend_from_slice(&(self.state.status & packets::status::SESSION).to_le_bytes());
            ok.extend_from_slice(&0u16.to_le_bytes());
            self.client.send(&ok).await?;
            self.client.flush().await?;
            self.after_statement(ctl, packet, &out, false);
            // ROW_COUNT() now counts the block's writes; after the app's COMMIT it is 0.
            self.row_count_after_block = true;
            return Ok(());
        };
        let message = String::from_utf8_lossy(&e.message).into_owned();
        let failed = message.strip_prefix(SIGNAL_PREFIX).and_then(|n| n.parse::<usize>().ok()).filter(|_| e.code == 1644);
        // A lock wait timeout that rolled back only the one held write: the
        // transaction is open as direct, the write is held again, and the
        // app's COMMIT sent again sends it again.
        if e.code == crate::retry::LOCK_WAIT_TIMEOUT && self.rollback_on_timeout == Some(false) && writes.len() == 1 {
            self.txn.deferred = writes;
            self.client.send(&packets::build_err(e.code, &sqlstate_of(&e), &message)).await?;
            return Ok(self.client.flush().await?);
        }
        match failed.and_then(|n| writes.get(n - 1)) {
            // The rule's error or 1213: both say the transaction is gone, and
            // the COMMIT was its end: the connection goes on as after any
            // failed COMMIT.
            Some(w) => {
                self.deferred_failed(w).await?;
                self.txn.end();
            }
            None if matches!(e.code, crate::retry::LOCK_WAIT_TIMEOUT | crate::retry::DEADLOCK) => {
                let error = deadlock(format!(
                    "thaw: Deadlock found when trying to get lock; the transaction's held-back writes hit lock error {} at COMMIT; transaction rolled back, try restarting transaction",
                    e.code
                ));
                self.abort_transaction(error).await?;
                self.txn.end();
            }
            None => {
                // The server refused a held write: thaw rolls back. The error does
                // not say the transaction is gone, so it stays aborted: a COMMIT
                // sent again gets an error once more, never an OK.
                let error = ErrorResponse { code: e.code, sqlstate: sqlstate_of(&e), message };
                self.abort_transaction(error).await?;
            }
        }
        Ok(())
    }

    /// A held write matched no row when it was sent: a broken invariant or
    /// a lost race. Roll back and answer the current statement with it.
    async fn deferred_failed(&mut self, w: &Deferred) -> Result<(), SessionError> {
        let cas_held = match &w.violation {
            Some(v) => self.side_query(&v.exists_sql).await?.rows.first().map(|r| r.first().and_then(|c| c.as_deref()) == Some(b"1")),
            None => None,
        };
        let error = match (cas_held, &w.violation) {
            (Some(true), Some(ViolationCheck { response: ViolationResponse::Error { error, .. }, .. })) => {
                self.shared.metrics.violations.get_or_create(&labels([("rule", w.rule.clone())])).inc();
                self.shared.metrics.deferred_violations.get_or_create(&labels([("rule", w.rule.clone())])).inc();
                tracing::info!(rule = %w.rule, "held-back write violated its guard when sent; transaction rolled back");
                error.clone()
            }
            _ => {
                self.shared.metrics.validations.get_or_create(&labels([("outcome", "changed".to_string())])).inc();
                deadlock(ROW_CHANGED)
            }
        };
        self.abort_transaction(error).await
    }
}

/// The compound statement of the held writes and COMMIT (module docs).
/// Each write is in its own block whose handler turns 1690 into the
/// write's SIGNAL: a guard over UNSIGNED columns fails by overflowing, not
/// by matching no row, and the exists check then tells a violation from a
/// vanished row, as it does for a write sent at once.
fn compound<'a>(writes: impl Iterator<Item = &'a str>) -> String {
    let mut block = String::from("BEGIN NOT ATOMIC\n");
    for (i, sql) in writes.enumerate() {
        let signal = format!("SIGNAL SQLSTATE '45000' SET MYSQL_ERRNO = 1644, MESSAGE_TEXT = '{SIGNAL_PREFIX}{}'", i + 1);
        block.push_str(&format!("BEGIN DECLARE EXIT HANDLER FOR 1690 {signal};\n"));
        // The newline ends a `-- comment` the app's statement may end
        // with; a trailing `;` would make an empty statement.
        block.push_str(sql.trim_end_matches(|c: char| c == ';' || c.is_ascii_whitespace()));
        block.push_str(&format!("\n; IF ROW_COUNT() <> 1 THEN {signal}; END IF;\nEND;\n"));
    }
    block.push_str("COMMIT;\nEND");
    block
}

fn sqlstate_of(e: &packets::ErrInfo) -> String {
    e.sqlstate.map_or_else(|| "HY000".to_string(), |s| String::from_utf8_lossy(&s).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compound_numbers_each_write_and_commits_last() {
        let b = compound(["UPDATE a SET x = x + 1 WHERE id = 1 -- app", "UPDATE a SET x = x + 2 WHERE id = 2"].into_iter());
        assert!(b.starts_with("BEGIN NOT ATOMIC\nBEGIN DECLARE EXIT HANDLER FOR 1690 SIGNAL"), "{b}");
        // The app's trailing comment is ended before thaw's text goes on.
        assert!(b.contains("-- app\n; IF ROW_COUNT() <> 1 THEN SIGNAL"), "{b}");
        assert_eq!(b.matches("MESSAGE_TEXT = 'thaw-deferred-1'").count(), 2, "{b}");
        assert_eq!(b.matches("MESSAGE_TEXT = 'thaw-deferred-2'").count(), 2, "{b}");
        assert!(b.ends_with("END;\nCOMMIT;\nEND"), "{b}");
    }
}
