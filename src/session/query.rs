//! COM_QUERY and COM_STMT_EXECUTE as a pipeline: the statement is read once
//! (transaction control, classification when captures exist), planned by
//! the rules, gated by the protection window, then executed (send with
//! lock-error recovery, guard verdict, capture of what the app saw), and its
//! end is handed to the transaction state in one place.
use super::SessionError;
use super::capture::ResultCapture;
use super::command::Session;
use super::response::{Outcome, RelayOpts};
use super::validate::deadlock;
use crate::ops::metrics::labels;
use crate::retry::record::{assigns_variables, contains_ci, first_keyword, replayable_statement};
use crate::rules::lex::Modes;
use crate::rules::{Action, ErrorResponse, Rewrite, RowId, Seen, ViolationCheck, ViolationResponse};
use crate::sql::{self, Shape, TxControl};
use crate::wire::packets::{self, ERR, OK};
use crate::wire::response::Expect;
use bytes::Bytes;

/// A guarded or keyed write found the row changed since the app read it.
const ROW_CHANGED: &str = "thaw: Deadlock found when trying to get lock; the row changed since it was read; try restarting transaction";

pub(super) use super::decide::Step;

/// Statements after which sql_mode, the character set and the current
/// database are still what the server last said.
pub(super) fn keeps_settings(keyword: &str) -> bool {
    matches!(
        keyword,
        "SELECT"
            | "INSERT"
            | "UPDATE"
            | "DELETE"
            | "REPLACE"
            | "WITH"
            | "SHOW"
            | "DESC"
            | "DESCRIBE"
            | "EXPLAIN"
            | "BEGIN"
            | "START"
            | "COMMIT"
            | "ROLLBACK"
            | "SAVEPOINT"
            | "RELEASE"
            | "VALUES"
            | "TABLE"
    )
}

impl Session {
    pub(super) async fn query(&mut self, packet: Bytes, _in_tx_before: bool) -> Result<(), SessionError> {
        let sql = &packet[1..];
        let ctl = sql::tx_control(sql);
        if self.answered_for_state(&ctl).await? {
            return Ok(());
        }
        // Only what reads it pays for putting ROW_COUNT() back to a COMMIT's 0.
        if self.row_count_after_block && (contains_ci(sql, b"row_count") || contains_ci(sql, b"found_rows")) {
            self.side_query("SET @@SESSION.sql_mode = @@SESSION.sql_mode").await?;
            self.row_count_after_block = false;
        }
        let keyword = first_keyword(sql);
        let multi = self.state.multi_statements && has_inner_semicolon(sql);
        let rules_apply = self.rules_apply(sql);
        // With every rule in shadow thaw sends nothing of its own: it plans
        // with the settings it last read.
        if rules_apply && !self.state.settings_fresh && !self.all_shadow() {
            self.refresh_settings().await?;
        }
        // Read once: what the statement is matters only while captures exist.
        let class = (rules_apply && !self.txn.captures.is_empty()).then(|| sql::classify(sql, self.modes()));
        if !self.txn.deferred.is_empty() && !self.before_statement_with_deferred(&ctl, class.as_ref(), sql, &packet).await? {
            return Ok(());
        }
        let step = if rules_apply { self.decide(sql, class.as_ref(), true) } else { Step::Send(None) };
        let (step, shadow) = match step {
            Step::Shadow(rw) => (Step::Send(None), rw),
            step => (step, None),
        };
        let Some(rewrite) = self.settle(step, sql, class.as_ref()).await? else { return Ok(()) };
        if let Some(rw) = &rewrite
            && self.try_defer(rw, multi).await?
        {
            return Ok(());
        }
        let payload: Bytes = match &rewrite {
            Some(rw) => {
                let mut p = Vec::with_capacity(rw.sql.len() + 1);
                p.push(packet[0]);
                p.extend_from_slice(rw.sql.as_bytes());
                p.into()
            }
            None => packet.clone(),
        };
        let retry_unsafe = multi || matches!(keyword.as_str(), "CALL" | "LOAD" | "COMMIT" | "XA" | "ROLLBACK") || assigns_variables(sql);
        let locking = self.locking_read(sql, class.as_ref());
        let started = std::time::Instant::now();
        let mut first = self.send_recovering(&payload, retry_unsafe, self.state.in_transaction()).await?;
        // An SQL PREPARE takes a statement slot as COM_STMT_PREPARE does:
        // out of slots (1461), thaw's shadows are closed and it is sent again.
        if keyword == "PREPARE" && !multi && self.shadows > 0 && packets::parse_err(&first).is_some_and(|e| e.code == 1461) {
            self.close_shadows().await?;
            first = self.send_recovering(&payload, retry_unsafe, self.state.in_transaction()).await?;
        }
        if let Some(key) = &locking {
            self.shared.metrics.contention.ran(key, started.elapsed().as_secs_f64());
        }

        if let Some(rw) = rewrite.as_ref().filter(|rw| rw.violation.is_some() || rw.row.is_some())
            && self.enforce_guard(&first, rw.violation.as_ref(), rw.row.as_ref()).await?
        {
            return Ok(());
        }
        // The server asks for a client file only for a LOAD DATA LOCAL it ran:
        // one anywhere in the text (a later statement of a multi-statement
        // packet, an executable comment) is the client's to answer.
        let allow_infile = contains_ci(sql, b"LOAD") && contains_ci(sql, b"LOCAL");
        let unlock = rewrite.as_ref().filter(|rw| rw.action == Action::Unlock && rw.capture.is_some());
        let class_locking = rewrite.is_none() && matches!(class.as_ref().map(|c| &c.shape), Some(Shape::Read { locking: true }));
        // Shadow mode follows the read enforce mode would unlock as if it had.
        let shadow_read = shadow.as_ref().filter(|rw| rw.action == Action::Unlock).and_then(|rw| rw.capture.clone());
        let mut out = match shadow_read {
            Some(spec) => self.relay_capturing(first, Expect::Query, Some(spec), true, allow_infile, false).await?,
            None => {
                let spec = unlock.and_then(|rw| rw.capture.clone());
                let hold = spec.is_some();
                self.relay_capturing(first, Expect::Query, spec, class_locking, allow_infile, hold).await?
            }
        };
        // The replay after a real deadlock re-runs what was recorded, but not
        // thaw's re-locks: an unlocked read is recorded as the app wrote it, so
        // the replay holds the row's lock again (and a changed row no longer
        // matches what the client saw).
        let mut sent = if unlock.is_some() { packet.clone() } else { payload.clone() };
        if out.held_empty {
            // An unlocked read that found no row: run it as the app wrote it,
            // so its gap lock is taken as it would be direct (get-or-create).
            let first = self.send_recovering(&packet, false, self.state.in_transaction()).await?;
            out = self.relay_capturing(first, Expect::Query, None, true, false, false).await?;
            sent = packet.clone();
        } else if let Some(rw) = rewrite.as_ref().or(shadow.as_ref())
            && out.err.is_none()
            && !self.matched_nothing(&out)
        {
            self.txn.captures.apply(&rw.on_success);
        }
        if rewrite.as_ref().or(shadow.as_ref()).is_none_or(|rw| !rw.proven) && !self.txn.captures.is_empty() {
            self.forget_what_it_may_have_written(class.as_ref());
        }
        if multi || !keeps_settings(&keyword) {
            self.state.settings_may_change();
        }
        self.after_statement(&ctl, &sent, &out, !multi && replayable_statement(sql));
        if multi {
            self.savepoints_of_later_statements(sql, out.err.is_some());
            // A ROLLBACK TO in the packet gave rows savepoint values back;
            // the statements around it are still unproven.
            self.forget_what_it_may_have_written(class.as_ref());
        } else if ctl == TxControl::None
            && matches!(class.as_ref().map(|c| &c.shape), Some(Shape::Unknown(_)))
            && (contains_ci(sql, b"savepoint") || matches!(keyword.as_str(), "CALL" | "EXECUTE"))
        {
            // An executable comment, a procedure or dynamic SQL may set or
            // roll back to savepoints thaw does not see.
            self.txn.forget_savepoints();
        }
        Ok(())
    }

    /// Savepoint statements after the first statement of a multi-statement
    /// packet (the first went through the transaction state with the
    /// packet): set, rolled back to or released in order. When thaw cannot
    /// split the packet, or a statement failed (which ones ran is unknown),
    /// it no longer knows its savepoints.
    fn savepoints_of_later_statements(&mut self, sql: &[u8], failed: bool) {
        if self.txn.phase != super::txn::Phase::Open {
            return;
        }
        let pieces = std::str::from_utf8(sql).ok().and_then(|text| {
            let toks = crate::rules::lex::lex(text, self.modes()).ok()?;
            let ctls: Vec<TxControl> = toks
                .split(|t| t.token == sqlparser::tokenizer::Token::SemiColon)
                .filter_map(|p| {
                    let first = p.iter().find(|t| !t.is_trivia())?;
                    let last = p.iter().rev().find(|t| !t.is_trivia())?;
                    Some(sql::tx_control(&sql[first.start..last.end]))
                })
                .collect();
            Some(ctls)
        });
        let is_savepoint = |c: &TxControl| matches!(c, TxControl::Savepoint(_) | TxControl::RollbackTo(_) | TxControl::Release(_));
        match pieces {
            Some(ctls) if !failed => {
                for c in ctls.iter().skip(1).filter(|c| is_savepoint(c)) {
                    self.txn.savepoint_done(c);
                }
            }
            Some(ctls) if !ctls.iter().any(is_savepoint) => {}
            _ if !failed && !contains_ci(sql, b"savepoint") => {}
            _ => self.txn.forget_savepoints(),
        }
    }

    /// A transaction thaw rolled back, or one whose reads diverged, answers
    /// for the statement itself. True when the client got its answer.
    pub(super) async fn answered_for_state(&mut self, ctl: &TxControl) -> Result<bool, SessionError> {
        if let Some(err) = self.txn.aborted().cloned() {
            match ctl {
                // The server has no transaction: its own answer to ROLLBACK is
                // exact, and BEGIN starts a new one (a retry loop that does not
                // roll back after a deadlock, as the server already did).
                TxControl::Rollback { .. } | TxControl::Begin => return Ok(false),
                TxControl::Commit { .. } => self.txn.end(),
                _ => {}
            }
            self.answer_aborted(err).await?;
            return Ok(true);
        }
        // In shadow mode the app holds its own locks and nothing is aborted.
        if self.txn.captures.diverged && !matches!(ctl, TxControl::Rollback { .. }) && !self.all_shadow() {
            self.abort_diverged().await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// With held-back writes: COMMIT sends them with it, ROLLBACK drops
    /// them, and anything that may observe them sends them first. `Ok(false)`:
    /// the client has its answer.
    pub(super) async fn before_statement_with_deferred(
        &mut self,
        ctl: &TxControl,
        class: Option<&sql::Classified>,
        sql: &[u8],
        packet: &[u8],
    ) -> Result<bool, SessionError> {
        match ctl {
            // COMMIT RELEASE, AND CHAIN: the held writes are sent first, then it goes as sent.
            TxControl::Commit { chain: false } if sql::is_plain_commit(sql) => {
                self.commit_deferred(ctl, packet).await?;
                return Ok(false);
            }
            TxControl::Rollback { .. } => {
                self.txn.deferred.clear();
                return Ok(true);
            }
            _ => {}
        }
        match self.flush_cause(ctl, class, sql) {
            Some(cause) => self.flush_deferred(cause).await,
            None => Ok(true),
        }
    }

    /// A locking read (of any table): its shape is registered with the
    /// contention metrics and remembered for the transaction's lock errors.
    pub(super) fn locking_read(&mut self, sql: &[u8], class: Option<&sql::Classified>) -> Option<String> {
        if !(contains_ci(sql, b"for update") || contains_ci(sql, b"share")) {
            return None;
        }
        let text = std::str::from_utf8(sql).ok()?;
        let owned;
        let class = match class {
            Some(c) => c,
            None => {
                owned = sql::classify(sql, self.modes());
                &owned
            }
        };
        if !matches!(class.shape, Shape::Read { locking: true }) {
            return None;
        }
        let table = class.relations.first().map_or_else(|| "?".to_string(), |r| r.name.clone());
        let key = self.shared.metrics.contention.shape(&crate::rules::fingerprint(text), &table);
        self.note_locking_shape(&key);
        Some(key)
    }

    pub(super) fn note_locking_shape(&mut self, key: &str) {
        if self.txn.locking_shapes.len() < 16 && !self.txn.locking_shapes.iter().any(|k| k == key) {
            self.txn.locking_shapes.push(key.to_string());
        }
    }

    /// An UPDATE's OK that matched no row: its writes did not happen, so the
    /// captures keep what the app saw.
    pub(super) fn matched_nothing(&self, out: &Outcome) -> bool {
        let Some(ok) = &out.ok else { return false };
        let matched = if self.state.found_rows() { Some(ok.affected_rows) } else { rows_matched(&ok.info) };
        matched == Some(0)
    }

    /// The rules have something to say about a statement with this text
    /// (for a prepared statement: its text as prepared).
    pub(super) fn rules_apply(&self, sql: &[u8]) -> bool {
        !self.live.rules.is_empty()
            && !self.txn.xa
            && (!self.txn.captures.is_empty() || std::str::from_utf8(sql).is_ok_and(|t| self.live.rules.is_candidate(t)))
    }

    /// Carry out what `decide` said up to the send: refuse, or validate the
    /// window and plan again. `None` when the client already has its answer.
    pub(super) async fn settle(
        &mut self,
        step: Step,
        sql: &[u8],
        class: Option<&sql::Classified>,
    ) -> Result<Option<Option<Box<Rewrite>>>, SessionError> {
        match step {
            Step::Send(rw) => Ok(Some(rw)),
            // The caller sends a shadowed statement as it came.
            Step::Shadow(_) => Ok(Some(None)),
            Step::Refuse(error) => {
                self.client.send(&packets::build_err(error.code, &error.sqlstate, &error.message)).await?;
                self.client.flush().await?;
                Ok(None)
            }
            Step::ValidateThenSend { reason, .. } => {
                if !self.validate_or_abort(&reason).await? {
                    return Ok(None);
                }
                // The rows are locked and as the app saw them: plan again, so
                // an UPDATE of one of them still gets its guard.
                Ok(Some(match self.decide(sql, class, false) {
                    Step::Send(rw) | Step::ValidateThenSend { rewrite: rw, .. } => rw,
                    Step::Refuse(_) | Step::Shadow(_) => None,
                }))
            }
        }
    }

    /// Relay with the capture sink when the transaction has captures or this
    /// read is the one thaw unlocked.
    pub(super) async fn relay_capturing(
        &mut self,
        first: Bytes,
        expect: Expect,
        unlocked: Option<crate::rules::CaptureSpec>,
        locking: bool,
        allow_infile: bool,
        hold: bool,
    ) -> Result<Outcome, SessionError> {
        let in_tx = self.state.statement_in_transaction();
        let capture = in_tx && (unlocked.is_some() || !self.txn.captures.is_empty());
        if !capture {
            return self.relay(first, expect, RelayOpts { allow_infile, ..RelayOpts::default() }).await;
        }
        let live = self.live.clone();
        let captures = std::mem::take(&mut self.txn.captures);
        let seen = if locking { Seen::Locked } else { Seen::Plain };
        let mut rc = ResultCapture::new(&live.rules, captures, unlocked, seen, expect == Expect::Execute);
        let out =
            self.relay(first, expect, RelayOpts { allow_infile, rows: Some(&mut rc), hold_until_row: hold, ..RelayOpts::default() }).await;
        let spoiled = rc.spoiled || rc.unlocked_rows > 1 || out.as_ref().is_ok_and(|o| o.result_sets > 1 && hold);
        let mut captures = rc.captures;
        if spoiled && let Some(spec) = &rc.unlocked {
            tracing::warn!(table = %spec.table, "unlocked read could not be captured; writes to its rows will be validated");
            captures.mark_uncertain(None, &spec.table);
        }
        self.txn.captures = captures;
        out
    }

    pub(super) fn modes(&self) -> Modes {
        Modes { backslash_escapes: !self.state.no_backslash_escapes(), ansi_quotes: self.state.ansi_quotes() }
    }

    /// A statement thaw did not plan may have changed captured rows: their
    /// last-seen values are no longer known.
    pub(super) fn forget_what_it_may_have_written(&mut self, class: Option<&sql::Classified>) {
        crate::rules::safety::forget_unproven(&self.live.rules, None, class, &mut self.txn.captures);
    }

    /// A result showed the app a concurrent change the locked flow would
    /// have kept out: the transaction cannot go on.
    pub(super) async fn abort_diverged(&mut self) -> Result<(), SessionError> {
        self.shared.metrics.validations.get_or_create(&labels([("outcome", "changed".to_string())])).inc();
        let error = deadlock(
            "thaw: Deadlock found when trying to get lock; a row this transaction read was changed by another session; try restarting transaction",
        );
        self.abort_transaction(error).await
    }

    /// A statement of a transaction thaw rolled back.
    pub(super) async fn answer_aborted(&mut self, err: ErrorResponse) -> Result<(), SessionError> {
        self.shared.metrics.aborted_statements.inc();
        self.client.send(&packets::build_err(err.code, &err.sqlstate, &err.message)).await?;
        Ok(self.client.flush().await?)
    }

    /// A keyed write of a captured row, or a guarded write, that matched no
    /// row (or whose guard overflowed an UNSIGNED column, 1690): an invariant
    /// broke, a CAS race was lost, the app's own condition was false, or the
    /// row is gone. Returns true when thaw answered the client itself.
    pub(super) async fn enforce_guard(
        &mut self,
        first: &Bytes,
        v: Option<&ViolationCheck>,
        row: Option<&RowId>,
    ) -> Result<bool, SessionError> {
        let out_of_range = first.first() == Some(&ERR) && packets::parse_err(first).is_some_and(|e| e.code == 1690);
        if !out_of_range {
            if first.first() != Some(&OK) {
                return Ok(false);
            }
            let Some(ok) = packets::parse_ok(first, self.state.session_track()) else { return Ok(false) };
            // Rows matched, not changed: an UPDATE that changes nothing is no violation.
            let matched = if self.state.found_rows() { Some(ok.affected_rows) } else { rows_matched(&ok.info) };
            if matched != Some(0) {
                return Ok(false);
            }
        }
        if let Some(v) = v {
            let exists = self.side_query(&v.exists_sql).await?;
            if let Some(e) = &exists.err {
                tracing::warn!(rule = %v.rule, code = e.code, "cannot tell a violation from a missing row; passing the result through");
                return Ok(false);
            }
            if let Some(found) = exists.rows.first() {
                return self.guard_failed(v, found.first().and_then(|c| c.as_deref()) == Some(b"1")).await;
            }
        }
        // No row matched the app's own WHERE. For a row the app was shown,
        // that is what direct shows only if the row is still as the app saw
        // it: lock it by key and compare. Gone or changed: a concurrent change
        // the lock would have kept out.
        let Some(id) = row else { return Ok(false) };
        let Some(captured) = self.txn.captures.get(id).cloned() else { return Ok(false) };
        if self.validate_row(id, &captured).await? {
            return Ok(false);
        }
        self.shared.metrics.validations.get_or_create(&labels([("outcome", "changed".to_string())])).inc();
        let error = deadlock(ROW_CHANGED);
        self.abort_transaction(error).await?;
        Ok(true)
    }

    /// The row matched the app's WHERE but not the guard: a lost CAS race
    /// (`cas_held` false) or a broken invariant.
    pub(super) async fn guard_failed(&mut self, v: &ViolationCheck, cas_held: bool) -> Result<bool, SessionError> {
        let key = if self.live.config.log.redact_literals { "?" } else { v.key.as_str() };
        if !cas_held {
            // The row changed since the app read it: a lost race, retryable.
            tracing::info!(rule = %v.rule, table = %v.table, key, "compare-and-set conflict");
            self.shared.metrics.validations.get_or_create(&labels([("outcome", "changed".to_string())])).inc();
            let error = deadlock(ROW_CHANGED);
            self.abort_transaction(error).await?;
            return Ok(true);
        }
        self.shared.metrics.violations.get_or_create(&labels([("rule", v.rule.clone())])).inc();
        tracing::info!(rule = %v.rule, table = %v.table, key, "guard violated");
        let ViolationResponse::Error { error, rollback } = &v.response else {
            return Ok(false);
        };
        if *rollback {
            // As MySQL treats a deadlock: nothing the transaction wrote survives,
            // and nothing the app sends after it can commit a part of it.
            self.abort_transaction(error.clone()).await?;
        } else {
            self.client.send(&packets::build_err(error.code, &error.sqlstate, &error.message)).await?;
            self.client.flush().await?;
        }
        Ok(true)
    }
}

/// "Rows matched: 1  Changed: 0  Warnings: 0" → 1. The server writes this
/// string in the session's `lc_messages` ("Datensätze gefunden: 1  Geändert:
/// 0  Warnungen: 0"); every translation keeps the three counts in this
/// order, so the first of exactly three numbers is rows matched. MariaDB
/// sends the string length-prefixed even without CLIENT_SESSION_TRACK, so
/// `info` may still hold the prefix (0x33, an ASCII '3', for the German one).
pub(super) fn rows_matched(info: &[u8]) -> Option<u64> {
    let text = match packets::lenenc_str(info) {
        Some((Some(s), used)) if used == info.len() => s,
        _ => info,
    };
    let s = std::str::from_utf8(text).ok()?;
    let numbers: Vec<&str> = s.split(|c: char| !c.is_ascii_digit()).filter(|n| !n.is_empty()).collect();
    if numbers.len() != 3 {
        return None;
    }
    numbers[0].parse().ok()
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
        assert_eq!(rows_matched("Datensätze gefunden: 0  Geändert: 0  Warnungen: 0".as_bytes()), Some(0));
        assert_eq!(rows_matched("該当した行: 7  変更: 0  警告: 0".as_bytes()), Some(7));
        assert_eq!(rows_matched("匹配行：3已更改：3警告：0".as_bytes()), Some(3));
        assert_eq!(rows_matched("Linii identificate (matched): 2  Schimbate: 1  Atentionari (warnings): 0".as_bytes()), Some(2));
        assert_eq!(rows_matched(b""), None);
        assert_eq!(rows_matched(b"Records: 2  Duplicates: 0"), None);
        // As parse_ok leaves it without CLIENT_SESSION_TRACK: with the length prefix.
        let german = "Datensätze gefunden: 0  Geändert: 0  Warnungen: 0".as_bytes();
        assert_eq!(german.len(), 0x33);
        assert_eq!(rows_matched(&[&[0x33u8][..], german].concat()), Some(0));
        assert_eq!(rows_matched(b"(Rows matched: 4  Changed: 4  Warnings: 0"), Some(4));
    }

    #[test]
    fn inner_semicolons() {
        assert!(has_inner_semicolon(b"SELECT 1; SELECT 2"));
        assert!(!has_inner_semicolon(b"SELECT 1;  \n"));
        assert!(!has_inner_semicolon(b"SELECT 1"));
    }
}
