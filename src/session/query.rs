//! COM_QUERY and COM_STMT_EXECUTE: plan with the rules, send (with lock-error
//! recovery), enforce the guard's verdict, capture check reads.
use super::capture::RowCollector;
use super::command::{Outcome, RelayOpts, Session};
use super::SessionError;
use crate::ops::metrics::labels;
use crate::retry::record::{contains_ci, first_keyword, replayable_statement};
use crate::rules::{ErrorResponse, Plan, PlanContext, Rewrite, ViolationCheck, ViolationResponse};
use crate::wire::packets::{self, OK};
use crate::wire::response::Expect;
use bytes::Bytes;

impl Session {
    pub(super) async fn query(&mut self, packet: Bytes, in_tx_before: bool) -> Result<(), SessionError> {
        let sql = &packet[1..];
        let rewrite = match self.plan(sql) {
            Decision::Send(rw) => rw,
            Decision::Refuse { error, rollback } => return self.refuse(error, rollback).await,
        };
        let payload: Bytes = match &rewrite {
            Some(rw) => {
                let mut p = Vec::with_capacity(rw.sql.len() + 1);
                p.push(packet[0]);
                p.extend_from_slice(rw.sql.as_bytes());
                p.into()
            }
            None => packet.clone(),
        };
        let keyword = first_keyword(sql);
        let multi = self.state.multi_statements && has_inner_semicolon(sql);
        let retry_unsafe = multi || matches!(keyword.as_str(), "CALL" | "LOAD" | "COMMIT" | "XA" | "ROLLBACK");
        let first = self.send_recovering(&payload, retry_unsafe, in_tx_before).await?;

        if let Some(v) = rewrite.as_ref().and_then(|rw| rw.violation.as_ref())
            && self.enforce_guard(&first, v).await? {
                return Ok(());
            }
        let mut rows = rewrite.as_ref().and_then(|rw| rw.capture.as_ref()).map(|_| RowCollector::default());
        let allow_infile = keyword == "LOAD" && contains_ci(sql, b"LOCAL");
        let out = self.relay(first, Expect::Query, RelayOpts { allow_infile, rows: rows.as_mut() }).await?;
        if let Some(rw) = &rewrite {
            self.remember(rw, rows, &out);
        }
        if out.err.is_none() && keyword == "USE" {
            let name = String::from_utf8_lossy(&sql[3..]).trim().trim_end_matches(';').trim().trim_matches('`').to_string();
            self.state.schema = Some(name);
        }
        if contains_ci(sql, b"sql_mode") {
            // The client may have changed it: order-dependent SET rewrites wait until known again.
            self.state.simultaneous_assignment = None;
        }
        self.after_statement(in_tx_before, &payload, &out, !multi && replayable_statement(sql));
        Ok(())
    }

    pub(super) async fn execute(&mut self, packet: Bytes, in_tx_before: bool) -> Result<(), SessionError> {
        let stmt = packet.get(1..5).and_then(|b| self.stmts.get(&u32::from_le_bytes(b.try_into().unwrap()))).cloned().unwrap_or_default();
        if let Some(table) = stmt.governed_write.as_deref().filter(|t| self.captures.holds_table(t)) {
            let error = unguardable_write(table, "a prepared statement's values are not visible to the rules");
            return self.refuse(error, true).await;
        }
        let retry_unsafe = stmt.call || stmt.long_data;
        let first = self.send_recovering(&packet, retry_unsafe, in_tx_before).await?;
        let out = self.relay(first, Expect::Execute, RelayOpts::default()).await?;
        // An EXECUTE that opens a cursor returns its rows later, through FETCH.
        let opens_cursor = packet.get(5).is_some_and(|flags| flags & 0x07 != 0);
        self.after_statement(in_tx_before, &packet, &out, !retry_unsafe && !opens_cursor);
        Ok(())
    }

    /// Answer with an error instead of sending the command; optionally roll back.
    async fn refuse(&mut self, error: ErrorResponse, rollback: bool) -> Result<(), SessionError> {
        if rollback {
            self.side_query("ROLLBACK").await?;
            self.captures.clear();
            self.recorder.clear();
        }
        self.client.send(&packets::build_err(error.code, &error.sqlstate, &error.message)).await?;
        Ok(self.client.flush().await?)
    }

    /// COM_STMT_PREPARE: the rules cannot see placeholder values, so a
    /// prepared write on a governed table is never rewritten. Remember its
    /// table: executing it after an unlocked read of that table is refused.
    pub(super) fn prepared_governed_write(&mut self, sql: &[u8]) -> Option<String> {
        if self.live.rules.is_empty() || !is_write(sql) {
            return None;
        }
        let text = std::str::from_utf8(sql).ok()?;
        if !self.live.rules.is_candidate(text) {
            return None;
        }
        let empty = crate::rules::Captures::default();
        let ctx = PlanContext { no_backslash_escapes: self.state.no_backslash_escapes(), ansi_quotes: self.state.ansi_quotes(), in_transaction: false, simultaneous_assignment: Some(false), captures: &empty };
        match self.live.rules.plan(text, &ctx) {
            Plan::Unhandled { table, .. } | Plan::Reject { table, .. } => Some(table),
            Plan::Rewrite(rw) => Some(rw.table),
            Plan::Forward => None,
        }
    }

    fn plan(&mut self, sql: &[u8]) -> Decision {
        if self.live.rules.is_empty() {
            return Decision::Send(None);
        }
        let Ok(text) = std::str::from_utf8(sql) else { return Decision::Send(None) };
        if !self.live.rules.is_candidate(text) {
            return Decision::Send(None);
        }
        let ctx = PlanContext {
            no_backslash_escapes: self.state.no_backslash_escapes(),
            ansi_quotes: self.state.ansi_quotes(),
            in_transaction: self.state.statement_in_transaction(),
            simultaneous_assignment: self.state.simultaneous_assignment,
            captures: &self.captures,
        };
        match self.live.rules.plan(text, &ctx) {
            Plan::Forward => Decision::Send(None),
            Plan::Unhandled { table, fingerprint, reason } => {
                self.shared.metrics.unhandled.get_or_create(&labels([("table", table.clone())])).inc();
                if self.captures.holds_table(&table) && is_write(sql) {
                    // thaw removed this transaction's lock on the table: an unguarded
                    // write now could lose an update. Refuse it as a deadlock would.
                    tracing::warn!(%table, %fingerprint, %reason, "write after an unlocked read cannot be guarded; transaction rolled back");
                    return Decision::Refuse { error: unguardable_write(&table, &reason), rollback: true };
                }
                // Bounded: shapes are literal-free, but a runaway generator of shapes must not grow memory.
                let first_time = self.shared.logged_unhandled.lock().map(|mut s| s.len() < 10_000 && s.insert(fingerprint.clone())).unwrap_or(false);
                if first_time {
                    tracing::warn!(%table, %fingerprint, %reason, "statement on a governed table forwarded untouched");
                }
                Decision::Send(None)
            }
            Plan::Reject { table, fingerprint, reason, error } => {
                self.shared.metrics.unhandled.get_or_create(&labels([("table", table.clone())])).inc();
                tracing::warn!(%table, %fingerprint, %reason, "statement on a governed table refused (unhandled: reject)");
                Decision::Refuse { error, rollback: false }
            }
            Plan::Rewrite(rw) => {
                self.shared.metrics.rewrites.get_or_create(&labels([("rule", rw.rule.clone()), ("action", format!("{:?}", rw.action).to_lowercase())])).inc();
                if self.live.config.log.redact_literals {
                    tracing::info!(rule = %rw.rule, action = ?rw.action, fingerprint = %rw.fingerprint, "statement rewritten");
                } else {
                    tracing::info!(rule = %rw.rule, action = ?rw.action, fingerprint = %rw.fingerprint, sql = %rw.sql, "statement rewritten");
                }
                Decision::Send(Some(rw))
            }
        }
    }

    /// Captures: rows of an unlocked check read, and what a successful write made the app believe.
    fn remember(&mut self, rw: &Rewrite, rows: Option<RowCollector>, out: &Outcome) {
        if out.err.is_some() {
            return;
        }
        let (Some(spec), Some(rows)) = (&rw.capture, rows) else {
            self.captures.apply(&rw.on_success);
            return;
        };
        if rows.spoiled {
            tracing::warn!(rule = %rw.rule, "unlocked read could not be captured; absolute writes to its row will be refused");
            self.captures.mark_uncaptured(spec);
        } else if self.state.in_transaction() {
            let names: Vec<&str> = rows.names.iter().map(String::as_str).collect();
            for row in &rows.rows {
                let values: Vec<Option<&[u8]>> = row.iter().map(|v| v.as_deref()).collect();
                self.captures.record_row(spec, &names, &values);
            }
        }
        self.captures.apply(&rw.on_success);
    }

    /// A guarded write that matched no row either broke an invariant or
    /// addressed a row that does not exist. Returns true when thaw answered
    /// the client itself.
    async fn enforce_guard(&mut self, first: &Bytes, v: &ViolationCheck) -> Result<bool, SessionError> {
        if first.first() != Some(&OK) {
            return Ok(false);
        }
        let Some(ok) = packets::parse_ok(first, self.state.session_track()) else { return Ok(false) };
        // Rows matched, not changed: an UPDATE that changes nothing is no violation.
        let matched = if self.state.found_rows() { Some(ok.affected_rows) } else { rows_matched(&ok.info) };
        if matched != Some(0) {
            return Ok(false);
        }
        let exists = self.side_query(&v.exists_sql).await?;
        if let Some(e) = &exists.err {
            tracing::warn!(rule = %v.rule, code = e.code, "cannot tell a violation from a missing row; passing the 0-row result through");
            return Ok(false);
        }
        if exists.rows.is_empty() {
            return Ok(false);
        }
        self.shared.metrics.violations.get_or_create(&labels([("rule", v.rule.clone())])).inc();
        let key = if self.live.config.log.redact_literals { "?" } else { v.key.as_str() };
        tracing::info!(rule = %v.rule, table = %v.table, key, "guard violated");
        let ViolationResponse::Error { error, rollback } = &v.response else {
            return Ok(false);
        };
        if *rollback {
            // As MySQL treats a deadlock: nothing the transaction wrote survives.
            self.side_query("ROLLBACK").await?;
            self.captures.clear();
            self.recorder.clear();
        }
        self.client.send(&packets::build_err(error.code, &error.sqlstate, &error.message)).await?;
        self.client.flush().await?;
        Ok(true)
    }
}

/// What to do with a COM_QUERY after planning.
enum Decision {
    /// Send it, rewritten or not.
    Send(Option<Box<Rewrite>>),
    /// Answer the client with an error; the server never sees the statement.
    Refuse { error: ErrorResponse, rollback: bool },
}

/// thaw removed this transaction's lock on `table`: an unguarded write now
/// could lose an update, so it is refused as a deadlock would be.
fn unguardable_write(table: &str, reason: &str) -> ErrorResponse {
    let message = format!("thaw: this write to {table} cannot be guarded after its check read was unlocked ({reason}); transaction rolled back, retry it");
    ErrorResponse { code: 1213, sqlstate: "40001".into(), message }
}

fn is_write(sql: &[u8]) -> bool {
    matches!(first_keyword(sql).as_str(), "UPDATE" | "INSERT" | "REPLACE" | "DELETE")
}

/// "Rows matched: 1  Changed: 0  Warnings: 0" → 1.
fn rows_matched(info: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(info).ok()?;
    let rest = s.split("Rows matched:").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// A `;` followed by more statement text (a rough test: literals containing
/// `;` only make thaw more careful).
fn has_inner_semicolon(sql: &[u8]) -> bool {
    match sql.iter().position(|&b| b == b';') {
        Some(i) => sql[i + 1..].iter().any(|b| !b.is_ascii_whitespace() && *b != b';'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_matched_from_info() {
        assert_eq!(rows_matched(b"Rows matched: 0  Changed: 0  Warnings: 0"), Some(0));
        assert_eq!(rows_matched(b"Rows matched: 12  Changed: 3  Warnings: 1"), Some(12));
        assert_eq!(rows_matched(b""), None);
    }

    #[test]
    fn inner_semicolons() {
        assert!(has_inner_semicolon(b"SELECT 1; SELECT 2"));
        assert!(!has_inner_semicolon(b"SELECT 1;  \n"));
        assert!(!has_inner_semicolon(b"SELECT 1"));
    }
}
