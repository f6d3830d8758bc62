//! Server settings that change what thaw does, each with what it means.
//! These are the GLOBAL values, which new sessions (the app's, through
//! thaw) start with; an app that sets its own session values overrides
//! them.
use super::{CheckError, Present};
use crate::rules::RuleSet;
use mysql_async::prelude::Queryable;

pub(super) struct Settings {
    version: String,
    /// (lowercase name, value)
    vars: Vec<(String, String)>,
}

impl Settings {
    fn get(&self, name: &str) -> Option<&str> {
        self.vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn mariadb(&self) -> bool {
        self.version.to_ascii_lowercase().contains("mariadb")
    }

    fn sql_mode_has(&self, mode: &str) -> bool {
        self.get("sql_mode").is_some_and(|m| m.split(',').any(|x| x.trim().eq_ignore_ascii_case(mode)))
    }
}

pub(super) async fn load(conn: &mut mysql_async::Conn) -> Result<Settings, CheckError> {
    let version: Option<String> = conn.query_first("SELECT VERSION()").await?;
    // tx_isolation on MariaDB and MySQL 5.7, transaction_isolation on MySQL 8 and MariaDB 11.
    let vars: Vec<(String, String)> = conn
        .query(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN \
             ('innodb_rollback_on_timeout', 'lower_case_table_names', 'sql_mode', 'tx_isolation', 'transaction_isolation')",
        )
        .await?;
    Ok(Settings { version: version.unwrap_or_default(), vars: vars.into_iter().map(|(n, v)| (n.to_ascii_lowercase(), v)).collect() })
}

pub(super) fn check(s: &Settings, present: &[Present<'_>], rules: &RuleSet, warnings: &mut Vec<String>) {
    let mut notes: Vec<String> = Vec::new();
    let mut say = |m: String| notes.push(format!("server: {m}"));
    match s.get("innodb_rollback_on_timeout").map(|v| v.eq_ignore_ascii_case("ON") || v == "1") {
        Some(false) => say(
            "innodb_rollback_on_timeout=OFF: a 1205 lock wait timeout rolls back only the statement; thaw re-sends it (statement retry) \
             and the transaction keeps what it did and read"
                .into(),
        ),
        Some(true) => say(
            "innodb_rollback_on_timeout=ON: a 1205 lock wait timeout rolls back the whole transaction; thaw replays it as after a deadlock \
             when it is replayable (docs/retries.md), else the app gets the 1205"
                .into(),
        ),
        None => {}
    }
    match s.get("lower_case_table_names") {
        Some("0") => say(
            "lower_case_table_names=0: table names are case-sensitive on the server, but rules match them case-insensitively: a rule for \
             users also governs a table Users"
                .into(),
        ),
        Some(v @ ("1" | "2")) => say(format!(
            "lower_case_table_names={v}: the server compares table names case-insensitively, as rules do: a rule for users governs Users"
        )),
        _ => {}
    }
    if s.sql_mode_has("PIPES_AS_CONCAT") {
        say("sql_mode PIPES_AS_CONCAT: `||` is string concatenation, not OR. Invariants cannot use `||`, and thaw keeps the app's WHERE \
             in parentheses inside a guard, so guards mean what the server reads"
            .into());
    }
    if s.sql_mode_has("HIGH_NOT_PRECEDENCE") {
        let risky: Vec<String> = rules
            .tables()
            .flat_map(|t| t.invariants.iter().map(move |i| (t, i)))
            .filter(|(_, i)| bare_not(&i.text))
            .map(|(t, i)| format!("`{}` ({})", i.text, t.source))
            .collect();
        let which = if risky.is_empty() {
            "no invariant uses NOT without parentheses".to_string()
        } else {
            format!("rewrite these invariants as NOT (...): {}", risky.join(", "))
        };
        say(format!(
            "sql_mode HIGH_NOT_PRECEDENCE: the server reads `NOT a = b` as `(NOT a) = b`; thaw writes invariants into guards with \
             the default precedence (NOT below comparisons), so an invariant with NOT before an unparenthesised comparison checks \
             something else; {which}"
        ));
    }
    if s.sql_mode_has("ANSI_QUOTES") {
        if s.mariadb() {
            say("sql_mode ANSI_QUOTES: \"x\" is a name, not a string; MariaDB reports the mode in every result's status flags and \
                 thaw reads statements accordingly. In invariants \"x\" stays a string literal"
                .into());
        } else {
            say("sql_mode ANSI_QUOTES: \"x\" is a name, not a string, and MySQL does not report this mode to the client: thaw reads \
                 \"x\" in statements as a string, so statements on governed tables must not double-quote names"
                .into());
        }
    }
    if s.sql_mode_has("NO_BACKSLASH_ESCAPES") {
        say("sql_mode NO_BACKSLASH_ESCAPES: a backslash in a string is an ordinary character; thaw follows the status flag the server \
             sends with every result to find where strings end, and invariants cannot contain backslashes"
            .into());
    }
    if s.sql_mode_has("SIMULTANEOUS_ASSIGNMENT") {
        say("sql_mode SIMULTANEOUS_ASSIGNMENT: in `SET a = ..., b = a` the server gives b the old value of a; thaw reads sql_mode when \
             it opens a backend session and writes guards the same way; after the app changes sql_mode, an UPDATE whose SET reads a \
             column assigned before it in the same SET is left unrewritten"
            .into());
    }
    if s.sql_mode_has("NO_UNSIGNED_SUBTRACTION") {
        say("sql_mode NO_UNSIGNED_SUBTRACTION: subtraction on UNSIGNED columns gives a signed result, so a guard that would go below \
             zero matches no row and the rule's violation response applies"
            .into());
    } else if s.get("sql_mode").is_some() {
        for p in present.iter().filter(|p| !p.unsigned.is_empty()) {
            warnings.push(format!(
                "{}: table {}: column(s) {} are UNSIGNED and sql_mode lacks NO_UNSIGNED_SUBTRACTION: a guard or delta whose subtraction \
                 would go below zero fails with error 1690 (BIGINT UNSIGNED value is out of range) instead of matching no row, so the app \
                 gets 1690 rather than the rule's violation response; nothing is written either way",
                p.rule.source,
                p.rule.table,
                p.unsigned.join(", ")
            ));
        }
    }
    let iso = s.get("transaction_isolation").or_else(|| s.get("tx_isolation")).map(|v| v.to_ascii_uppercase().replace(' ', "-"));
    match iso.as_deref() {
        Some("REPEATABLE-READ") => {
            say("transaction isolation REPEATABLE READ: an unlocked read is a snapshot read, so it may return (and thaw capture) a value \
             older than the latest committed one; deltas still apply to the latest row, an invariant that no longer holds gives the \
             rule's violation response, and a compare-and-set column that changed meanwhile gives a 1213 rollback"
                .into())
        }
        Some("READ-COMMITTED") => {
            say("transaction isolation READ COMMITTED: every unlocked read sees the latest committed row, so captures are current and a \
             CAS check fails only on a change committed after the read"
                .into())
        }
        Some("SERIALIZABLE") => say(
            "transaction isolation SERIALIZABLE: InnoDB turns a plain SELECT inside a transaction into LOCK IN SHARE MODE, so removing \
             FOR UPDATE leaves a shared lock: two sessions that read the same row and then write it deadlock (1213) instead of waiting; \
             thaw replays the loser, but the contention stays"
                .into(),
        ),
        Some("READ-UNCOMMITTED") => say(
            "transaction isolation READ UNCOMMITTED: unlocked reads see other transactions' uncommitted writes, so the app may decide on \
             a value that is later rolled back; guards still check the invariants on the row as the UPDATE finds it"
                .into(),
        ),
        Some(other) => say(format!("transaction isolation {other}: not one thaw knows")),
        None => {}
    }
    warnings.extend(notes);
}

/// `NOT` directly before something other than `(`: with HIGH_NOT_PRECEDENCE
/// it binds tighter than the comparison that follows.
fn bare_not(invariant: &str) -> bool {
    let up = invariant.to_ascii_uppercase();
    let b = up.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c == b'`';
    let mut from = 0;
    while let Some(i) = up[from..].find("NOT").map(|i| i + from) {
        from = i + 3;
        if (i > 0 && word(b[i - 1])) || b.get(i + 3).is_some_and(|c| word(*c)) {
            continue;
        }
        // IS NOT NULL is fine.
        if up[..i].trim_end().ends_with(" IS") || up[..i].trim_end() == "IS" {
            continue;
        }
        if !up[i + 3..].trim_start().starts_with('(') {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(vars: &[(&str, &str)], version: &str, yaml: &str, unsigned: &[&str]) -> Vec<String> {
        let rules = RuleSet::from_yaml(yaml, "r.yaml").unwrap();
        let present: Vec<Present<'_>> =
            rules.tables().map(|t| Present { rule: t, unsigned: unsigned.iter().map(|c| c.to_string()).collect() }).collect();
        let s = Settings { version: version.into(), vars: vars.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect() };
        let mut out = Vec::new();
        check(&s, &present, &rules, &mut out);
        out
    }

    const RULES: &str = "tables:\n  - table: users\n    key: id\n    invariants: ['NOT balance < 0', 'balance - held >= 0']\n    balance_columns: [balance, held]\n";

    fn has(out: &[String], needle: &str) -> bool {
        out.iter().any(|l| l.contains(needle))
    }

    #[test]
    fn defaults() {
        let vars = [
            ("innodb_rollback_on_timeout", "OFF"),
            ("lower_case_table_names", "0"),
            ("sql_mode", "STRICT_TRANS_TABLES"),
            ("tx_isolation", "REPEATABLE-READ"),
        ];
        let out = report(&vars, "10.11.6-MariaDB", RULES, &[]);
        assert_eq!(out.len(), 3, "{out:#?}");
        assert!(
            out[0].starts_with("server: innodb_rollback_on_timeout=OFF: a 1205 lock wait timeout rolls back only the statement"),
            "{out:#?}"
        );
        assert!(out[1].starts_with("server: lower_case_table_names=0: "), "{out:#?}");
        assert!(out[2].starts_with("server: transaction isolation REPEATABLE READ: an unlocked read is a snapshot read"), "{out:#?}");
    }

    #[test]
    fn modes_and_levels() {
        let mode = "PIPES_AS_CONCAT,HIGH_NOT_PRECEDENCE,ANSI_QUOTES,NO_BACKSLASH_ESCAPES,SIMULTANEOUS_ASSIGNMENT,NO_UNSIGNED_SUBTRACTION";
        let vars = [
            ("innodb_rollback_on_timeout", "ON"),
            ("lower_case_table_names", "1"),
            ("sql_mode", mode),
            ("transaction_isolation", "SERIALIZABLE"),
        ];
        let out = report(&vars, "10.11.6-MariaDB", RULES, &["balance"]);
        for needle in [
            "server: innodb_rollback_on_timeout=ON: a 1205 lock wait timeout rolls back the whole transaction",
            "server: lower_case_table_names=1: ",
            "server: sql_mode PIPES_AS_CONCAT: ",
            "server: sql_mode HIGH_NOT_PRECEDENCE: ",
            "rewrite these invariants as NOT (...): `NOT balance < 0` (r.yaml:2:5)",
            "server: sql_mode ANSI_QUOTES: \"x\" is a name, not a string; MariaDB reports",
            "server: sql_mode NO_BACKSLASH_ESCAPES: ",
            "server: sql_mode SIMULTANEOUS_ASSIGNMENT: ",
            "server: sql_mode NO_UNSIGNED_SUBTRACTION: ",
            "server: transaction isolation SERIALIZABLE: ",
        ] {
            assert!(has(&out, needle), "{needle} missing from {out:#?}");
        }
        assert!(!has(&out, "error 1690"), "{out:#?}");
        assert!(!has(&out, "balance - held"), "only the bare NOT is named: {out:#?}");
        let out = report(&[("sql_mode", "ANSI_QUOTES"), ("tx_isolation", "READ-COMMITTED")], "8.0.36", RULES, &[]);
        assert!(has(&out, "MySQL does not report this mode"), "{out:#?}");
        assert!(has(&out, "server: transaction isolation READ COMMITTED: "), "{out:#?}");
        let out = report(&[("tx_isolation", "READ-UNCOMMITTED")], "10.11.6-MariaDB", RULES, &[]);
        assert!(has(&out, "server: transaction isolation READ UNCOMMITTED: "), "{out:#?}");
    }

    #[test]
    fn unsigned_without_no_unsigned_subtraction() {
        let out = report(&[("sql_mode", "STRICT_TRANS_TABLES")], "10.11.6-MariaDB", RULES, &["balance", "held"]);
        assert_eq!(out.len(), 1, "{out:#?}");
        assert!(
            out[0].starts_with("r.yaml:2:5: table users: column(s) balance, held are UNSIGNED and sql_mode lacks NO_UNSIGNED_SUBTRACTION"),
            "{out:#?}"
        );
        assert!(report(&[("sql_mode", "STRICT_TRANS_TABLES")], "10.11.6-MariaDB", RULES, &[]).is_empty());
    }

    #[test]
    fn bare_not_found() {
        assert!(bare_not("NOT balance < 0"));
        assert!(bare_not("a >= 0 AND not b = 1"));
        assert!(!bare_not("NOT (balance < 0)"));
        assert!(!bare_not("balance IS NOT NULL"));
        assert!(!bare_not("notes >= 0 AND knot_count >= 0"));
        assert!(!bare_not("balance - frozen_balance >= 0"));
    }
}
