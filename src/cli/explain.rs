//! `thaw explain`: print what a statement becomes under the rules.
use crate::rules::{self, Captures, PlanContext, RuleSet};

#[derive(clap::Args, Debug, Clone)]
pub struct ExplainArgs {
    /// Rules: a YAML file or a folder of them.
    #[arg(long, value_name = "PATH", default_value = "rules")]
    pub rules: std::path::PathBuf,
    /// Plan as for a statement outside any transaction (autocommit).
    #[arg(long)]
    pub autocommit: bool,
    /// A value the connection read earlier in the transaction, as
    /// TABLE.KEY.COLUMN=VALUE (repeatable), e.g. users.8.frozen_balance=616.
    #[arg(long = "captured", value_name = "TABLE.KEY.COLUMN=VALUE")]
    pub captured: Vec<String>,
    /// The statement to explain.
    pub sql: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error(transparent)]
    Rules(#[from] rules::RulesError),
    #[error("--captured {0:?}: expected TABLE.KEY.COLUMN=VALUE")]
    Captured(String),
}

pub fn run(args: &ExplainArgs) -> Result<String, ExplainError> {
    let rules = RuleSet::load(&args.rules)?;
    let mut captures = Captures::default();
    for c in &args.captured {
        let (path, value) = c.split_once('=').ok_or_else(|| ExplainError::Captured(c.clone()))?;
        let mut parts = path.splitn(3, '.');
        let (Some(table), Some(key), Some(column)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ExplainError::Captured(c.clone()));
        };
        let value = (!value.eq_ignore_ascii_case("null")).then(|| value.to_string());
        captures.seed("", table, key, column, value);
    }
    let ctx = PlanContext {
        no_backslash_escapes: false,
        ansi_quotes: false,
        in_transaction: !args.autocommit,
        simultaneous_assignment: Some(false),
        captures: &captures,
        schema: None,
    };
    Ok(rules::explain(&rules, &args.sql, &ctx))
}
