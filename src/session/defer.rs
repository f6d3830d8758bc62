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
use crate::rules::{Action, ErrorResponse, Rewrite, RowId, ViolationCheck, ViolationResponse};
use crate::sql::{Classified, Shape, TxControl, WriteKind};
use crate::wire::packets::{self, put_lenenc_int, put_lenenc_str};
use crate::wire::response::Expect;
use sqlparser::ast::{Expr, visit_expressions};
use std::ops::ControlFlow;

/// Writes held per transaction; more are sent as they come.
const MAX_DEFERRED: usize = 16;
const SIGNAL_PREFIX: &str = "thaw-deferred-";
const ROW_CHANGED: &str = "thaw: Deadlock found when trying to get lock; the row changed since it was read; try restarting transaction";

/// A guarded write answered and held back.
#[derive(Debug, Clone)]
pub struct Deferred {
    pub sql: String,
    pub rule: String,
    pub violation: Option<ViolationCheck>,
    pub row: Option<RowId>,
}

impl Session {
    /// `rw` may be answered now and sent with COMMIT.
    pub(super) fn may_defer(&self, rw: &Rewrite, multi: bool) -> bool {
        let rule_says = self.live.rules.table(&rw.table).is_some_and(|t| t.defer_writes);
        // `rollback: false` promises the app its transaction goes on after a
        // violation told at the UPDATE; told at COMMIT, it cannot.
        let answerable = rw.violation.as_ref().is_some_and(|v| matches!(v.response, ViolationResponse::Error { rollback: true, .. }));
        rule_says
            && answerable
            && rw.deferrable
            && rw.proven
            && matches!(rw.action, Action::Delta | Action::Guard)
            && !multi
            && self.state.mariadb
            && self.state.in_transaction()
            // The server refuses a write in a read-only transaction (1792): the
            // app must hear it at the UPDATE, not at COMMIT.
            && self.state.status & packets::status::IN_TRANS_READONLY == 0
            && self.txn.deferred.len() < MAX_DEFERRED
            && !self.txn.deferred.iter().any(|d| d.row == rw.row)
    }

    /// Answer `rw` with the OK the server would give and hold it back.
    pub(super) async fn defer(&mut self, rw: &Rewrite) -> Result<(), SessionError> {
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
        self.txn.deferred.push(Deferred {
            sql: rw.sql.clone(),
            rule: rw.rule.clone(),
            violation: rw.violation.clone(),
            row: rw.row.clone(),
        });
        self.shared.metrics.deferred_writes.get_or_create(&labels([("rule", rw.rule.clone())])).inc();
        self.client.send(&ok).await?;
        Ok(self.client.flush().await?)
    }

    /// Why the held writes must reach the server before this statement, or
    /// `None` when it cannot observe or depend on them: an INSERT of plain
    /// values into a table no rule governs or links, or a plain read of such
    /// tables, calling nothing that reads session state (a held write's
    /// ROW_COUNT()). COMMIT and ROLLBACK are handled by the caller.
    pub(super) fn flush_cause(&self, ctl: &TxControl, class: Option<&Classified>) -> Option<&'static str> {
        match ctl {
            TxControl::None => {}
            TxControl::Savepoint(_) | TxControl::RollbackTo(_) | TxControl::Release(_) => return Some("savepoint"),
            TxControl::Begin | TxControl::Commit { .. } | TxControl::Xa { .. } => return Some("commit"),
            TxControl::Rollback { .. } => return None,
        }
        let Some(class) = class else { return Some("statement") };
        match &class.shape {
            Shape::Write { target, kind: WriteKind::Insert { values_only: true } }
                if self.live.rules.table(&target.name).is_none()
                    && !self.live.rules.tables().any(|t| t.links(&target.name))
                    && !reads_session_state(class) =>
            {
                None
            }
            Shape::Write { target, .. } if self.live.rules.table(&target.name).is_some() => Some("write"),
            // A plain read of tables no rule governs or links cannot see a held row.
            Shape::Read { locking: false }
                if !class
                    .relations
                    .iter()
                    .any(|r| self.live.rules.table(&r.name).is_some() || self.live.rules.tables().any(|t| t.links(&r.name)))
                    && !reads_session_state(class) =>
            {
                None
            }
            Shape::Read { .. } => Some("read"),
            _ => Some("statement"),
        }
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
            return Ok(());
        };
        let message = String::from_utf8_lossy(&e.message).into_owned();
        let failed = message.strip_prefix(SIGNAL_PREFIX).and_then(|n| n.parse::<usize>().ok()).filter(|_| e.code == 1644);
        match failed.and_then(|n| writes.get(n - 1)) {
            Some(w) => self.deferred_failed(w).await?,
            None => {
                // A lock error recovery could not pass, or the server refused a
                // write: nothing of the transaction is committed.
                let error = ErrorResponse { code: e.code, sqlstate: sqlstate_of(&e), message };
                self.abort_transaction(error).await?;
            }
        }
        // The COMMIT is answered: the transaction is over for the app.
        self.txn.end();
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
        // The newline ends a `-- comment` the app's statement may end with.
        block.push_str(sql);
        block.push_str(&format!("\n; IF ROW_COUNT() <> 1 THEN {signal}; END IF;\nEND;\n"));
    }
    block.push_str("COMMIT;\nEND");
    block
}

/// The statement calls a function that reads what a held write would
/// change in the session (ROW_COUNT(), FOUND_ROWS(), LAST_INSERT_ID()), or
/// reads a table through a subquery.
fn reads_session_state(class: &Classified) -> bool {
    let Some(stmt) = &class.stmt else { return true };
    visit_expressions(stmt, |e| match e {
        Expr::Function(f) => {
            let name = f.name.0.last().and_then(|p| p.as_ident()).map(|i| i.value.to_ascii_lowercase()).unwrap_or_default();
            if matches!(name.as_str(), "row_count" | "found_rows" | "last_insert_id") {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
        Expr::Subquery(_) | Expr::In { .. } | Expr::Exists { .. } => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
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
