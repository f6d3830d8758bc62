//! `defer_writes` decided without IO: which guarded writes may be answered
//! at once and held back to COMMIT, and which statements must see the held
//! writes sent first. `session::defer` runs these; `thaw explain` calls
//! them too.
use super::{Action, Rewrite, RowId, RuleSet, ViolationCheck, ViolationResponse};
use crate::sql::{Classified, Shape, TxControl, WriteKind};
use sqlparser::ast::{Expr, visit_expressions};
use std::ops::ControlFlow;

/// Writes held per transaction; more are sent as they come.
pub const MAX_DEFERRED: usize = 16;

/// A guarded write answered and held back.
#[derive(Debug, Clone)]
pub struct Deferred {
    pub sql: String,
    pub rule: String,
    pub violation: Option<ViolationCheck>,
    pub row: Option<RowId>,
}

impl Deferred {
    pub fn of(rw: &Rewrite) -> Self {
        Deferred { sql: rw.sql.clone(), rule: rw.rule.clone(), violation: rw.violation.clone(), row: rw.row.clone() }
    }
}

/// `rw` may be answered now and sent with COMMIT: its rule says so, thaw
/// knows its OK in advance, and a failed guard can still be answered (at
/// COMMIT). `in_transaction` is the server's IN_TRANS; `mariadb`: the
/// backend runs anonymous compound statements; `completion_type` is
/// @@SESSION.completion_type. The session also checks the table has no
/// triggers (their rows would be missing until COMMIT).
pub fn may_defer(
    rules: &RuleSet,
    rw: &Rewrite,
    multi: bool,
    mariadb: bool,
    in_transaction: bool,
    completion_type: &str,
    held: &[Deferred],
) -> bool {
    let rule_says = rules.table(&rw.table).is_some_and(|t| t.defer_writes);
    // `rollback: false` promises the app its transaction goes on after a
    // violation told at the UPDATE; told at COMMIT, it cannot.
    let answerable = rw.violation.as_ref().is_some_and(|v| matches!(v.response, ViolationResponse::Error { rollback: true, .. }));
    rule_says
        && answerable
        && rw.deferrable
        && rw.proven
        && matches!(rw.action, Action::Delta | Action::Guard)
        && !multi
        && mariadb
        && in_transaction
        // A COMMIT that chains or releases does more than the block's COMMIT.
        && completion_type.eq_ignore_ascii_case("NO_CHAIN")
        && held.len() < MAX_DEFERRED
        && !held.iter().any(|d| d.row == rw.row)
}

/// Why the held writes must reach the server before this statement, or
/// `None` when it cannot observe or depend on them: an INSERT of plain
/// values into a table no rule governs or links, or a read of no table
/// at all. What reads the last statement's results (ROW_COUNT(),
/// FOUND_ROWS(), SHOW WARNINGS, @@warning_count) needs them only right
/// after the held write (`held_last`): after a later statement it reads
/// that one's, as direct. COMMIT and ROLLBACK are handled by the caller.
pub fn flush_cause(rules: &RuleSet, ctl: &TxControl, class: Option<&Classified>, sql: &[u8], held_last: bool) -> Option<&'static str> {
    match ctl {
        TxControl::None => {}
        TxControl::Savepoint(_) | TxControl::RollbackTo(_) | TxControl::Release(_) => return Some("savepoint"),
        TxControl::Begin | TxControl::Commit { .. } | TxControl::Xa { .. } | TxControl::ImplicitCommit => return Some("commit"),
        TxControl::Rollback { .. } => return None,
    }
    if reads_diagnostics(sql) || class.is_some_and(reads_session_state) {
        return held_last.then_some("session_state");
    }
    let Some(class) = class else { return Some("statement") };
    match &class.shape {
        Shape::Write { target, kind: WriteKind::Insert { values_only: true } }
            if rules.table(&target.name).is_none() && !rules.tables().any(|t| t.links(&target.name)) =>
        {
            None
        }
        Shape::Write { target, .. } if rules.table(&target.name).is_some() => Some("write"),
        // A read of no table cannot see a held row (a trigger the held
        // write fires may have written any other table).
        Shape::Read { locking: false } if class.relations.is_empty() => None,
        Shape::Read { .. } => Some("read"),
        _ => Some("statement"),
    }
}

/// SHOW WARNINGS / ERRORS / COUNT(*) WARNINGS, GET DIAGNOSTICS, or a read
/// of @@warning_count / @@error_count: the last statement's diagnostics.
fn reads_diagnostics(sql: &[u8]) -> bool {
    let text = String::from_utf8_lossy(sql).to_ascii_lowercase();
    let first = crate::retry::record::first_keyword(sql);
    (first == "SHOW" && (text.contains("warnings") || text.contains("errors")))
        || (first == "GET" && text.contains("diagnostics"))
        || text.contains("warning_count")
        || text.contains("error_count")
}

/// The statement calls a function that reads the last statement's
/// results (ROW_COUNT(), FOUND_ROWS()).
fn reads_session_state(class: &Classified) -> bool {
    let Some(stmt) = &class.stmt else { return true };
    visit_expressions(stmt, |e| match e {
        Expr::Function(f) => {
            let name = f.name.0.last().and_then(|p| p.as_ident()).map(|i| i.value.to_ascii_lowercase()).unwrap_or_default();
            if matches!(name.as_str(), "row_count" | "found_rows") { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        }
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::lex::Modes;
    use crate::sql::{classify, tx_control};

    fn rules() -> RuleSet {
        RuleSet::from_yaml(
            "tables:\n  - table: users\n    key: id\n    invariants: ['balance >= 0']\n    balance_columns: [balance]\n    trigger_tables: [ledger]\n",
            "t.yaml",
        )
        .unwrap()
    }

    fn cause(sql: &str, held_last: bool) -> Option<&'static str> {
        flush_cause(&rules(), &tx_control(sql.as_bytes()), Some(&classify(sql.as_bytes(), Modes::default())), sql.as_bytes(), held_last)
    }

    #[test]
    fn what_must_see_the_held_writes() {
        assert_eq!(cause("INSERT INTO logs (a) VALUES (1)", false), None);
        assert_eq!(cause("SELECT 1", false), None);
        assert_eq!(cause("SELECT * FROM logs WHERE id = 3", false), Some("read"), "a trigger may have written it");
        assert_eq!(cause("SELECT ROW_COUNT()", true), Some("session_state"));
        assert_eq!(cause("SELECT ROW_COUNT()", false), None, "after a later statement it reads that one's");
        assert_eq!(cause("SHOW WARNINGS", true), Some("session_state"));
        assert_eq!(cause("INSERT INTO ledger (uid) VALUES (8)", false), Some("statement"));
        assert_eq!(cause("UPDATE users SET balance = 1 WHERE id = 9", false), Some("write"));
        assert_eq!(cause("SAVEPOINT a", false), Some("savepoint"));
        assert_eq!(cause("ROLLBACK", false), None);
        assert_eq!(flush_cause(&rules(), &TxControl::None, None, b"CALL x()", false), Some("statement"), "unread: it may see them");
    }
}
