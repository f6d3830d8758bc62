//! Re-lock and validate: before a statement the allow-list cannot prove
//! safe, lock every captured row in the protection window and compare it
//! with what the app last saw. Equal means the transaction is now exactly
//! the legacy locked flow. A row that was already locked by this
//! transaction but shown in a form thaw could not attribute takes the
//! locked values (nobody else can have changed it).
use super::SessionError;
use super::command::Session;
use crate::ops::metrics::labels;
use crate::rules::guard_ident as quote_ident;
use crate::rules::plan::hex_literal;
use crate::rules::{CapturedRow, ErrorResponse, RowId};
use crate::wire::packets;

/// The error thaw answers when it rolls a transaction back for a change
/// the lock would have kept out: a deadlock, which every app retries.
pub(super) fn deadlock(message: impl Into<String>) -> ErrorResponse {
    ErrorResponse { code: 1213, sqlstate: "40001".into(), message: message.into() }
}

impl Session {
    /// `Ok(true)`: every window row is locked and as the app saw it.
    pub(super) async fn validate(&mut self) -> Result<bool, SessionError> {
        let rows: Vec<(RowId, CapturedRow)> = self.txn.captures.window().map(|(id, r)| (id.clone(), r.clone())).collect();
        for (id, row) in rows {
            if !self.validate_row(&id, &row).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Lock one captured row by key and compare it with what the app last
    /// saw (a row this transaction already held takes the locked values).
    /// `Ok(true)`: locked and equal; the row is protected from now on.
    pub(super) async fn validate_row(&mut self, id: &RowId, row: &CapturedRow) -> Result<bool, SessionError> {
        let cols: Vec<&String> = row.values.keys().collect();
        let list =
            if cols.is_empty() { quote_ident(&row.key_column) } else { cols.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ") };
        let table =
            if id.schema.is_empty() { quote_ident(&id.table) } else { format!("{}.{}", quote_ident(&id.schema), quote_ident(&id.table)) };
        let key = if row.key_meta.is_exact_number() && id.key.bytes().all(|b| b.is_ascii_digit() || b == b'-' || b == b'.') {
            id.key.clone()
        } else {
            match hex_literal(id.key.as_bytes(), row.key_meta.charset) {
                Some(k) => k,
                None => return Ok(false),
            }
        };
        let sql = format!("SELECT {list} FROM {table} WHERE {} = {key} FOR UPDATE", quote_ident(&row.key_column));
        let r = self.side_query(&sql).await?;
        if r.err.is_some() || r.rows.len() != 1 {
            return Ok(false);
        }
        let got = &r.rows[0];
        if row.protected && !cols.is_empty() {
            let cols: Vec<(String, crate::rules::ColMeta, Option<Vec<u8>>)> =
                cols.iter().zip(got).map(|(c, v)| ((*c).clone(), row.meta.get(*c).copied().unwrap_or_default(), v.clone())).collect();
            self.txn.captures.record(id.clone(), &row.key_column, row.key_meta, &cols, crate::rules::Seen::Locked);
        } else if !cols.is_empty()
            && cols.iter().zip(got).any(|(c, v)| {
                let meta = row.meta.get(*c).copied().unwrap_or_default();
                row.values.get(*c).is_none_or(|old| !crate::rules::same_value(&meta, old, v))
            })
        {
            return Ok(false);
        }
        self.txn.captures.set_protected(id);
        Ok(true)
    }

    /// Validate before `reason`'s statement; on a difference roll back, answer
    /// 1213 and hold the transaction aborted. `Ok(true)`: send the statement.
    pub(super) async fn validate_or_abort(&mut self, reason: &str) -> Result<bool, SessionError> {
        // The captures already hold what the held-back writes will store.
        if !self.txn.deferred.is_empty() && !self.flush_deferred("validation").await? {
            return Ok(false);
        }
        let ok = self.validate().await?;
        let outcome = if ok { "equal" } else { "changed" };
        self.shared.metrics.validations.get_or_create(&labels([("outcome", outcome.to_string())])).inc();
        tracing::info!(reason, outcome, "statement in the protection window validated");
        if ok {
            return Ok(true);
        }
        let error = deadlock(format!(
            "thaw: Deadlock found when trying to get lock; a row this transaction read changed before {reason}; transaction rolled back, try restarting transaction"
        ));
        self.abort_transaction(error).await?;
        Ok(false)
    }

    /// Roll the transaction back on the server, answer `error`, and answer
    /// every later statement of it with a rolled-back error.
    pub(super) async fn abort_transaction(&mut self, error: ErrorResponse) -> Result<(), SessionError> {
        self.side_query("ROLLBACK").await?;
        let after =
            deadlock(format!("thaw: this transaction was rolled back ({} {}); send ROLLBACK and retry it", error.code, error.sqlstate));
        self.txn.abort(after);
        // A streamed statement the client is still sending is read to its end first.
        self.discard_streamed().await?;
        self.client.send(&packets::build_err(error.code, &error.sqlstate, &error.message)).await?;
        Ok(self.client.flush().await?)
    }
}
