//! `thaw check`: validate rule files offline and, with `--dsn`, against the
//! live schema named in the DSN. Per governed table: the table and the
//! columns the rule names exist, the key is backed by a PRIMARY or UNIQUE
//! index on that column alone (a guarded UPDATE on an unindexed key locks
//! far more than one row), the guard compiles (EXPLAIN of a sample
//! statement), columns the rule leaves unclassified (CAS), and the
//! triggers, views and routines that reach the table ([`objects`]). Then
//! the server settings that change what thaw does ([`server`]).
//!
//! [`run`] returns `(warnings, problems)`: a warning says what something
//! means for the operator and leaves the exit status 0; a problem is an
//! error and makes `thaw check` exit 1.
use crate::rules::{self, RuleSet, TableRule};
use mysql_async::prelude::Queryable;

mod objects;
mod server;

#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// Rules: a YAML file or a folder of them.
    #[arg(long, value_name = "PATH", default_value = "rules")]
    pub rules: std::path::PathBuf,
    /// Check against a live database, e.g. mysql://user:pass@127.0.0.1:3306/billing
    #[arg(long, value_name = "URL")]
    pub dsn: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Rules(#[from] rules::RulesError),
    #[error("--dsn: {0}")]
    Dsn(String),
    #[error("database: {0}")]
    Db(#[from] mysql_async::Error),
    #[error("database: no answer within {0} s while {1}")]
    Timeout(u64, &'static str),
}

/// mysql_async has no connect timeout of its own: a port that accepts and
/// never greets would hang `thaw check` forever.
const STEP_TIMEOUT_SECS: u64 = 5;

async fn bounded<T>(what: &'static str, f: impl std::future::Future<Output = Result<T, CheckError>>) -> Result<T, CheckError> {
    tokio::time::timeout(std::time::Duration::from_secs(STEP_TIMEOUT_SECS), f)
        .await
        .map_err(|_| CheckError::Timeout(STEP_TIMEOUT_SECS, what))?
}

/// What the live-schema checks after the per-table one need to know about
/// a governed table that exists.
struct Present<'a> {
    rule: &'a TableRule,
    /// UNSIGNED columns that a guard or delta subtracts from: invariant and
    /// balance columns.
    unsigned: Vec<String>,
}

/// `(warnings, problems)`; no problems means the rules are good.
pub async fn run(args: &CheckArgs) -> Result<(Vec<String>, Vec<String>), CheckError> {
    let rules = RuleSet::load(&args.rules)?;
    let mut warnings = rules::check(&rules);
    let mut problems = Vec::new();
    if let Some(dsn) = &args.dsn {
        let opts = mysql_async::Opts::from_url(dsn).map_err(|e| CheckError::Dsn(e.to_string()))?;
        let schema = opts.db_name().map(str::to_string).ok_or_else(|| CheckError::Dsn("name the database in the URL path".into()))?;
        let mut conn = bounded("connecting", async { Ok(mysql_async::Conn::new(opts).await?) }).await?;
        let mut present = Vec::new();
        for t in rules.tables() {
            if let Some(p) = bounded("checking a table", check_table(&mut conn, &rules, t, &schema, &mut warnings, &mut problems)).await? {
                present.push(p);
            }
        }
        let governed: Vec<&TableRule> = present.iter().map(|p| p.rule).collect();
        let triggers = bounded("reading information_schema.TRIGGERS", objects::triggers(&mut conn, &schema)).await?;
        let views = bounded("reading information_schema.VIEWS", objects::views(&mut conn, &schema)).await?;
        let routines = bounded("reading information_schema.ROUTINES", objects::routines(&mut conn, &schema)).await?;
        objects::check(&governed, &schema, &triggers, &views, &routines, &mut warnings, &mut problems);
        let settings = bounded("reading server settings", server::load(&mut conn)).await?;
        server::check(&settings, &present, &rules, &mut warnings);
        let _ = bounded("disconnecting", async { Ok(conn.disconnect().await?) }).await;
    }
    Ok((warnings, problems))
}

/// The checks of one rule's table; `None` when the table does not exist.
async fn check_table<'a>(
    conn: &mut mysql_async::Conn,
    rules: &RuleSet,
    t: &'a TableRule,
    schema: &str,
    warnings: &mut Vec<String>,
    problems: &mut Vec<String>,
) -> Result<Option<Present<'a>>, CheckError> {
    let at = &t.source;
    // (name, type, generated) in table order.
    let columns: Vec<(String, String, bool)> = conn
        .exec(
            "SELECT LOWER(column_name), LOWER(column_type), COALESCE(generation_expression, '') <> '' FROM information_schema.columns \
             WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            (schema, &t.table),
        )
        .await?;
    if columns.is_empty() {
        problems.push(format!("{at}: table {schema}.{} does not exist", t.table));
        return Ok(None);
    }
    // Rules match table names case-insensitively; with lower_case_table_names=0
    // the server can hold `users` and `Users` side by side. (information_schema
    // compares names case-insensitively, hence the filter below.)
    let variants: Vec<String> = conn
        .exec(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ? AND LOWER(table_name) = LOWER(?) ORDER BY table_name",
            (schema, &t.table),
        )
        .await?;
    for v in variants.iter().filter(|v| **v != t.table) {
        warnings.push(format!(
            "{at}: table {}: the schema also has a table {v}: the server keeps them apart (lower_case_table_names=0), but the rule matches \
             table names case-insensitively, so it governs statements on {v} too",
            t.table
        ));
    }
    let before = problems.len();
    for c in t.columns_referenced() {
        if !columns.iter().any(|(name, _, _)| *name == c.to_lowercase()) {
            problems.push(format!("{at}: table {}: column {c} does not exist", t.table));
        }
    }
    let columns_missing = problems.len() > before;
    let unclassified: Vec<&str> = columns
        .iter()
        .filter(|(c, _, generated)| {
            !generated && *c != t.key && !t.balance_columns.contains(c) && !t.cas_columns.contains(c) && !t.last_writer_wins.contains(c)
        })
        .map(|(c, _, _)| c.as_str())
        .collect();
    if !unclassified.is_empty() {
        warnings.push(format!(
            "{at}: table {}: column(s) {}: in none of balance_columns, cas_columns, last_writer_wins, so thaw treats them as compare-and-set \
             (CAS): a write of one after an unlocked read succeeds only if no other session changed it since the read (else the \
             transaction is rolled back with 1213, as after a deadlock); safe, but concurrent writers of the row serialise on it; list \
             each column where it belongs",
            t.table,
            unclassified.join(", ")
        ));
    }
    // Indexes whose only column is the key and which are unique.
    let unique: Vec<(String, u64)> = conn
        .exec(
            "SELECT index_name, COUNT(*) FROM information_schema.statistics WHERE table_schema = ? AND table_name = ? AND non_unique = 0 \
             GROUP BY index_name HAVING SUM(LOWER(column_name) = LOWER(?)) = 1",
            (schema, &t.table, &t.key),
        )
        .await?;
    if !unique.iter().any(|(_, n)| *n == 1) {
        problems.push(format!(
            "{at}: table {}: key {} is not backed by a PRIMARY or UNIQUE index on that column alone: thaw assumes `{} = <literal>` names at most \
             one row, and without such an index a guarded UPDATE can match (and lock) many rows",
            t.table, t.key, t.key
        ));
    }
    // A missing column already explains why the guard would not compile.
    if !columns_missing
        && let Some(sample) = rules.sample_guarded_update(&t.table)
        && let Err(e) = conn.query_drop(format!("EXPLAIN {sample}")).await
    {
        problems.push(format!("{at}: table {}: the guarded UPDATE does not compile: {e}\n  statement: {sample}", t.table));
    }
    let subtracted: Vec<&String> = t.invariants.iter().flat_map(|i| i.columns.iter()).chain(&t.balance_columns).collect();
    let mut unsigned: Vec<String> = Vec::new();
    for (c, ty, _) in &columns {
        if ty.contains("unsigned") && subtracted.contains(&c) && !unsigned.contains(c) {
            unsigned.push(c.clone());
        }
    }
    Ok(Some(Present { rule: t, unsigned }))
}
