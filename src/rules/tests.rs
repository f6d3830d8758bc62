//! Planner tests: the statements thaw must get right, end to end through
//! `RuleSet::plan`.
use super::*;
use proptest::prelude::*;

const BILLING: &str = include_str!("../../rules/billing.yaml");

fn billing() -> RuleSet {
    RuleSet::from_yaml(BILLING, "rules/billing.yaml").unwrap()
}

fn rules(yaml: &str) -> RuleSet {
    RuleSet::from_yaml(yaml, "test.yaml").unwrap()
}

struct Ctx {
    captures: Captures,
    in_transaction: bool,
    simultaneous: Option<bool>,
    no_backslash_escapes: bool,
    ansi_quotes: bool,
}

impl Ctx {
    fn new() -> Ctx {
        Ctx {
            captures: Captures::default(),
            in_transaction: true,
            simultaneous: Some(false),
            no_backslash_escapes: false,
            ansi_quotes: false,
        }
    }
    fn pc(&self) -> PlanContext<'_> {
        PlanContext {
            no_backslash_escapes: self.no_backslash_escapes,
            ansi_quotes: self.ansi_quotes,
            in_transaction: self.in_transaction,
            simultaneous_assignment: self.simultaneous,
            captures: &self.captures,
            schema: None,
        }
    }
    /// Capture a users row as the session would after an unlocked read.
    fn capture_user(&mut self, rs: &RuleSet, id: &str, balance: Option<&str>, frozen: Option<&str>) {
        let read = format!("SELECT users.id, users.balance, users.frozen_balance FROM users WHERE users.id = {id} FOR UPDATE");
        let spec = rewrite(rs, &read, self).capture.expect("capture spec");
        self.captures.record_row(
            &spec,
            &["id", "balance", "frozen_balance"],
            &[Some(id.as_bytes()), balance.map(str::as_bytes), frozen.map(str::as_bytes)],
        );
    }
}

fn rewrite(rs: &RuleSet, sql: &str, ctx: &Ctx) -> Rewrite {
    match rs.plan(sql, &ctx.pc()) {
        Plan::Rewrite(rw) => *rw,
        other => panic!("expected a rewrite of {sql:?}, got {other:?}"),
    }
}

fn unhandled_reason(rs: &RuleSet, sql: &str, ctx: &Ctx) -> String {
    match rs.plan(sql, &ctx.pc()) {
        Plan::Unhandled { reason, .. } => reason,
        other => panic!("expected unhandled for {sql:?}, got {other:?}"),
    }
}

// ---- the brief's examples ---------------------------------------------------

#[test]
fn brief_example_guard() {
    let rs = billing();
    let ctx = Ctx::new();
    let rw = rewrite(&rs, "UPDATE users SET frozen_balance = frozen_balance + 616 WHERE id = 8", &ctx);
    assert_eq!(rw.action, Action::Guard);
    assert_eq!(
        rw.sql,
        "UPDATE users SET frozen_balance = frozen_balance + 616 WHERE (id = 8) AND (balance - (frozen_balance + 616) >= 0) AND ((frozen_balance + 616) >= 0)"
    );
    let v = rw.violation.unwrap();
    assert_eq!(v.exists_sql, "SELECT 1 FROM users WHERE id = 8 LOCK IN SHARE MODE");
    assert_eq!(v.rule, "users-balance");
    assert_eq!(v.key, "8");
    assert_eq!(
        v.response,
        ViolationResponse::Error {
            error: ErrorResponse {
                code: 1644,
                sqlstate: "45000".into(),
                message: "insufficient balance (rule users-balance, user 8)".into()
            },
            rollback: true
        }
    );
}

#[test]
fn legacy_trace() {
    let rs = billing();
    let mut ctx = Ctx::new();
    let trace = include_str!("testdata/legacy-app-trace.sql");
    let stmts: Vec<&str> = trace
        .split(";\n")
        .map(|s| s.lines().filter(|l| !l.starts_with("--")).collect::<Vec<_>>().join("\n"))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .map(|s| &*Box::leak(s.into_boxed_str()))
        .collect();
    // The shipped rule says the app's SKIP LOCKED is a contention escape.
    let skip_locked = stmts.iter().find(|s| s.ends_with("FOR UPDATE SKIP LOCKED")).unwrap();
    let rw = rewrite(&rs, skip_locked, &ctx);
    assert_eq!(rw.action, Action::Unlock);
    assert_eq!(
        rw.sql,
        "SELECT users.id, users.username, users.balance, users.frozen_balance, users.updated_at \nFROM users \nWHERE users.id = 8"
    );
    let spec = rw.capture.unwrap();
    assert_eq!(spec.columns, vec!["balance", "frozen_balance", "username"]);
    ctx.captures.record_row(
        &spec,
        &["id", "username", "balance", "frozen_balance", "updated_at"],
        &[Some(b"8"), Some(b"bob"), Some(b"5000"), Some(b"616"), Some(b"2024-01-01 00:00:00")],
    );
    // The plain read and the INSERT ... RETURNING are not ours.
    for s in &stmts {
        if s.starts_with("INSERT")
            || s.starts_with("SET")
            || s.starts_with("ROLLBACK")
            || (s.starts_with("SELECT") && !s.contains("FOR UPDATE"))
        {
            assert_eq!(rs.plan(s, &ctx.pc()), Plan::Forward, "{s}");
        }
    }
    let update = stmts.iter().find(|s| s.starts_with("UPDATE")).unwrap();
    assert_eq!(*update, "UPDATE users SET frozen_balance=1232, updated_at=now() WHERE users.id = 8");
    let rw = rewrite(&rs, update, &ctx);
    assert_eq!(rw.action, Action::Delta);
    assert_eq!(
        rw.sql,
        "UPDATE users SET frozen_balance=frozen_balance + 616, updated_at=now() WHERE (users.id = 8) AND (balance - (frozen_balance + 616) >= 0) AND ((frozen_balance + 616) >= 0)"
    );
    assert_eq!(
        rw.on_success,
        vec![CaptureUpdate::Set {
            schema: String::new(),
            table: "users".into(),
            key: "8".into(),
            column: "frozen_balance".into(),
            value: Some("1232".into())
        }]
    );
    assert_eq!(rw.fingerprint, "UPDATE users SET frozen_balance=?, updated_at=now() WHERE users.id = ?");
    // A second write in the same transaction is relative to what the app now believes.
    ctx.captures.apply(&rw.on_success);
    let rw = rewrite(&rs, "UPDATE users SET frozen_balance=1848, updated_at=now() WHERE users.id = 8", &ctx);
    assert!(rw.sql.contains("frozen_balance=frozen_balance + 616,"), "{}", rw.sql);
    // The first FOR UPDATE of the trace (other session) unlocks too.
    let first = stmts.iter().find(|s| s.ends_with("WHERE users.id = 8 FOR UPDATE")).unwrap();
    assert_eq!(rewrite(&rs, first, &ctx).action, Action::Unlock);
    // conversations: unlock, counters captured for deltas.
    let rw = rewrite(&rs, "SELECT * FROM conversations WHERE id = 3 FOR UPDATE", &ctx);
    assert_eq!(rw.action, Action::Unlock);
    assert_eq!(rw.capture.unwrap().columns, ["message_count", "total_tokens"]);
}

// ---- unlock ---------------------------------------------------------------------

#[test]
fn unlock_every_lock_form() {
    let rs = billing();
    let ctx = Ctx::new();
    let base = "SELECT * FROM users WHERE id = 8";
    for clause in ["FOR UPDATE", "FOR SHARE", "LOCK IN SHARE MODE", "FOR UPDATE OF users", "FOR UPDATE WAIT 3", "LOCK IN SHARE MODE WAIT 3"]
    {
        let rw = rewrite(&rs, &format!("{base} {clause}"), &ctx);
        assert_eq!(rw.sql, base, "{clause}");
        assert_eq!(rw.action, Action::Unlock);
        let rw = rewrite(&rs, &format!("{base} {clause} ; -- done\n"), &ctx);
        assert_eq!(rw.sql, format!("{base} ; -- done\n"), "{clause}");
    }
    // SKIP LOCKED is a claim: two workers must never both get the row.
    // Try-locks keep their meaning unless the rule says `unlock_try_locks`.
    for clause in ["FOR UPDATE SKIP LOCKED", "FOR SHARE SKIP LOCKED", "FOR UPDATE NOWAIT"] {
        assert_eq!(rewrite(&rs, &format!("{base} {clause}"), &ctx).action, Action::Unlock, "{clause}");
        let strict = rules("tables:\n  - table: users\n    key: id\n    balance_columns: [balance]\n");
        assert_eq!(strict.plan(&format!("{base} {clause}"), &ctx.pc()), Plan::Forward, "{clause}");
    }
}

#[test]
fn unlock_multiline_with_literal_and_names() {
    let rs = billing();
    let ctx = Ctx::new();
    for sql in [
        "SELECT users.id, users.balance \nFROM users \nWHERE users.id = 8 FOR UPDATE",
        "SELECT u.id FROM users AS u WHERE u.id = 8 AND u.balance > 0 FOR UPDATE",
        "SELECT `users`.`id` FROM `users` WHERE (`users`.`id` = '8') FOR UPDATE",
        "select * from USERS where 8 = ID for update",
        "SELECT * FROM billing.users WHERE billing.users.id = 8 FOR UPDATE",
    ] {
        let rw = rewrite(&rs, sql, &ctx);
        assert!(!rw.sql.to_ascii_uppercase().contains("FOR UPDATE"), "{sql}");
        assert_eq!(rw.capture.unwrap().key_literal.as_deref(), Some("8"), "{sql}");
    }
}

#[test]
fn unlock_capture_only_in_transaction() {
    let rs = billing();
    let mut ctx = Ctx::new();
    ctx.in_transaction = false;
    let rw = rewrite(&rs, "SELECT * FROM users WHERE id = 8 FOR UPDATE", &ctx);
    assert_eq!(rw.capture, None);
}

#[test]
fn unlock_not_for_expression_aliased_columns() {
    let rs = billing();
    let ctx = Ctx::new();
    let rw = rewrite(&rs, "SELECT id, balance + 0 AS balance, frozen_balance FROM users WHERE id = 8 FOR UPDATE", &ctx);
    let spec = rw.capture.unwrap();
    assert_eq!(spec.columns, vec!["frozen_balance", "username"]);
    assert!(spec.key_from_row);
}

#[test]
fn unmatched_locking_reads_are_unhandled() {
    let rs = billing();
    let ctx = Ctx::new();
    for (sql, why) in [
        ("SELECT * FROM users WHERE email = 'a@b' FOR UPDATE", "without a top-level"),
        ("SELECT * FROM users WHERE id IN (1, 2) FOR UPDATE", "without a top-level"),
        ("SELECT * FROM users WHERE id = 8 OR id = 9 FOR UPDATE", "without a top-level"),
        ("SELECT * FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id = 8 FOR UPDATE", "single-table"),
        ("SELECT * FROM users WHERE id = (SELECT 8) FOR UPDATE", "subquery"),
        ("SELECT * FROM users WHERE id = 8 AND balance > (SELECT 1) FOR UPDATE", "subquery"),
        ("SELECT id INTO @x FROM users WHERE id = 8 FOR UPDATE", "INTO"),
        ("SELECT id FROM users WHERE id = 8 FOR UPDATE INTO @x", "does not end"),
        ("SELECT * FROM orders WHERE user_id IN (SELECT id FROM users) FOR UPDATE", "another table"),
    ] {
        let r = unhandled_reason(&rs, sql, &ctx);
        assert!(r.contains(why), "{sql}: {r}");
    }
    // Locking reads of other tables are not ours.
    assert_eq!(rs.plan("SELECT * FROM orders WHERE id = 8 FOR UPDATE", &ctx.pc()), Plan::Forward);
    match rs.plan("SELECT * FROM users WHERE email = 'secret@x' FOR UPDATE", &ctx.pc()) {
        Plan::Unhandled { fingerprint, table, .. } => {
            assert_eq!(fingerprint, "SELECT * FROM users WHERE email = ? FOR UPDATE");
            assert_eq!(table, "users");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unlock_off_leaves_locking_reads() {
    let rs = rules("tables:\n  - table: users\n    key: id\n    unlock: false\n    invariants: ['balance >= 0']\n");
    let ctx = Ctx::new();
    assert_eq!(rs.plan("SELECT * FROM users WHERE id = 8 FOR UPDATE", &ctx.pc()), Plan::Forward);
    assert_eq!(rewrite(&rs, "UPDATE users SET balance = balance - 1 WHERE id = 8", &ctx).action, Action::Guard);
}

// ---- guard ----------------------------------------------------------------------

#[test]
fn guard_comments_hints_quotes_survive() {
    let rs = billing();
    let ctx = Ctx::new();
    let sql = "UPDATE /*+ hint */ users SET balance = balance - 5 WHERE users.id = 8 -- trailing";
    let rw = rewrite(&rs, sql, &ctx);
    assert_eq!(
        rw.sql,
        "UPDATE /*+ hint */ users SET balance = balance - 5 WHERE (users.id = 8) AND ((balance - 5) - frozen_balance >= 0) -- trailing"
    );
    let sql = "UPDATE `users` AS u SET u.`frozen_balance` = u.`frozen_balance` + 616, note = 'it''s -- not a comment' WHERE u.`id` = 8 /* why */ ORDER BY id LIMIT 1";
    let rw = rewrite(&rs, sql, &ctx);
    assert_eq!(
        rw.sql,
        "UPDATE `users` AS u SET u.`frozen_balance` = u.`frozen_balance` + 616, note = 'it''s -- not a comment' WHERE (u.`id` = 8) AND (balance - (u.`frozen_balance` + 616) >= 0) AND ((u.`frozen_balance` + 616) >= 0) /* why */ ORDER BY id LIMIT 1"
    );
    assert_eq!(rw.violation.unwrap().exists_sql, "SELECT 1 FROM `users` AS u WHERE u.`id` = 8 LOCK IN SHARE MODE");
}

#[test]
fn guard_wraps_where_with_or() {
    let rs = billing();
    let ctx = Ctx::new();
    let rw = rewrite(&rs, "UPDATE users SET balance = 10 WHERE id = 8 AND (status = 'a' OR status = 'b')", &ctx);
    assert!(rw.sql.contains("WHERE (id = 8 AND (status = 'a' OR status = 'b')) AND ((10) - frozen_balance >= 0)"), "{}", rw.sql);
}

#[test]
fn guard_left_to_right_set() {
    let rs = billing();
    let mut ctx = Ctx::new();
    // MySQL: the second assignment sees the new frozen_balance.
    let sql = "UPDATE users SET frozen_balance = frozen_balance + 5, balance = balance - frozen_balance WHERE id = 8";
    let rw = rewrite(&rs, sql, &ctx);
    assert!(
        rw.sql
            .ends_with("WHERE (id = 8) AND ((balance - (frozen_balance + 5)) - (frozen_balance + 5) >= 0) AND ((frozen_balance + 5) >= 0)"),
        "{}",
        rw.sql
    );
    // SIMULTANEOUS_ASSIGNMENT: it sees the old value.
    ctx.simultaneous = Some(true);
    let rw = rewrite(&rs, sql, &ctx);
    assert!(rw.sql.ends_with("AND ((balance - frozen_balance) - (frozen_balance + 5) >= 0) AND ((frozen_balance + 5) >= 0)"), "{}", rw.sql);
    // Unknown mode: refuse.
    ctx.simultaneous = None;
    assert!(unhandled_reason(&rs, sql, &ctx).contains("SIMULTANEOUS_ASSIGNMENT"));
    // Not order dependent: fine with an unknown mode.
    assert_eq!(rewrite(&rs, "UPDATE users SET balance = balance - 1 WHERE id = 8", &ctx).action, Action::Guard);
}

#[test]
fn guard_skips_invariants_of_unassigned_columns() {
    let rs = billing();
    let ctx = Ctx::new();
    // Nothing to guard or make relative: sent as written (not proven: no capture).
    assert!(
        matches!(rs.plan("UPDATE users SET username = 'x' WHERE id = 8", &ctx.pc()), Plan::Rewrite(rw) if rw.action == Action::Pass && !rw.proven)
    );
    let rw = rewrite(&rs, "UPDATE users SET balance = balance + 1 WHERE id = 8", &ctx);
    assert!(!rw.sql.contains("(frozen_balance >= 0)"), "{}", rw.sql);
}

#[test]
fn guard_refuses_impure_values() {
    let rs = billing();
    let ctx = Ctx::new();
    for sql in [
        "UPDATE users SET balance = balance - RAND() WHERE id = 8",
        "UPDATE users SET balance = (SELECT 5) WHERE id = 8",
        "UPDATE users SET balance = @x WHERE id = 8",
        "UPDATE users SET balance = @@max_allowed_packet WHERE id = 8",
        "UPDATE users SET balance = DEFAULT WHERE id = 8",
        "UPDATE users SET balance = VALUES(balance) WHERE id = 8",
        "UPDATE users SET balance = balance - CURRENT_TIMESTAMP WHERE id = 8",
        "UPDATE users SET balance = o.b WHERE id = 8",
    ] {
        assert!(unhandled_reason(&rs, sql, &ctx).contains("not a plain expression"), "{sql}");
    }
    let rw = rewrite(&rs, "UPDATE users SET balance = GREATEST(balance - 5, 0), updated_at = NOW() WHERE id = 8", &ctx);
    assert!(rw.sql.contains("AND ((GREATEST(balance - 5, 0)) - frozen_balance >= 0)"), "{}", rw.sql);
    let rw = rewrite(&rs, "UPDATE users SET balance = IF(balance > 5, CAST(balance - 5 AS DECIMAL(18,2)), balance) WHERE id = 8", &ctx);
    assert!(rw.sql.contains("AND ((IF(balance > 5, CAST(balance - 5 AS DECIMAL(18,2)), balance)) - frozen_balance >= 0)"), "{}", rw.sql);
}

#[test]
fn out_of_scope_updates() {
    let rs = billing();
    let ctx = Ctx::new();
    for (sql, why) in [
        ("UPDATE users SET balance = 0 WHERE id IN (1, 2)", "without a top-level"),
        ("UPDATE users SET balance = 0", "without a top-level"),
        ("UPDATE users u, orders o SET u.balance = 0 WHERE u.id = 8", "multi-table"),
        ("UPDATE users SET balance = 0 WHERE id = 8 AND", "does not parse"),
        ("UPDATE users u JOIN orders o ON o.u = u.id SET u.balance = 0 WHERE u.id = 8", "multi-table"),
        ("UPDATE users SET id = 9, balance = 1 WHERE id = 8", "key column"),
        ("UPDATE users SET balance = 1, balance = 2 WHERE id = 8", "twice"),
        ("UPDATE users SET balance = ? WHERE id = 8", "parameters"),
    ] {
        let r = unhandled_reason(&rs, sql, &ctx);
        assert!(r.contains(why), "{sql}: {r}");
    }
    for sql in [
        "DELETE FROM users WHERE id = 8",
        "UPDATE orders SET total = (SELECT balance FROM users WHERE id = 8) WHERE id = 1",
        "UPDATE users SET balance = 'unterminated WHERE id = 8",
        "UPDATE orders SET a = 1 WHERE id = 8 AND",
        "SELECT 'users', 'update'",
    ] {
        assert_eq!(rs.plan(sql, &ctx.pc()), Plan::Forward, "{sql}");
    }
}

#[test]
fn reject_policy() {
    let rs = rules("tables:\n  - table: users\n    key: id\n    unhandled: reject\n    invariants: ['balance >= 0']\n");
    let ctx = Ctx::new();
    match rs.plan("UPDATE users SET balance = 0 WHERE id IN (1, 2)", &ctx.pc()) {
        Plan::Reject { table, error, .. } => {
            assert_eq!(table, "users");
            assert_eq!(error.code, 1644);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn pass_through_violation() {
    let rs = rules("tables:\n  - table: users\n    key: id\n    invariants: ['balance >= 0']\n    violation: { pass_through: true }\n");
    let ctx = Ctx::new();
    let rw = rewrite(&rs, "UPDATE users SET balance = balance - 1 WHERE id = 8", &ctx);
    assert_eq!(rw.violation.unwrap().response, ViolationResponse::PassThrough);
}

// ---- delta ----------------------------------------------------------------------

#[test]
fn delta_bigint_and_negative() {
    let rs = billing();
    let mut ctx = Ctx::new();
    ctx.capture_user(&rs, "8", Some("5000"), Some("616"));
    let rw = rewrite(&rs, "UPDATE users SET balance=4384, frozen_balance=0 WHERE id = 8", &ctx);
    assert_eq!(rw.action, Action::Delta);
    assert!(rw.sql.starts_with("UPDATE users SET balance=balance - 616, frozen_balance=frozen_balance - 616 WHERE"), "{}", rw.sql);
    assert!(rw.sql.ends_with("AND ((balance - 616) - (frozen_balance - 616) >= 0) AND ((frozen_balance - 616) >= 0)"), "{}", rw.sql);
    // Equal value: relative by zero.
    let rw = rewrite(&rs, "UPDATE users SET balance=5000 WHERE id = 8", &ctx);
    assert!(rw.sql.contains("balance=balance + 0 WHERE"), "{}", rw.sql);
    // Signed literal.
    let rw = rewrite(&rs, "UPDATE users SET balance = -1 WHERE id = 8", &ctx);
    assert!(rw.sql.contains("balance = balance - 5001 WHERE"), "{}", rw.sql);
}

#[test]
fn delta_decimal_quoted_string() {
    let rs = billing();
    let mut ctx = Ctx::new();
    ctx.capture_user(&rs, "8", Some("2000.00"), Some("616.50"));
    let rw = rewrite(&rs, "UPDATE users SET frozen_balance='1233.00' WHERE users.id = '8'", &ctx);
    assert!(rw.sql.contains("frozen_balance=frozen_balance + 616.50 WHERE"), "{}", rw.sql);
    assert_eq!(
        rw.on_success,
        vec![CaptureUpdate::Set {
            schema: String::new(),
            table: "users".into(),
            key: "8".into(),
            column: "frozen_balance".into(),
            value: Some("1233.00".into())
        }]
    );
    let rw = rewrite(&rs, "UPDATE users SET frozen_balance=0.5 WHERE id = 8", &ctx);
    assert!(rw.sql.contains("frozen_balance=frozen_balance - 616.00 WHERE"), "{}", rw.sql);
}

#[test]
fn delta_huge_decimal() {
    let rs = billing();
    let mut ctx = Ctx::new();
    let old = "12345678901234567890123456789012345.123456789012345678901234567890";
    ctx.capture_user(&rs, "8", Some(old), Some("0"));
    let rw =
        rewrite(&rs, "UPDATE users SET balance = 12345678901234567890123456789012346.000000000000000000000000000001 WHERE id = 8", &ctx);
    assert!(rw.sql.contains("balance = balance + 0.876543210987654321098765432111 WHERE"), "{}", rw.sql);
}

#[test]
fn delta_null_captured_is_cas() {
    let rs = billing();
    let mut ctx = Ctx::new();
    ctx.capture_user(&rs, "8", Some("100"), None);
    let rw = rewrite(&rs, "UPDATE users SET frozen_balance = 50 WHERE id = 8", &ctx);
    assert_eq!(rw.action, Action::Guard);
    assert!(rw.sql.starts_with("UPDATE users SET frozen_balance = 50 WHERE (id = 8) AND "), "{}", rw.sql);
    assert!(rw.sql.ends_with(" AND (frozen_balance IS NULL)"), "{}", rw.sql);
    assert_eq!(
        rw.on_success,
        vec![CaptureUpdate::Set {
            schema: String::new(),
            table: "users".into(),
            key: "8".into(),
            column: "frozen_balance".into(),
            value: Some("50".into())
        }]
    );
}

#[test]
fn delta_needs_the_same_key_and_a_capture() {
    let rs = billing();
    let mut ctx = Ctx::new();
    // No capture: written as is, guard only.
    let rw = rewrite(&rs, "UPDATE users SET frozen_balance=1232 WHERE id = 8", &ctx);
    assert_eq!(rw.action, Action::Guard);
    assert!(rw.sql.starts_with("UPDATE users SET frozen_balance=1232 WHERE"));
    ctx.capture_user(&rs, "8", Some("5000"), Some("616"));
    // Another key: no capture.
    assert_eq!(rewrite(&rs, "UPDATE users SET frozen_balance=1232 WHERE id = 9", &ctx).action, Action::Guard);
    // Same key, other spellings.
    for k in ["08", "8.0", "'8'"] {
        let rw = rewrite(&rs, &format!("UPDATE users SET frozen_balance=1232 WHERE id = {k}"), &ctx);
        assert_eq!(rw.action, Action::Delta, "{k}");
    }
}

#[test]
fn delta_expression_write_is_checked_or_forgotten() {
    let rs = billing();
    let mut ctx = Ctx::new();
    ctx.capture_user(&rs, "8", Some("5000"), Some("616"));
    // Relative by a literal: no CAS, the capture follows the step.
    let rw = rewrite(&rs, "UPDATE users SET frozen_balance = frozen_balance + 1 WHERE id = 8", &ctx);
    assert_eq!(rw.action, Action::Guard);
    assert!(!rw.sql.contains("616"), "{}", rw.sql);
    assert_eq!(
        rw.on_success,
        vec![CaptureUpdate::Set {
            schema: String::new(),
            table: "users".into(),
            key: "8".into(),
            column: "frozen_balance".into(),
            value: Some("617".into())
        }]
    );
    // Relative in a form the capture cannot follow, on a row in the window: unhandled (validated).
    let why = unhandled_reason(&rs, "UPDATE users SET frozen_balance = frozen_balance * 2 WHERE id = 8", &ctx);
    assert!(why.contains("cannot follow"), "{why}");
    // Absolute but not a literal: compare with what the app saw (a hex literal: no charset can break it).
    let rw = rewrite(&rs, "UPDATE users SET frozen_balance = 1200 + 32 WHERE id = 8", &ctx);
    assert!(rw.sql.ends_with("AND (frozen_balance = _utf8mb4 X'363136')"), "{}", rw.sql);
}

#[test]
fn cas_columns() {
    let rs = rules("tables:\n  - table: accounts\n    key: id\n    cas_columns: [status]\n");
    let mut ctx = Ctx::new();
    let spec = rewrite(&rs, "SELECT * FROM accounts WHERE id = 'a-1' FOR UPDATE", &ctx).capture.unwrap();
    ctx.captures.record_row(&spec, &["id", "status"], &[Some(b"a-1"), Some(b"it's")]);
    let rw = rewrite(&rs, "UPDATE accounts SET status = 'closed' WHERE id = 'a-1'", &ctx);
    assert_eq!(rw.sql, "UPDATE accounts SET status = 'closed' WHERE (id = 'a-1') AND (status = _utf8mb4 X'69742773')");
    assert_eq!(rw.violation.as_ref().unwrap().key_sql, "'a-1'");
    // The capture then holds the written text, numeric-looking or not.
    let rw = rewrite(&rs, "UPDATE accounts SET status = '007' WHERE id = 'a-1'", &ctx);
    ctx.captures.apply(&rw.on_success);
    assert_eq!(ctx.captures.value(&ctx.captures.id("", "accounts", "a-1"), "status"), Some(Some("007")));
    let rw = rewrite(&rs, "UPDATE accounts SET status = 'x' WHERE id = 'a-1'", &ctx);
    assert!(rw.sql.ends_with("AND (status = _utf8mb4 X'303037')"), "{}", rw.sql);
    ctx.no_backslash_escapes = true;
    ctx.captures.record_row(&spec, &["id", "status"], &[Some(b"a-1"), Some(b"a\\b")]);
    let rw = rewrite(&rs, "UPDATE accounts SET status = 'closed' WHERE id = 'a-1'", &ctx);
    assert!(rw.sql.ends_with("(status = _utf8mb4 X'615C62')"), "{}", rw.sql);
    ctx.no_backslash_escapes = false;
    let rw = rewrite(&rs, "UPDATE accounts SET status = 'closed' WHERE id = 'a-1'", &ctx);
    assert!(rw.sql.ends_with("(status = _utf8mb4 X'615C62')"), "{}", rw.sql);
}

// ---- modes and multi-statement ------------------------------------------------------

#[test]
fn ansi_quotes_and_no_backslash_escapes() {
    let rs = billing();
    let mut ctx = Ctx::new();
    ctx.ansi_quotes = true;
    let rw = rewrite(&rs, r#"UPDATE "users" SET "balance" = "balance" - 1 WHERE "id" = 8"#, &ctx);
    assert!(rw.sql.contains(r#"AND (("balance" - 1) - frozen_balance >= 0)"#), "{}", rw.sql);
    ctx.ansi_quotes = false;
    ctx.no_backslash_escapes = true;
    // The string ends at the backslash: the WHERE is real.
    let rw = rewrite(&rs, r"UPDATE users SET note = 'c:\', balance = balance - 1 WHERE id = 8", &ctx);
    assert!(rw.sql.contains(r"note = 'c:\', balance"), "{}", rw.sql);
    assert!(rw.sql.contains("WHERE (id = 8) AND"), "{}", rw.sql);
}

#[test]
fn multi_statement_never_half() {
    let rs = billing();
    let ctx = Ctx::new();
    let r = unhandled_reason(&rs, "SELECT 1; UPDATE users SET balance = balance - 1 WHERE id = 8", &ctx);
    assert!(r.contains("multi-statement"), "{r}");
    assert_eq!(rs.plan("SELECT 1; UPDATE orders SET a = 1 WHERE id = 8", &ctx.pc()), Plan::Forward);
    // One statement and a trailing semicolon is one statement.
    assert_eq!(rewrite(&rs, "UPDATE users SET balance = balance - 1 WHERE id = 8;", &ctx).action, Action::Guard);
}

#[test]
fn executable_comments_are_unhandled() {
    let rs = billing();
    let ctx = Ctx::new();
    let r = unhandled_reason(&rs, "UPDATE users SET balance = 1 WHERE id = 8 /*!50000 OR 1 */", &ctx);
    assert!(r.contains("executable comment"), "{r}");
}

#[test]
fn statement_patterns_narrow() {
    let rs = rules(
        "tables:\n  - table: users\n    key: id\n    invariants: ['balance >= 0']\n    statements:\n      - SELECT ... FROM users WHERE users.id = ? FOR UPDATE\n      - UPDATE users SET balance = ? WHERE users.id = ?\n",
    );
    let ctx = Ctx::new();
    assert_eq!(rewrite(&rs, "SELECT users.id, users.balance FROM users WHERE users.id = 8 FOR UPDATE", &ctx).action, Action::Unlock);
    assert_eq!(rewrite(&rs, "update users set balance = 5 where users.id = 8", &ctx).action, Action::Guard);
    assert!(unhandled_reason(&rs, "SELECT * FROM users WHERE id = 8 FOR UPDATE", &ctx).contains("patterns"));
    assert!(unhandled_reason(&rs, "UPDATE users SET balance = balance - 1 WHERE users.id = 8", &ctx).contains("patterns"));
}

// ---- accessors, explain -------------------------------------------------------------

#[test]
fn shipped_rules_and_accessors() {
    let rs = billing();
    let t: Vec<&TableRule> = rs.tables().collect();
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].table, "users");
    assert_eq!(t[0].key, "id");
    assert_eq!(
        t[0].invariants.iter().map(|i| i.text.as_str()).collect::<Vec<_>>(),
        ["balance - frozen_balance >= 0", "frozen_balance >= 0"]
    );
    assert_eq!(t[0].columns_referenced(), ["id", "balance", "frozen_balance", "username", "updated_at"]);
    assert_eq!(t[1].table, "conversations");
    assert!(t[1].unlock && t[1].invariants.len() == 2 && t[1].balance_columns == ["message_count", "total_tokens"]);
    assert!(rs.table("compute_freeze_logs").is_none());
    assert_eq!(
        rs.sample_guarded_update("users").unwrap(),
        "UPDATE users SET balance = balance, frozen_balance = frozen_balance, username = username, updated_at = updated_at WHERE (`id` = 0) AND ((balance) - (frozen_balance) >= 0) AND ((frozen_balance) >= 0)"
    );
    assert_eq!(
        rs.sample_guarded_update("conversations").unwrap(),
        "UPDATE conversations SET message_count = message_count, total_tokens = total_tokens WHERE (`id` = 0) AND ((message_count) >= 0) AND ((total_tokens) >= 0)"
    );
    assert!(check(&rs).is_empty(), "{:?}", check(&rs));
}

#[test]
fn explain_shows_a_diff() {
    let rs = billing();
    let mut ctx = Ctx::new();
    ctx.capture_user(&rs, "8", Some("5000"), Some("616"));
    let out = explain(&rs, "UPDATE users\nSET frozen_balance=1232\nWHERE users.id = 8", &ctx.pc());
    assert!(out.starts_with("rule users-balance (table users): delta\n--- original\n+++ rewritten\n UPDATE users\n-SET frozen_balance=1232\n-WHERE users.id = 8\n+SET frozen_balance=frozen_balance + 616\n+WHERE (users.id = 8) AND"), "{out}");
    assert!(out.contains("existence check: SELECT 1 FROM users WHERE users.id = 8 LOCK IN SHARE MODE"), "{out}");
    let out = explain(&rs, "SELECT * FROM users WHERE email = 'x' FOR UPDATE", &ctx.pc());
    assert!(out.starts_with("forward unchanged and log (table users): locking read without"), "{out}");
    assert!(explain(&rs, "SELECT 1", &ctx.pc()).starts_with("forward unchanged: it names no governed table"));
}

// ---- properties -------------------------------------------------------------------

fn parses(sql: &str) -> bool {
    sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::MySqlDialect {}, sql).is_ok()
}

prop_compose! {
    fn literal()(n in -1_000_000i64..1_000_000, frac in proptest::option::of(0u32..100), quoted in any::<bool>()) -> String {
        let s = match frac { Some(f) => format!("{n}.{f:02}"), None => n.to_string() };
        if quoted { format!("'{s}'") } else { s }
    }
}

prop_compose! {
    fn spacing()(s in prop::sample::select(vec![" ", "  ", "\n", " /* c */ ", "\t", " -- x\n"])) -> &'static str { s }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Every rewrite parses, and bytes outside the edited places survive.
    #[test]
    fn rewritten_updates_parse(
        v1 in literal(), v2 in literal(), key in 1u64..1000, s1 in spacing(), s2 in spacing(), s3 in spacing(),
        captured in proptest::option::of(literal()), qualify in any::<bool>(), lock_tail in any::<bool>(),
    ) {
        let rs = billing();
        let mut ctx = Ctx::new();
        if let Some(c) = &captured {
            ctx.capture_user(&rs, &key.to_string(), Some(c.trim_matches('\'')), Some("0"));
        }
        let q = if qualify { "users." } else { "" };
        let sql = format!("UPDATE{s1}users{s2}SET {q}balance = {v1}, updated_at = 'x', frozen_balance = frozen_balance + {v2}{s3}WHERE {q}id = {key}{}", if lock_tail { " -- t\n" } else { "" });
        let rw = rewrite(&rs, &sql, &ctx);
        prop_assert!(parses(&rw.sql), "{}", rw.sql);
        // Unchanged prefix up to the first value and the unchanged last-writer-wins column.
        let prefix = format!("UPDATE{s1}users{s2}SET {q}balance = ");
        prop_assert!(rw.sql.starts_with(&prefix), "{}", rw.sql);
        prop_assert!(rw.sql.contains(", updated_at = 'x', frozen_balance = frozen_balance + "), "{}", rw.sql);
        if lock_tail { prop_assert!(rw.sql.ends_with(" -- t\n"), "{}", rw.sql); }
        // sqlparser cannot parse LOCK IN SHARE MODE; FOR SHARE is the same here.
        let exists = rw.violation.unwrap().exists_sql;
        let exists = exists.strip_suffix(" LOCK IN SHARE MODE").expect("lock clause");
        prop_assert!(parses(&format!("{exists} FOR SHARE")), "{}", exists);
    }

    #[test]
    fn rewritten_reads_parse(key in 1u64..1000, s1 in spacing(), clause in prop::sample::select(vec![
        "FOR UPDATE", "FOR SHARE", "LOCK IN SHARE MODE", "FOR UPDATE WAIT 2",
    ]), tail in prop::sample::select(vec!["", ";", " ; ", " -- done\n", " /* x */"])) {
        let rs = billing();
        let ctx = Ctx::new();
        let sql = format!("SELECT users.id,{s1}users.balance FROM users{s1}WHERE users.id = {key}{s1}{clause}{tail}");
        let rw = rewrite(&rs, &sql, &ctx);
        prop_assert!(parses(&rw.sql), "{}", rw.sql);
        let up = rw.sql.to_ascii_uppercase();
        prop_assert!(!up.contains("FOR UPDATE") && !up.contains("SHARE"), "{}", rw.sql);
        prop_assert!(rw.sql.ends_with(tail), "{}", rw.sql);
    }
}

#[test]
fn absolute_write_of_an_uncaptured_balance_column_after_unlock_is_unhandled() {
    let rs = billing();
    let mut c = Ctx::new();
    // The read returned frozen_balance only; balance was never seen.
    let spec = rewrite(&rs, "SELECT id, frozen_balance FROM users WHERE id = 8 FOR UPDATE", &c).capture.expect("capture spec");
    c.captures.record_row(&spec, &["id", "frozen_balance"], &[Some(b"8"), Some(b"616")]);
    let why = unhandled_reason(&rs, "UPDATE users SET balance = 500 WHERE id = 8", &c);
    assert!(why.contains("absolute write of balance"), "{why}");
    // Relative writes stay safe without a capture.
    let rw = rewrite(&rs, "UPDATE users SET balance = balance - 5 WHERE id = 8", &c);
    assert!(rw.sql.contains("balance = balance - 5"), "{}", rw.sql);
}

#[test]
fn upserts_into_a_governed_table_are_unhandled() {
    let rs = billing();
    let c = Ctx::new();
    let why = unhandled_reason(&rs, "INSERT INTO users (id, balance) VALUES (8, 5) ON DUPLICATE KEY UPDATE balance = 5", &c);
    assert!(why.contains("ON DUPLICATE KEY UPDATE"), "{why}");
    unhandled_reason(&rs, "REPLACE INTO users (id, balance) VALUES (8, 5)", &c);
    // An upsert into another table that only reads a governed one is not ours.
    let other = "INSERT INTO compute_freeze_logs (user_id) SELECT id FROM users WHERE id = 8 ON DUPLICATE KEY UPDATE amount = 1";
    assert_eq!(rs.plan(other, &c.pc()), Plan::Forward);
    assert_eq!(rs.plan("INSERT INTO users (id) VALUES (9)", &c.pc()), Plan::Forward);
}

/// Reasons reach the logs: they must never carry a literal of the statement.
#[test]
fn reasons_carry_no_literals() {
    let rs = billing();
    let mut c = Ctx::new();
    c.capture_user(&rs, "8", Some("5000"), Some("616"));
    let secret = "4111111111111111";
    for sql in [
        format!("UPDATE users SET balance = (SELECT 1 FROM cards WHERE pan = '{secret}') WHERE id = 8"),
        format!("UPDATE users SET balance = balance - 1 WHERE id IN (8) AND username = '{secret}'"),
        format!("UPDATE users SET frozen_balance = IF(username LIKE '%{secret}%', 1, 2) WHERE id = 8"),
        format!("SELECT * FROM users WHERE username = '{secret}' FOR UPDATE"),
        format!("SELECT * FROM users WHERE id = 8 AND username IN (SELECT '{secret}') FOR UPDATE"),
        format!("UPDATE users SET balance = 1, username = '{secret}' WHERE id = 8 OR id = 9"),
    ] {
        if let Plan::Unhandled { reason, fingerprint, .. } = rs.plan(&sql, &c.pc()) {
            assert!(!reason.contains(secret) && !fingerprint.contains(secret), "{sql}: {reason} / {fingerprint}");
        }
    }
}

#[test]
fn xor_is_never_read_as_a_key_conjunct() {
    // The server reads `id = 1 AND 0 XOR id = 3` as `(id = 1 AND 0) XOR id = 3`.
    let rs = billing();
    let ctx = Ctx::new();
    for sql in [
        "UPDATE users SET frozen_balance = 150 WHERE id = 1 AND 0 XOR id = 3",
        "SELECT * FROM users WHERE id = 1 AND 0 XOR id = 3 FOR UPDATE",
        "update users set frozen_balance = 150 where id = 1 and 0 xor id = 3",
    ] {
        assert!(unhandled_reason(&rs, sql, &ctx).contains("XOR"), "{sql}");
    }
}
