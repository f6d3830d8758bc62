//! `thaw check`: validate rule files offline and, with `--dsn`, against the
//! live schema: tables and columns exist, each key is backed by a PRIMARY or
//! UNIQUE index (a guarded UPDATE on an unindexed key locks far more than one
//! row), and each table's guard compiles (EXPLAIN of a sample statement).
use crate::rules::{self, RuleSet};
use mysql_async::prelude::Queryable;

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
    tokio::time::timeout(std::time::Duration::from_secs(STEP_TIMEOUT_SECS), f).await.map_err(|_| CheckError::Timeout(STEP_TIMEOUT_SECS, what))?
}

/// Problems found; empty means the rules are good.
pub async fn run(args: &CheckArgs) -> Result<(Vec<String>, Vec<String>), CheckError> {
    let rules = RuleSet::load(&args.rules)?;
    let warnings = rules::check(&rules);
    let mut problems = Vec::new();
    if let Some(dsn) = &args.dsn {
        let opts = mysql_async::Opts::from_url(dsn).map_err(|e| CheckError::Dsn(e.to_string()))?;
        let schema = opts.db_name().map(str::to_string).ok_or_else(|| CheckError::Dsn("name the database in the URL path".into()))?;
        let mut conn = bounded("connecting", async { Ok(mysql_async::Conn::new(opts).await?) }).await?;
        for t in rules.tables() {
            bounded("checking a table", check_table(&mut conn, &rules, t, &schema, &mut problems)).await?;
        }
        let _ = bounded("disconnecting", async { Ok(conn.disconnect().await?) }).await;
    }
    Ok((warnings, problems))
}

async fn check_table(conn: &mut mysql_async::Conn, rules: &RuleSet, t: &rules::TableRule, schema: &str, problems: &mut Vec<String>) -> Result<(), CheckError> {
    let at = &t.source;
    let columns: Vec<String> = conn
        .exec("SELECT LOWER(column_name) FROM information_schema.columns WHERE table_schema = ? AND table_name = ?", (schema, &t.table))
        .await?;
    if columns.is_empty() {
        problems.push(format!("{at}: table {schema}.{} does not exist", t.table));
        return Ok(());
    }
    let before = problems.len();
    for c in t.columns_referenced() {
        if !columns.contains(&c.to_lowercase()) {
            problems.push(format!("{at}: table {}: column {c} does not exist", t.table));
        }
    }
    let columns_missing = problems.len() > before;
    // Indexes whose only column is the key and which are unique.
    let unique: Vec<(String, u64)> = conn
        .exec(
            "SELECT index_name, COUNT(*) FROM information_schema.statistics WHERE table_schema = ? AND table_name = ? AND non_unique = 0 \
             GROUP BY index_name HAVING SUM(LOWER(column_name) = LOWER(?)) = 1",
            (schema, &t.table, &t.key),
        )
        .await?;
    if !unique.iter().any(|(_, n)| *n == 1) {
        problems.push(format!("{at}: table {}: key {} is not backed by a PRIMARY or UNIQUE index on that column alone", t.table, t.key));
    }
    // A missing column already explains why the guard would not compile.
    if !columns_missing
        && let Some(sample) = rules.sample_guarded_update(&t.table)
        && let Err(e) = conn.query_drop(format!("EXPLAIN {sample}")).await {
            problems.push(format!("{at}: table {}: the guarded UPDATE does not compile: {e}\n  statement: {sample}", t.table));
        }
    Ok(())
}
