//! `thaw explain`: print what a statement, or a file of them, becomes under the rules.
use crate::rules::{self, Captures, PlanContext, RuleSet};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug, Clone)]
pub struct ExplainArgs {
    /// Rules: a YAML file or a folder of them.
    #[arg(long, value_name = "PATH", default_value = "rules")]
    pub rules: PathBuf,
    /// Plan as for a statement outside any transaction (autocommit); with
    /// --file, connections start in autocommit mode.
    #[arg(long)]
    pub autocommit: bool,
    /// A value the connection read earlier in the transaction, as
    /// TABLE.KEY.COLUMN=VALUE (repeatable), e.g. users.8.frozen_balance=616.
    #[arg(long = "captured", value_name = "TABLE.KEY.COLUMN=VALUE", conflicts_with = "file")]
    pub captured: Vec<String>,
    /// A file of statements (one transaction, or a general-log excerpt;
    /// `-` reads stdin), explained statement by statement as the session
    /// would run them. Result rows of reads: `-- rows: [{...}]` lines (docs/explain.md).
    #[arg(long, short = 'f', value_name = "FILE", conflicts_with = "sql")]
    pub file: Option<PathBuf>,
    /// With --file: the current database until the file says otherwise.
    #[arg(long, value_name = "NAME")]
    pub schema: Option<String>,
    /// Explain as `thaw run --shadow` runs: every rule in shadow mode.
    #[arg(long)]
    pub shadow: bool,
    /// Values for the statement's `?` placeholders, as an EXECUTE would
    /// bind them: `8,12.50,'ann',NULL,1.5e3`. Shows the prepared statement,
    /// the bound text the session plans, and how it would run.
    #[arg(long, value_name = "VALUES", conflicts_with = "file")]
    pub params: Option<String>,
    /// Print the explanation as JSON (for one statement: as a file of one).
    #[arg(long)]
    pub json: bool,
    /// The statement to explain.
    #[arg(required_unless_present = "file")]
    pub sql: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error(transparent)]
    Rules(#[from] rules::RulesError),
    #[error("--captured {0:?}: expected TABLE.KEY.COLUMN=VALUE")]
    Captured(String),
    #[error("{path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}: {error}")]
    Input { path: String, error: crate::explain::InputError },
    #[error("--schema needs --file")]
    SchemaWithoutFile,
    #[error(transparent)]
    Params(#[from] super::params::ParamsError),
}

pub fn run(args: &ExplainArgs) -> Result<String, ExplainError> {
    let rules = RuleSet::load(&args.rules)?;
    if let Some(path) = &args.file {
        return run_file(&rules, path, args);
    }
    if args.schema.is_some() {
        return Err(ExplainError::SchemaWithoutFile);
    }
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
    let sql = args.sql.as_deref().unwrap_or_default();
    if args.json {
        let opts = crate::explain::Options { autocommit: args.autocommit, schema: None, shadow: args.shadow, captures };
        let report =
            crate::explain::explain(&rules, sql, &opts).map_err(|error| ExplainError::Input { path: "the statement".into(), error })?;
        return Ok(report.json());
    }
    let ctx = PlanContext {
        no_backslash_escapes: false,
        ansi_quotes: false,
        in_transaction: !args.autocommit,
        simultaneous_assignment: Some(false),
        captures: &captures,
        schema: None,
    };
    if let Some(list) = &args.params {
        let values = super::params::parse(list)?;
        return Ok(super::params::explain(&rules, sql, &values, &ctx)?);
    }
    Ok(rules::explain(&rules, sql, &ctx))
}

fn run_file(rules: &RuleSet, path: &Path, args: &ExplainArgs) -> Result<String, ExplainError> {
    let name = path.display().to_string();
    let text = if name == "-" { std::io::read_to_string(std::io::stdin()) } else { std::fs::read_to_string(path) }
        .map_err(|error| ExplainError::Read { path: name.clone(), error })?;
    let opts = crate::explain::Options {
        autocommit: args.autocommit,
        schema: args.schema.clone(),
        shadow: args.shadow,
        captures: Captures::default(),
    };
    let report = crate::explain::explain(rules, &text, &opts).map_err(|error| ExplainError::Input { path: name, error })?;
    Ok(if args.json { report.json() } else { report.text() })
}
