//! What `thaw explain --file` prints, as data (`--json`) and as text.
use super::input::Format;
use crate::rules::{CapturedRow, ErrorResponse, Plan, RowId, RuleSet, ViolationResponse, diff};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Debug, Serialize)]
pub struct Report {
    pub format: Format,
    /// Connection ids in the order they first appear (none for plain SQL
    /// without `-- connection`).
    pub connections: Vec<u64>,
    pub statements: Vec<Step>,
}

/// One entry of the file and what the session would do with it.
#[derive(Debug, Serialize)]
pub struct Step {
    pub index: usize,
    pub line: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<u64>,
    /// `query`, `execute`, `connect`, `init_db`, `quit` or the log's command.
    pub command: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// A statement sent now runs inside a transaction (open, or opened by it).
    pub in_transaction: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanOut>,
    /// Some captured row was in the protection window when it came.
    pub window_before: bool,
    /// Why the protection window requires validation first; None: allowed.
    pub gate: Option<String>,
    pub session: SessionOut,
    /// The series the session counts for it (`/metrics` names).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub counts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<RowsOut>,
    /// What else the session does with it, in order.
    pub events: Vec<String>,
    pub after: After,
}

#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PlanOut {
    /// The session does not consult the rules for it.
    NotPlanned {
        reason: String,
    },
    Forward {
        reason: String,
    },
    Unhandled {
        table: String,
        fingerprint: String,
        reason: String,
    },
    Reject {
        table: String,
        fingerprint: String,
        reason: String,
        error: ErrorOut,
    },
    Rewrite {
        rule: String,
        table: String,
        action: &'static str,
        fingerprint: String,
        rewritten: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        capture: Option<CaptureOut>,
        /// What a result of 0 rows matched means.
        #[serde(skip_serializing_if = "Option::is_none")]
        on_zero_rows: Option<ZeroRows>,
        /// Safe inside the protection window.
        proven: bool,
        notes: Vec<String>,
    },
}

#[derive(Debug, Serialize)]
pub struct CaptureOut {
    pub table: String,
    pub key_column: String,
    pub columns: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ZeroRows {
    /// Run on 0 rows matched: a row means the guard failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub existence_check: Option<String>,
    /// What a failed guard answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub violation: Option<String>,
    /// The captured row the write targets: re-locked by key and compared
    /// when no guard explains the 0 rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub captured_row: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorOut {
    pub code: u16,
    pub sqlstate: String,
    pub message: String,
}

impl From<&ErrorResponse> for ErrorOut {
    fn from(e: &ErrorResponse) -> Self {
        ErrorOut { code: e.code, sqlstate: e.sqlstate.clone(), message: e.message.clone() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Send it (as written or rewritten).
    Send,
    /// Re-lock and compare the window's rows, then send.
    ValidateThenSend,
    /// Answer it at once and hold it back to COMMIT (`defer_writes`).
    HoldBack,
    /// Shadow mode: send it as the app wrote it; what enforce mode would
    /// have done is counted.
    Shadow,
    /// Answer with an error; the server never sees it.
    Refuse,
    /// thaw rolled the transaction back earlier: answer its error.
    AnswerAborted,
    /// Not a statement (connect, quit, ...).
    None,
}

#[derive(Debug, Serialize)]
pub struct SessionOut {
    pub decision: Decision,
    /// Rows re-locked and compared first (`table key`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub validates: Vec<String>,
    /// The text sent to the server when it is not the statement as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sends_rewritten: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl SessionOut {
    pub fn new(decision: Decision) -> Self {
        SessionOut { decision, validates: Vec::new(), sends_rewritten: None, error: None, why: None }
    }
}

#[derive(Debug, Serialize)]
pub struct RowsOut {
    pub given: usize,
    /// The session read them into the captures.
    pub read: bool,
}

#[derive(Debug, Serialize)]
pub struct After {
    /// `idle`, `open` or `aborted` (thaw rolled it back).
    pub transaction: &'static str,
    pub autocommit: bool,
    /// Some captured row is in the protection window.
    pub window: bool,
    pub captures: Vec<RowOut>,
    /// Guarded writes answered and held back to COMMIT, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held_back: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct RowOut {
    pub schema: String,
    pub table: String,
    pub key: String,
    /// Last-seen values; null is NULL.
    pub values: BTreeMap<String, Option<String>>,
    /// The transaction holds the row lock and the values are the row's.
    pub protected: bool,
    /// Seen in a form thaw could not attribute: values not known.
    pub uncertain: bool,
    pub in_window: bool,
}

impl RowOut {
    pub fn of(id: &RowId, r: &CapturedRow) -> Self {
        RowOut {
            schema: id.schema.clone(),
            table: id.table.clone(),
            key: id.key.clone(),
            values: r.values.iter().map(|(k, v)| (k.clone(), v.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()))).collect(),
            protected: r.protected,
            uncertain: r.uncertain,
            in_window: r.in_window(),
        }
    }
}

impl PlanOut {
    pub fn of(plan: &Plan, sql: &str, rules: &RuleSet) -> Self {
        match plan {
            Plan::Forward => PlanOut::Forward { reason: crate::rules::forward_reason(rules, sql).into() },
            Plan::Unhandled { table, fingerprint, reason } => {
                PlanOut::Unhandled { table: table.clone(), fingerprint: fingerprint.clone(), reason: reason.clone() }
            }
            Plan::Reject { table, fingerprint, reason, error } => {
                PlanOut::Reject { table: table.clone(), fingerprint: fingerprint.clone(), reason: reason.clone(), error: error.into() }
            }
            Plan::Rewrite(rw) => {
                let violation = rw.violation.as_ref().map(|v| match &v.response {
                    ViolationResponse::Error { error, rollback } => {
                        format!("{}error {} ({}) {}", if *rollback { "rollback, " } else { "" }, error.code, error.sqlstate, error.message)
                    }
                    ViolationResponse::PassThrough => "pass the 0 rows through".into(),
                });
                let zero = (rw.violation.is_some() || rw.row.is_some()).then(|| ZeroRows {
                    existence_check: rw.violation.as_ref().map(|v| v.exists_sql.clone()),
                    violation,
                    captured_row: rw.row.as_ref().map(|id| format!("{} {}", id.table, id.key)),
                });
                PlanOut::Rewrite {
                    rule: rw.rule.clone(),
                    table: rw.table.clone(),
                    action: rw.action.name(),
                    fingerprint: rw.fingerprint.clone(),
                    rewritten: rw.sql.clone(),
                    capture: rw.capture.as_ref().map(|c| CaptureOut {
                        table: c.table.clone(),
                        key_column: c.key_column.clone(),
                        columns: c.columns.clone(),
                    }),
                    on_zero_rows: zero,
                    proven: rw.proven,
                    notes: rw.notes.clone(),
                }
            }
        }
    }
}

// ---- text -------------------------------------------------------------------

impl Report {
    /// Pretty JSON, ending in a newline.
    pub fn json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("the report serializes");
        s.push('\n');
        s
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        let format = match self.format {
            Format::Statements => "statements",
            Format::GeneralLog => "general log",
        };
        let conns = match self.connections.len() {
            0 | 1 => String::new(),
            n => format!(" on {n} connections"),
        };
        let _ = writeln!(out, "thaw explain: {} entries{conns} ({format})", self.statements.len());
        for s in &self.statements {
            out.push('\n');
            s.text(&mut out);
        }
        out
    }
}

fn indent(out: &mut String, pad: &str, text: &str) {
    for l in text.lines() {
        let _ = writeln!(out, "{pad}{l}");
    }
}

fn error_text(e: &ErrorOut) -> String {
    format!("{} ({}) {}", e.code, e.sqlstate, e.message)
}

impl Step {
    fn text(&self, out: &mut String) {
        let conn = self.connection.map(|c| format!(", connection {c}")).unwrap_or_default();
        // Where the planner was told it runs: it matters only when it planned.
        let tx = match &self.plan {
            Some(PlanOut::NotPlanned { .. }) | None => "",
            Some(_) if self.in_transaction => ", in a transaction",
            Some(_) => ", outside a transaction (autocommit)",
        };
        let _ = writeln!(out, "[{}] line {}{conn}: {}{tx}", self.index, self.line, self.command);
        if let Some(sql) = &self.sql {
            indent(out, "    ", sql);
        }
        if let Some(plan) = &self.plan {
            plan.text(out, self.sql.as_deref().unwrap_or_default());
        }
        if self.window_before {
            match &self.gate {
                Some(reason) => {
                    let _ = writeln!(out, "  window: open; not proven safe: {reason}");
                }
                None if self.session.decision != Decision::AnswerAborted => {
                    let _ = writeln!(out, "  window: open; proven safe inside it");
                }
                None => {}
            }
        }
        self.session.text(out);
        if !self.counts.is_empty() {
            let _ = writeln!(out, "  counts: {}", self.counts.join(", "));
        }
        if let Some(r) = &self.rows {
            let n = if r.given == 1 { "1 row".to_string() } else { format!("{} rows", r.given) };
            let _ = writeln!(out, "  rows: {n}{}", if r.read { ", read for captures" } else { ", not read for captures" });
        }
        for e in &self.events {
            let _ = writeln!(out, "  - {e}");
        }
        self.after.text(out);
    }
}

impl PlanOut {
    fn text(&self, out: &mut String, sql: &str) {
        match self {
            PlanOut::NotPlanned { reason } => {
                let _ = writeln!(out, "  plan: not planned: {reason}");
            }
            PlanOut::Forward { reason } => {
                let _ = writeln!(out, "  plan: forward unchanged: {reason}");
            }
            PlanOut::Unhandled { table, fingerprint, reason } => {
                let _ = writeln!(out, "  plan: forward unchanged and log (table {table}): {reason}");
                let _ = writeln!(out, "    fingerprint: {fingerprint}");
            }
            PlanOut::Reject { table, fingerprint, reason, error } => {
                let _ = writeln!(out, "  plan: reject (table {table}): {reason}");
                let _ = writeln!(out, "    fingerprint: {fingerprint}");
                let _ = writeln!(out, "    error: {}", error_text(error));
            }
            PlanOut::Rewrite { rule, table, action, rewritten, capture, on_zero_rows, proven, notes, .. } => {
                let proven = if *proven { ", proven" } else { "" };
                let _ = writeln!(out, "  plan: {action}, rule {rule} (table {table}){proven}");
                if rewritten != sql {
                    indent(out, "    ", &diff(sql, rewritten));
                }
                if let Some(c) = capture {
                    let _ = writeln!(out, "    capture: {} key {} columns [{}]", c.table, c.key_column, c.columns.join(", "));
                }
                if let Some(z) = on_zero_rows {
                    if let Some(v) = &z.violation {
                        let _ = writeln!(out, "    on 0 rows matched of an existing row: {v}");
                    }
                    if let Some(e) = &z.existence_check {
                        let _ = writeln!(out, "    existence check: {e}");
                    }
                    if let Some(r) = &z.captured_row {
                        let _ = writeln!(
                            out,
                            "    on 0 rows matched: re-lock {r} by key; gone or changed is 1213, unchanged passes the 0 rows"
                        );
                    }
                }
                for n in notes {
                    let _ = writeln!(out, "    note: {n}");
                }
            }
        }
    }
}

impl SessionOut {
    fn text(&self, out: &mut String) {
        let what = if self.sends_rewritten.is_some() { "the rewritten statement" } else { "it as written" };
        let line = match self.decision {
            Decision::Send => format!("send {what}"),
            Decision::ValidateThenSend => format!("re-lock and compare {}, then send {what}", self.validates.join(", ")),
            Decision::Shadow => "send it as the app wrote it (shadow mode)".into(),
            Decision::HoldBack => "answer 1 row matched now and hold the rewritten statement back to COMMIT (defer_writes)".into(),
            Decision::Refuse => "refuse: the server never sees it".into(),
            Decision::AnswerAborted => "answer the rolled-back error: the server never sees it".into(),
            Decision::None => return,
        };
        let _ = writeln!(out, "  session: {line}");
        if let Some(why) = &self.why {
            let _ = writeln!(out, "    because {why}");
        }
        if let Some(e) = &self.error {
            let _ = writeln!(out, "    error: {}", error_text(e));
        }
    }
}

impl After {
    fn text(&self, out: &mut String) {
        let tx = match self.transaction {
            "open" => "transaction open",
            "aborted" => "transaction rolled back by thaw (until the app's ROLLBACK)",
            _ => "no transaction",
        };
        let ac = if self.autocommit { "autocommit on" } else { "autocommit off" };
        let window = if self.window { ", protection window open" } else { "" };
        let caps = if self.captures.is_empty() { ", no captures" } else { "" };
        let _ = writeln!(out, "  after: {tx} ({ac}){window}{caps}");
        for r in &self.captures {
            let schema = if r.schema.is_empty() { String::new() } else { format!("{}.", r.schema) };
            let values: Vec<String> = r.values.iter().map(|(k, v)| format!("{k}={}", v.as_deref().map_or("NULL".into(), quote))).collect();
            let state = match (r.protected, r.uncertain) {
                (_, true) => "in window: uncertain",
                (false, false) => "in window: unprotected",
                (true, false) => "protected",
            };
            let _ = writeln!(out, "    {schema}{} {}: {} [{state}]", r.table, r.key, values.join(", "));
        }
        for w in &self.held_back {
            let _ = writeln!(out, "    held back: {w}");
        }
    }
}

/// A value as text output shows it: numbers bare, anything else quoted.
fn quote(v: &str) -> String {
    let numeric = v.chars().all(|c| c.is_ascii_digit() || c == '-' || c == '.') && v.parse::<f64>().is_ok();
    if numeric { v.to_string() } else { format!("'{}'", v.replace('\'', "''")) }
}
