//! `thaw explain`: what a statement becomes under the rules.
use super::{Action, Plan, PlanContext, RuleSet, ViolationResponse};
use std::fmt::Write;

/// The plan for `sql` and the rewritten statement as a line diff, or why it
/// is left alone.
pub fn explain(rules: &RuleSet, sql: &str, ctx: &PlanContext<'_>) -> String {
    let mut out = String::new();
    match rules.plan(sql, ctx) {
        Plan::Forward => {
            let _ = writeln!(out, "forward unchanged: {}", forward_reason(rules, sql));
        }
        Plan::Unhandled { table, fingerprint, reason } => {
            let _ = writeln!(out, "forward unchanged and log (table {table}): {reason}");
            let _ = writeln!(out, "fingerprint: {fingerprint}");
        }
        Plan::Reject { table, fingerprint, reason, error } => {
            let _ = writeln!(out, "reject (table {table}): {reason}");
            let _ = writeln!(out, "fingerprint: {fingerprint}");
            let _ = writeln!(out, "error: {} ({}) {}", error.code, error.sqlstate, error.message);
        }
        Plan::Rewrite(rw) => {
            let action = match rw.action {
                Action::Unlock => "unlock",
                Action::Guard => "guard",
                Action::Delta => "delta",
                Action::Pass => "pass (keyed write, nothing to change)",
            };
            let _ = writeln!(out, "rule {} (table {}): {action}", rw.rule, rw.table);
            out.push_str(&diff(sql, &rw.sql));
            if let Some(c) = &rw.capture {
                let _ = writeln!(out, "capture: {} key {} columns [{}]", c.table, c.key_column, c.columns.join(", "));
            }
            if let Some(v) = &rw.violation {
                match &v.response {
                    ViolationResponse::Error { error, rollback } => {
                        let _ = writeln!(
                            out,
                            "on 0 rows matched of an existing row: {}error {} ({}) {}",
                            if *rollback { "rollback, " } else { "" },
                            error.code,
                            error.sqlstate,
                            error.message
                        );
                    }
                    ViolationResponse::PassThrough => {
                        let _ = writeln!(out, "on 0 rows matched: pass the result through");
                    }
                }
                let _ = writeln!(out, "existence check: {}", v.exists_sql);
            }
            for n in &rw.notes {
                let _ = writeln!(out, "note: {n}");
            }
        }
    }
    out
}

/// Why the planner left `sql` alone (its plan was [`Plan::Forward`]).
pub fn forward_reason(rules: &RuleSet, sql: &str) -> &'static str {
    if rules.is_empty() {
        "no rules are loaded"
    } else if !rules.is_candidate(sql) {
        "it names no governed table together with UPDATE or a lock clause"
    } else {
        "it is not a statement the rules govern (or it does not parse)"
    }
}

/// Unified-style line diff (`-`/`+`/` `), by longest common subsequence.
pub(crate) fn diff(a: &str, b: &str) -> String {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let mut out = String::from("--- original\n+++ rewritten\n");
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            let _ = writeln!(out, " {}", a[i]);
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            let _ = writeln!(out, "-{}", a[i]);
            i += 1;
        } else {
            let _ = writeln!(out, "+{}", b[j]);
            j += 1;
        }
    }
    out
}

/// Offline problems of a rule set (beyond what loading rejects).
pub fn check(rules: &RuleSet) -> Vec<String> {
    let mut out = Vec::new();
    for t in rules.tables() {
        for c in t.balance_columns.iter() {
            if !t.invariants.iter().any(|i| i.mentions(c)) {
                out.push(format!("{}: balance column {c} is in no invariant: its writes are made relative but not guarded", t.source));
            }
        }
        if !t.unlock && !t.balance_columns.is_empty() {
            out.push(format!("{}: unlock is off, so balance columns are never captured and never made relative", t.source));
        }
        if t.statements.iter().all(|p| !p.text.to_ascii_uppercase().starts_with("SELECT")) && !t.statements.is_empty() && t.unlock {
            out.push(format!("{}: statement patterns name no SELECT: no locking read will be unlocked", t.source));
        }
    }
    out
}
