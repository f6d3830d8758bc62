//! Rules: load rule files, match statements, plan rewrites, splice text.
//!
//! The session calls [`RuleSet::plan`] for every COM_QUERY (and
//! COM_STMT_PREPARE) text and executes the returned [`Plan`]; it feeds rows
//! of unlocked reads back through [`Captures`]. See `docs/rules.md`.
//!
//! Layout: `config` (YAML), `prefilter` (cheap byte scan), `lex` (tokens
//! with byte offsets), `lock_clause`, `pattern` (statement narrowing),
//! `guard` (invariants), `decimal` (exact deltas), `splice`, `plan` (the
//! matcher and rewriter), `captures`, `fingerprint`, `explain`.
mod captures;
mod config;
pub mod decide;
mod decimal;
pub mod defer;
mod explain;
mod fingerprint;
mod guard;
pub(crate) mod lex;
pub(crate) mod lock_clause;
mod pattern;
pub(crate) mod plan;
mod prefilter;
pub mod safety;
mod splice;

use std::path::Path;

pub use captures::types as column_types;
pub use captures::{CaptureSpec, CaptureUpdate, CapturedRow, Captures, ColMeta, RowId, Seen, canonical_key, same_value};
pub use config::{ColumnClass, RuleMode, TableRule, UnhandledPolicy, ViolationPolicy, render_message};
pub(crate) use explain::diff;
pub use explain::{check, explain, forward_reason};
pub use fingerprint::fingerprint;
pub use guard::{Invariant, quote_ident as guard_ident};
pub use pattern::StatementPattern;

/// What the session must know about the connection to plan a statement.
pub struct PlanContext<'a> {
    /// Status flag NO_BACKSLASH_ESCAPES from the last OK/EOF.
    pub no_backslash_escapes: bool,
    /// MariaDB status flag ANSI_QUOTES (0x8000) from the last OK/EOF.
    pub ansi_quotes: bool,
    /// IN_TRANS from the last OK/EOF, or autocommit off (a statement will open one).
    pub in_transaction: bool,
    /// `Some(true)` when sql_mode has SIMULTANEOUS_ASSIGNMENT, `None` when unknown.
    pub simultaneous_assignment: Option<bool>,
    /// Rows this connection read through unlocked reads in the current transaction.
    pub captures: &'a Captures,
    /// The current database as the server reported it; `None` when unknown.
    pub schema: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Not ours: send the original bytes.
    Forward,
    /// Touches a governed table but cannot be rewritten safely: forward untouched, log once per fingerprint.
    Unhandled {
        table: String,
        fingerprint: String,
        reason: String,
    },
    Rewrite(Box<Rewrite>),
    /// Like `Unhandled`, for a table whose rule says `unhandled: reject`:
    /// do not send it; answer with `error`.
    Reject {
        table: String,
        fingerprint: String,
        reason: String,
        error: ErrorResponse,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rewrite {
    /// The statement to send instead.
    pub sql: String,
    /// Rule name.
    pub rule: String,
    /// The rule's table.
    pub table: String,
    pub action: Action,
    /// Literals replaced by `?`: safe to log.
    pub fingerprint: String,
    /// Capture the rows of this (unlocked) read for the transaction.
    pub capture: Option<CaptureSpec>,
    /// Present when the statement got a guard: what a 0-rows-matched result means.
    pub violation: Option<ViolationCheck>,
    /// Apply to the captures after the statement succeeded (not after a violation).
    pub on_success: Vec<CaptureUpdate>,
    /// Things an operator may want to know (no literals), e.g. a balance
    /// column written absolutely without a captured value.
    pub notes: Vec<String>,
    /// The captured row this write targets.
    pub row: Option<RowId>,
    /// Safe inside the protection window: a read thaw unlocked, or a
    /// guarded write of a captured row.
    pub proven: bool,
    /// A guarded write of a captured row whose OK thaw can tell in advance:
    /// the WHERE is the key alone, every column it sets is a delta that
    /// changes the row (stored exactly, so no warning) or a last-writer-wins
    /// column set to the current time. It may be held back to COMMIT
    /// (`defer_writes`).
    pub deferrable: bool,
    /// The guard compares columns with what the app read (compare-and-set).
    pub cas: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Lock clause removed from a keyed read.
    Unlock,
    /// Invariants (and CAS checks) added to a keyed UPDATE.
    Guard,
    /// As Guard, and at least one absolute balance write made relative.
    Delta,
    /// A keyed UPDATE that needs no change (last-writer-wins columns only).
    Pass,
}

impl Action {
    /// As metrics and `thaw explain` name it.
    pub fn name(self) -> &'static str {
        match self {
            Action::Unlock => "unlock",
            Action::Guard => "guard",
            Action::Delta => "delta",
            Action::Pass => "pass",
        }
    }
}

/// An error to return to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    pub code: u16,
    pub sqlstate: String,
    pub message: String,
}

/// What the session does when a guarded UPDATE matched 0 rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViolationResponse {
    /// Roll back first when `rollback` (the default: nothing the
    /// transaction wrote survives, as after a deadlock), then return `error`.
    Error { error: ErrorResponse, rollback: bool },
    /// Return the 0-row result as is.
    PassThrough,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViolationCheck {
    pub rule: String,
    pub table: String,
    /// Key value (canonical text, e.g. `8`).
    pub key: String,
    /// The key literal as written in the statement (e.g. `'8'`).
    pub key_sql: String,
    pub response: ViolationResponse,
    /// Run on a 0-rows-matched result: a row means the guard failed (a
    /// violation); no row means the row does not exist (pass the result
    /// through); its one column is 1 when the CAS checks hold (an invariant
    /// broke) and 0 when they do not (a concurrent change: 1213).
    /// `SELECT <cas or 1> FROM <table as written> WHERE <original WHERE> LOCK IN SHARE MODE`.
    pub exists_sql: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{file}:{line}:{column}: {message}")]
    Invalid { file: String, line: u64, column: u64, message: String },
}

/// The loaded rules.
#[derive(Debug, Default, Clone)]
pub struct RuleSet {
    tables: Vec<TableRule>,
    /// Lowercase table names for the prefilter.
    needles: Vec<Vec<u8>>,
}

impl RuleSet {
    pub fn empty() -> Self {
        RuleSet::default()
    }

    /// Load a YAML file or a folder of `*.yaml` / `*.yml`. A missing path
    /// or an empty folder gives an empty set; the caller decides.
    pub fn load(path: &Path) -> Result<RuleSet, RulesError> {
        Ok(RuleSet::from_rules(config::load(path)?))
    }

    /// Parse rules from YAML text; `file` names it in errors.
    pub fn from_yaml(text: &str, file: &str) -> Result<RuleSet, RulesError> {
        Ok(RuleSet::from_rules(config::parse_str(text, file)?))
    }

    fn from_rules(tables: Vec<TableRule>) -> RuleSet {
        let needles = tables.iter().map(|t| t.table.to_ascii_lowercase().into_bytes()).collect();
        RuleSet { tables, needles }
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    pub fn tables(&self) -> impl Iterator<Item = &TableRule> {
        self.tables.iter()
    }

    pub fn table(&self, name: &str) -> Option<&TableRule> {
        self.tables.iter().find(|t| t.table.eq_ignore_ascii_case(name))
    }

    /// Cheap, allocation-free: may this text need planning? True only when
    /// it mentions a governed table and a lock clause or UPDATE keyword.
    pub fn is_candidate(&self, sql: &str) -> bool {
        prefilter::is_candidate(&self.needles, sql.as_bytes())
    }

    pub fn plan(&self, sql: &str, ctx: &PlanContext<'_>) -> Plan {
        plan::plan(self, sql, ctx)
    }

    /// A guarded UPDATE of `table` assigning every column the rule names to
    /// itself, for `EXPLAIN` against a live schema (checks that the columns
    /// exist and the guard is valid SQL there). None for an unknown table.
    pub fn sample_guarded_update(&self, table: &str) -> Option<String> {
        plan::sample_guarded_update(self, table)
    }
}

#[cfg(test)]
mod tests;
