//! `thaw explain --file`: a transaction (or a general-log excerpt of
//! several connections) run offline through the session's decisions,
//! statement by statement: the plan, the rewritten text, the protection
//! window's gate, what the session does, and the captures it then holds.
//!
//! Nothing here decides anything itself: the planner, the window gate, the
//! capture sink and the transaction state are the session's own
//! (`conn.rs` calls them in the order `Session::query` does). See
//! `docs/explain.md` for the file format and what explain assumes.
mod conn;
mod input;
mod report;
mod rows;

pub use input::{Format, InputError};
pub use report::Report;

use crate::rules::{Captures, RuleSet};
use conn::Conn;
use input::Command;
use report::{After, Decision, SessionOut, Step};
use std::collections::BTreeMap;

/// How connections start when the file does not show their start.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Autocommit on (the server's default); off (the default here) is a
    /// driver such as aiomysql's, and makes a bare list of statements one
    /// transaction.
    pub autocommit: bool,
    /// The current database (a log's `Connect` or `Init DB` changes it).
    pub schema: Option<String>,
    /// Every rule in shadow mode, as `thaw run --shadow` (a rule's own
    /// `mode: shadow` applies without it).
    pub shadow: bool,
    /// What such a connection read before the file starts
    /// (`thaw explain --captured`): rows in the protection window.
    pub captures: Captures,
}

/// Explain every entry of `text` (plain SQL or a general log).
pub fn explain(rules: &RuleSet, text: &str, opts: &Options) -> Result<Report, InputError> {
    let (format, entries) = input::parse(text)?;
    // Held-back writes need MariaDB's compound statements.
    let server = conn::Server { mariadb: !input::mysql_server(text), shadow_all: opts.shadow };
    let mut conns: BTreeMap<Option<u64>, Conn> = BTreeMap::new();
    let mut order: Vec<u64> = Vec::new();
    let mut steps = Vec::new();
    for (i, e) in entries.into_iter().enumerate() {
        if let Some(id) = e.connection
            && !order.contains(&id)
        {
            order.push(id);
        }
        let (command, sql) = match &e.command {
            Command::Query(s) => ("query".to_string(), Some(s.clone())),
            Command::Execute(s) => ("execute".to_string(), Some(s.clone())),
            Command::Connect { .. } => ("connect".to_string(), None),
            Command::InitDb(_) => ("init_db".to_string(), None),
            Command::Quit => ("quit".to_string(), None),
            Command::Other(c) => (c.to_ascii_lowercase().replace(' ', "_"), None),
        };
        let mut step = Step {
            index: i + 1,
            line: e.line,
            connection: e.connection,
            command,
            sql,
            in_transaction: false,
            plan: None,
            window_before: false,
            gate: None,
            session: SessionOut::new(Decision::None),
            counts: Vec::new(),
            rows: None,
            events: Vec::new(),
            after: After { transaction: "idle", autocommit: opts.autocommit, window: false, captures: Vec::new(), held_back: Vec::new() },
        };
        if let Command::Connect { schema } = &e.command {
            // A new session starts as the server starts one: autocommit on.
            conns.insert(e.connection, Conn::new(server, true, schema.clone(), Captures::default()));
        }
        let conn =
            conns.entry(e.connection).or_insert_with(|| Conn::new(server, opts.autocommit, opts.schema.clone(), opts.captures.clone()));
        match &e.command {
            Command::Query(sql) => conn.query(rules, sql, false, e.rows.as_deref(), &mut step),
            Command::Execute(sql) => conn.query(rules, sql, true, e.rows.as_deref(), &mut step),
            Command::InitDb(db) => conn.schema = Some(db.clone()),
            Command::Quit => {
                step.events.push("the connection closes: the server rolls back what is open".into());
                conn.quit();
            }
            Command::Connect { .. } => {}
            Command::Other(_) => step.events.push("not a statement: forwarded, nothing to explain".into()),
        }
        step.after = conn.after();
        steps.push(step);
    }
    Ok(Report { format, connections: order, statements: steps })
}

#[cfg(test)]
mod tests {
    use super::*;
    use report::PlanOut;

    const RULES: &str = "tables:\n  - table: users\n    key: id\n    invariants: ['balance >= 0']\n    balance_columns: [balance]\n    trigger_tables: [ledger]\n  - table: strict\n    key: id\n    unhandled: reject\n";

    fn run(text: &str) -> Report {
        let rules = RuleSet::from_yaml(RULES, "t.yaml").unwrap();
        explain(&rules, text, &Options { schema: Some("db".into()), ..Options::default() }).unwrap()
    }

    const READ: &str = "SELECT id, balance FROM users WHERE id = 8 FOR UPDATE;\n-- rows: [{\"id\": 8, \"balance\": 100}]\n";

    fn action(s: &Step) -> &str {
        match &s.plan {
            Some(PlanOut::Rewrite { action, .. }) => action,
            Some(PlanOut::Unhandled { .. }) => "unhandled",
            Some(PlanOut::Reject { .. }) => "reject",
            Some(PlanOut::Forward { .. }) => "forward",
            Some(PlanOut::NotPlanned { .. }) => "not planned",
            None => "none",
        }
    }

    #[test]
    fn a_changed_row_shown_to_the_app_aborts_the_transaction() {
        let r = run(&format!(
            "{READ}SELECT id, balance FROM users WHERE id = 8;\n-- rows: [{{\"id\": 8, \"balance\": 90}}]\nUPDATE users SET balance = 50 WHERE id = 8;\nCOMMIT;\nROLLBACK;\nSELECT 1;"
        ));
        let s = &r.statements;
        assert_eq!(s[1].session.decision, Decision::Send, "the read that shows the change runs");
        assert_eq!(s[2].session.decision, Decision::Refuse);
        assert_eq!(s[2].session.error.as_ref().map(|e| e.code), Some(1213));
        assert_eq!(s[2].after.transaction, "aborted");
        assert_eq!(s[3].session.decision, Decision::AnswerAborted, "COMMIT gets the error once more");
        assert_eq!(s[3].after.transaction, "idle");
        assert_eq!(s[4].session.decision, Decision::Send);
        assert_eq!(s[5].session.decision, Decision::Send);
    }

    #[test]
    fn an_unlocked_read_of_no_row_is_sent_again_as_written() {
        let r = run("SELECT id, balance FROM users WHERE id = 8 FOR UPDATE;\n-- rows: []\n");
        let s = &r.statements[0];
        assert_eq!(action(s), "unlock");
        assert_eq!(s.session.sends_rewritten, None, "the app's locking read is what ran last");
        assert!(s.events.iter().any(|e| e.contains("found no row")), "{:?}", s.events);
        assert!(s.after.captures.is_empty());
    }

    #[test]
    fn an_unproven_statement_validates_the_window_first() {
        let r = run(&format!("{READ}SELECT COUNT(*) FROM charges;\nUPDATE users SET balance = 50 WHERE id = 8;"));
        let s = &r.statements;
        assert!(s[1].window_before);
        assert_eq!(s[1].session.decision, Decision::ValidateThenSend);
        assert_eq!(s[1].session.validates, ["users 8"]);
        assert!(s[1].gate.as_deref().unwrap().contains("outside the protection window"));
        assert!(!s[1].after.window && s[1].after.captures[0].protected);
        assert_eq!(action(&s[2]), "delta");
        assert!(!s[2].window_before, "the row is protected now");
    }

    #[test]
    fn a_write_through_a_trigger_table_forgets_and_the_next_write_is_validated_then_planned_again() {
        let r = run(&format!("{READ}INSERT INTO ledger (uid) VALUES (8);\nUPDATE users SET balance = 50 WHERE id = 8;"));
        let s = &r.statements;
        assert_eq!(s[1].session.decision, Decision::ValidateThenSend);
        assert!(s[1].after.captures[0].uncertain, "the trigger may have changed the row");
        assert_eq!(action(&s[2]), "unhandled");
        assert_eq!(s[2].session.decision, Decision::ValidateThenSend);
        assert!(s[2].events.iter().any(|e| e == "planned again after the validation: delta"), "{:?}", s[2].events);
        assert!(s[2].session.sends_rewritten.is_some());
    }

    #[test]
    fn reject_refuses_without_touching_the_transaction() {
        let r = run(&format!("{READ}SELECT * FROM strict WHERE name = 'x' FOR UPDATE;"));
        let s = &r.statements[1];
        assert_eq!(action(s), "reject");
        assert_eq!(s.session.decision, Decision::Refuse);
        assert!(s.after.window && s.after.transaction == "open");
    }

    #[test]
    fn prepared_statements_are_planned_with_their_values() {
        let log = "\t\t  5 Query\tSET AUTOCOMMIT = 0\n\t\t  5 Execute\tSELECT id, balance FROM users WHERE id = 8 FOR UPDATE\n-- rows: [{\"id\": 8, \"balance\": 100}]\n\t\t  5 Execute\tUPDATE users SET balance = 50 WHERE id = 8\n\t\t  5 Quit\t\n";
        let r = run(log);
        assert_eq!(r.format, Format::GeneralLog);
        let s = &r.statements;
        assert_eq!(
            (action(&s[1]), s[1].events.first().map(String::as_str)),
            ("unlock", Some("prepared: the read runs as thaw's lock-cut shadow statement"))
        );
        assert_eq!(s[1].after.captures.len(), 1);
        assert_eq!(action(&s[2]), "delta");
        assert!(s[2].events.iter().any(|e| e.contains("sent as a text statement")));
        assert!(s[3].after.captures.is_empty());
    }

    const DEFERRED: &str = "tables:\n  - table: users\n    key: id\n    invariants: ['balance >= 0']\n    balance_columns: [balance]\n    defer_writes: true\n";

    fn run_deferred(text: &str) -> Report {
        let rules = RuleSet::from_yaml(DEFERRED, "t.yaml").unwrap();
        explain(&rules, text, &Options { schema: Some("db".into()), ..Options::default() }).unwrap()
    }

    #[test]
    fn held_back_writes_go_with_commit_or_before_what_may_see_them() {
        let write = "UPDATE users SET balance = 50 WHERE id = 8;\n";
        let r = run_deferred(&format!("{READ}{write}INSERT INTO logs (a) VALUES (1);\nSELECT balance FROM users WHERE id = 8;\nCOMMIT;"));
        let s = &r.statements;
        assert_eq!(s[1].session.decision, Decision::HoldBack);
        assert_eq!(s[1].after.held_back.len(), 1);
        assert_eq!(s[1].after.captures[0].values["balance"].as_deref(), Some("50"), "the app's belief, at once");
        assert!(s[2].events.is_empty() && s[2].after.held_back.len() == 1, "a new row elsewhere cannot see it");
        assert_eq!(s[3].events, ["sends the 1 held-back write(s) first (read)"]);
        assert!(s[3].after.held_back.is_empty());
        let r = run_deferred(&format!("{READ}{write}COMMIT;"));
        let commit = &r.statements[2];
        assert!(commit.session.why.as_deref().unwrap().contains("one compound statement"), "{:?}", commit.session);
        assert_eq!(commit.after.transaction, "idle");
        let r = run_deferred(&format!("{READ}{write}SELECT ROW_COUNT();\nCOMMIT RELEASE;"));
        assert_eq!(r.statements[2].events, ["sends the 1 held-back write(s) first (session_state)"], "right after the held write");
        let r = run_deferred(&format!("{READ}{write}SELECT 1;\nSELECT ROW_COUNT();\n"));
        assert!(r.statements[3].events.is_empty(), "after a later statement ROW_COUNT() reads that one's");
        let r = run_deferred(&format!("{READ}{write}COMMIT RELEASE;"));
        assert_eq!(r.statements[2].events[0], "sends the 1 held-back write(s) first (commit)", "then it goes as sent");
        let r = run_deferred(&format!("{READ}{write}ROLLBACK;"));
        assert_eq!(r.statements[2].events, ["the 1 held-back write(s) are dropped: the server never saw them"]);
        let mysql = format!(
            "2024-10-01T10:00:01.000000Z\t  5 Query\tSET AUTOCOMMIT = 0\n2024-10-01T10:00:01.000000Z\t  5 Query\t{}\n-- rows: [{{\"id\": 8, \"balance\": 100}}]\n2024-10-01T10:00:01.000000Z\t  5 Query\t{write}",
            READ.lines().next().unwrap().trim_end_matches(';')
        );
        let r = run_deferred(&mysql);
        assert_eq!(r.statements[2].session.decision, Decision::Send, "MySQL has no compound statement to commit them with");
    }

    #[test]
    fn shadow_mode_sends_as_written_and_follows_what_enforce_would_do() {
        let rules = RuleSet::from_yaml(RULES, "t.yaml").unwrap();
        let text = format!("{READ}SELECT COUNT(*) FROM charges;\nUPDATE users SET balance = 50 WHERE id = 8;");
        let r = explain(&rules, &text, &Options { shadow: true, schema: Some("db".into()), ..Options::default() }).unwrap();
        let s = &r.statements;
        assert_eq!(s[0].session.decision, Decision::Shadow);
        assert_eq!(s[0].session.why.as_deref(), Some("enforce mode would: unlock"));
        assert_eq!(s[0].session.sends_rewritten, None, "the app's own statement");
        assert_eq!(s[0].counts, [r#"thaw_shadow_actions_total{rule="users",action="unlock"}"#]);
        assert!(s[0].after.window, "the read enforce would unlock is followed as unlocked");
        assert_eq!(s[1].session.decision, Decision::Shadow, "not validated: the app holds its own locks");
        assert_eq!(s[1].session.why.as_deref(), Some("enforce mode would: validate"));
        assert_eq!(s[2].session.why.as_deref(), Some("enforce mode would: delta"));
        assert_eq!(s[2].after.captures[0].values["balance"].as_deref(), Some("50"));
        // The same file enforced: the counters the shadow run predicted.
        let r = run(&text);
        assert_eq!(r.statements[0].counts, [r#"thaw_statements_rewritten_total{rule="users",action="unlock"}"#]);
        assert_eq!(r.statements[1].session.decision, Decision::ValidateThenSend);
    }

    #[test]
    fn autocommit_unlocks_without_capturing_and_connections_are_separate() {
        let rules = RuleSet::from_yaml(RULES, "t.yaml").unwrap();
        let text =
            format!("-- connection 1\n{READ}-- connection 2\nSELECT 1;\n-- connection 1\nUPDATE users SET balance = 50 WHERE id = 8;");
        let r = explain(&rules, &text, &Options { autocommit: true, ..Options::default() }).unwrap();
        assert_eq!(r.connections, [1, 2]);
        let s = &r.statements;
        assert!(!s[0].in_transaction);
        assert_eq!(action(&s[0]), "unlock");
        assert!(s[0].after.captures.is_empty(), "a statement of its own: nothing to keep");
        assert_eq!(action(&s[2]), "guard", "nothing captured: guarded, not relative");
        let r = run(&format!("-- connection 1\n{READ}-- connection 2\nUPDATE users SET balance = 50 WHERE id = 8;"));
        assert_eq!(action(&r.statements[1]), "guard", "another connection's captures are not this one's");
    }
}
