//! Rules: load rule files, match statements, plan rewrites, splice text.
//!
//! CONTRACT used by `session` (the implementation lands from the rules branch):
//! the session calls [`RuleSet::plan`] for every COM_QUERY and executes the
//! returned [`Plan`]; it feeds captured rows back through [`Captures`].
use std::path::Path;

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
}

#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Not ours: send the original bytes.
    Forward,
    /// Touches a governed table but cannot be rewritten safely: forward untouched, log once per fingerprint.
    Unhandled { table: String, fingerprint: String, reason: String },
    Rewrite(Box<Rewrite>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rewrite {
    pub sql: String,
    pub rule: String,
    pub action: Action,
    pub fingerprint: String,
    pub capture: Option<CaptureSpec>,
    pub violation: Option<ViolationCheck>,
    pub on_success: Vec<CaptureUpdate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action { Unlock, Guard, Delta }

#[derive(Debug, Clone, PartialEq)]
pub struct CaptureSpec { pub table: String }

#[derive(Debug, Clone, PartialEq)]
pub struct CaptureUpdate;

#[derive(Debug, Clone, PartialEq)]
pub enum ViolationResponse {
    Error { code: u16, sqlstate: String, message: String, rollback: bool },
    PassThrough,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ViolationCheck {
    pub rule: String,
    pub table: String,
    pub key: String,
    pub exists_sql: String,
    pub response: ViolationResponse,
}

#[derive(Debug, Default)]
pub struct Captures;

impl Captures {
    pub fn clear(&mut self) {}
    pub fn record_row(&mut self, _spec: &CaptureSpec, _names: &[&str], _values: &[Option<&[u8]>]) {}
    pub fn apply(&mut self, _updates: &[CaptureUpdate]) {}
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{0}")]
    Io(String),
}

#[derive(Debug, Default)]
pub struct RuleSet;

impl RuleSet {
    pub fn empty() -> Self { RuleSet }
    pub fn load(_path: &Path) -> Result<RuleSet, RulesError> { Ok(RuleSet) }
    pub fn is_empty(&self) -> bool { true }
    pub fn is_candidate(&self, _sql: &str) -> bool { false }
    pub fn plan(&self, _sql: &str, _ctx: &PlanContext<'_>) -> Plan { Plan::Forward }
}
