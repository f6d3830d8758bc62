//! Rule files: YAML, loaded and validated with file:line:column in every
//! error.
use super::RulesError;
use super::guard::{Invariant, quote_ident};
use super::pattern::StatementPattern;
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};
use std::path::{Path, PathBuf};

/// A table governed by a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct TableRule {
    /// Rule name (`name:`, default: the table name); `{rule}` in messages.
    pub name: String,
    /// Table name as written; matched case-insensitively, without schema.
    pub table: String,
    /// Key column: the primary key or a unique NOT NULL column.
    pub key: String,
    pub invariants: Vec<Invariant>,
    /// Columns written as absolute values by the app that are made relative
    /// to the captured value (lowercase).
    pub balance_columns: Vec<String>,
    /// Columns checked against the captured value (lowercase).
    pub cas_columns: Vec<String>,
    /// Columns an absolute write may overwrite whatever another session
    /// wrote (`updated_at`); every other captured column is CAS.
    pub last_writer_wins: Vec<String>,
    /// Tables whose triggers write this table: writing them after an
    /// unlocked read is validated first (lowercase).
    pub trigger_tables: Vec<String>,
    /// Views that show or write this table's rows (lowercase).
    pub views: Vec<String>,
    /// Remove lock clauses of keyed reads.
    pub unlock: bool,
    /// Also remove `NOWAIT` and `SKIP LOCKED` locks: the app uses them
    /// against contention, not as try-locks that keep a second worker out.
    pub unlock_try_locks: bool,
    /// Hold a guarded write of a captured row back and send it with COMMIT
    /// (one server-side step; the row lock is held for it alone).
    pub defer_writes: bool,
    /// `mode: shadow`: plans are counted, never carried out.
    pub mode: RuleMode,
    pub violation: ViolationPolicy,
    pub unhandled: UnhandledPolicy,
    /// When non-empty, only statements matching one of these are rewritten.
    pub statements: Vec<StatementPattern>,
    /// `file:line:column` of the rule, for messages.
    pub source: String,
}

impl TableRule {
    /// Every column the rule names (key, invariant, balance and CAS
    /// columns), lowercase, without duplicates.
    pub fn columns_referenced(&self) -> Vec<String> {
        let mut out = vec![self.key.to_lowercase()];
        let all = self
            .invariants
            .iter()
            .flat_map(|i| i.columns.iter())
            .chain(&self.balance_columns)
            .chain(&self.cas_columns)
            .chain(&self.last_writer_wins);
        for c in all {
            if !out.contains(c) {
                out.push(c.clone());
            }
        }
        out
    }

    pub(crate) fn is_balance(&self, col: &str) -> bool {
        self.balance_columns.iter().any(|c| c == col)
    }

    pub(crate) fn is_lww(&self, col: &str) -> bool {
        self.last_writer_wins.iter().any(|c| c == col)
    }

    /// What an absolute write of `col` must prove. A column the rule does
    /// not name is CAS: safe by default, relaxed only by name.
    pub fn class_of(&self, col: &str) -> ColumnClass {
        if self.is_balance(col) {
            ColumnClass::Balance
        } else if self.is_lww(col) {
            ColumnClass::LastWriterWins
        } else {
            ColumnClass::Cas
        }
    }

    /// `name` (a table a statement writes or reads) is one of this rule's
    /// views or trigger tables.
    pub fn links(&self, name: &str) -> bool {
        let n = name.to_ascii_lowercase();
        self.trigger_tables.contains(&n) || self.views.contains(&n)
    }

    /// Table name as SQL.
    pub fn table_sql(&self) -> String {
        quote_ident(&self.table)
    }
}

/// How an absolute write of a captured column is made safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnClass {
    /// Made relative to the captured value, guarded by the invariants.
    Balance,
    /// `AND col = <last seen>`.
    Cas,
    /// Written as is.
    LastWriterWins,
}

/// What a guarded UPDATE that matched no row (of an existing row) does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViolationPolicy {
    /// Return this error; roll the transaction back first when `rollback`.
    Error { code: u16, sqlstate: String, message: String, rollback: bool },
    /// Return the 0-row result as the server sent it.
    PassThrough,
}

impl Default for ViolationPolicy {
    fn default() -> Self {
        ViolationPolicy::Error { code: DEFAULT_CODE, sqlstate: DEFAULT_SQLSTATE.into(), message: DEFAULT_MESSAGE.into(), rollback: true }
    }
}

pub const DEFAULT_CODE: u16 = 1644;
pub const DEFAULT_SQLSTATE: &str = "45000";
pub const DEFAULT_MESSAGE: &str = "thaw: rule {rule} violated for {table} key {key}";

/// What to do with a statement on a governed table that cannot be
/// rewritten safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnhandledPolicy {
    /// Forward it untouched and log its fingerprint.
    #[default]
    ForwardLog,
    /// Refuse it with an error.
    Reject,
}

/// Whether a rule's plans are carried out or only counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleMode {
    /// Rewrite, validate and refuse as planned.
    #[default]
    Enforce,
    /// Forward every statement as the app sent it; plan it as enforce
    /// would, and log and count what enforce would have done.
    Shadow,
}

// ---- raw YAML shape -------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    tables: Vec<Spanned<RawTable>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    table: Spanned<String>,
    #[serde(default)]
    name: Option<Spanned<String>>,
    key: Spanned<String>,
    #[serde(default)]
    invariants: Vec<Spanned<String>>,
    #[serde(default)]
    balance_columns: Vec<Spanned<String>>,
    #[serde(default)]
    cas_columns: Vec<Spanned<String>>,
    #[serde(default)]
    last_writer_wins: Vec<Spanned<String>>,
    #[serde(default)]
    trigger_tables: Vec<Spanned<String>>,
    #[serde(default)]
    views: Vec<Spanned<String>>,
    #[serde(default)]
    unlock: Option<bool>,
    #[serde(default)]
    unlock_try_locks: Option<bool>,
    #[serde(default)]
    defer_writes: Option<bool>,
    #[serde(default)]
    mode: Option<RuleMode>,
    #[serde(default)]
    violation: Option<Spanned<RawViolation>>,
    #[serde(default)]
    unhandled: Option<UnhandledPolicy>,
    #[serde(default)]
    statements: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawViolation {
    #[serde(default)]
    error: Option<RawError>,
    #[serde(default)]
    rollback: Option<bool>,
    #[serde(default)]
    pass_through: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawError {
    #[serde(default)]
    code: Option<Spanned<u16>>,
    #[serde(default)]
    sqlstate: Option<Spanned<String>>,
    #[serde(default)]
    message: Option<Spanned<String>>,
}

// ---- loading ----------------------------------------------------------------

/// Load a YAML file, or every `*.yaml` / `*.yml` of a folder (in name
/// order, hidden files skipped: Kubernetes ConfigMap mounts keep their
/// `..data` there). A missing path or an empty folder gives no rules.
pub(crate) fn load(path: &Path) -> Result<Vec<TableRule>, RulesError> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let rd = std::fs::read_dir(path).map_err(|e| io_err(path, e))?;
        let mut v = Vec::new();
        for entry in rd {
            let p = entry.map_err(|e| io_err(path, e))?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let yaml = p.extension().is_some_and(|e| e == "yaml" || e == "yml");
            if yaml && !name.starts_with('.') && p.is_file() {
                v.push(p);
            }
        }
        v.sort();
        v
    } else if path.exists() {
        vec![path.to_path_buf()]
    } else {
        return Ok(Vec::new());
    };
    let mut rules: Vec<TableRule> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| io_err(&f, e))?;
        for r in parse_str(&text, &f.display().to_string())? {
            if let Some(prev) = rules.iter().find(|p| p.table.eq_ignore_ascii_case(&r.table)) {
                let (file, line, column) = split_source(&r.source);
                return Err(RulesError::Invalid {
                    file,
                    line,
                    column,
                    message: format!("table `{}` already has a rule at {}", r.table, prev.source),
                });
            }
            rules.push(r);
        }
    }
    Ok(rules)
}

fn io_err(path: &Path, e: std::io::Error) -> RulesError {
    RulesError::Io { path: path.display().to_string(), message: e.to_string() }
}

fn split_source(s: &str) -> (String, u64, u64) {
    let mut it = s.rsplitn(3, ':');
    let column = it.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    let line = it.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    (it.next().unwrap_or("").to_string(), line, column)
}

/// Parse one file's text; `file` names it in errors.
pub(crate) fn parse_str(text: &str, file: &str) -> Result<Vec<TableRule>, RulesError> {
    let raw: RawFile = serde_saphyr::from_str(text).map_err(|e| {
        let loc = e.location();
        let (line, column) = loc.map(|l| (l.line(), l.column())).unwrap_or((0, 0));
        let opts = serde_saphyr::render_options! { snippets: serde_saphyr::SnippetMode::Off };
        let mut message = e.render_with_options(opts);
        // The plain rendering ends with " at line L, column C": we say it first.
        let suffix = format!(" at line {line}, column {column}");
        if let Some(m) = message.strip_suffix(&suffix) {
            message = m.to_string();
        }
        RulesError::Invalid { file: file.to_string(), line, column, message }
    })?;
    let err =
        |loc: &Location, message: String| RulesError::Invalid { file: file.to_string(), line: loc.line(), column: loc.column(), message };
    let mut out = Vec::new();
    for st in raw.tables {
        let t = st.value;
        let table = t.table.value.trim().to_string();
        if table.is_empty() {
            return Err(err(&t.table.referenced, "table name is empty".into()));
        }
        let key = t.key.value.trim().to_lowercase();
        if key.is_empty() {
            return Err(err(&t.key.referenced, "key column is empty".into()));
        }
        let name = match &t.name {
            Some(n) if n.value.trim().is_empty() => return Err(err(&n.referenced, "rule name is empty".into())),
            Some(n) => n.value.trim().to_string(),
            None => table.clone(),
        };
        let mut invariants = Vec::new();
        for inv in &t.invariants {
            let parsed = Invariant::parse(&inv.value, &table).map_err(|m| err(&inv.referenced, m))?;
            if parsed.mentions(&key) {
                return Err(err(&inv.referenced, format!("invariant mentions the key column `{key}`")));
            }
            invariants.push(parsed);
        }
        let columns = |list: &[Spanned<String>], what: &str| -> Result<Vec<String>, RulesError> {
            let mut v: Vec<String> = Vec::new();
            for c in list {
                let col = c.value.trim().to_lowercase();
                if col.is_empty() {
                    return Err(err(&c.referenced, format!("empty {what} column")));
                }
                if col == key {
                    return Err(err(&c.referenced, format!("the key column `{key}` cannot be a {what} column")));
                }
                if v.contains(&col) {
                    return Err(err(&c.referenced, format!("{what} column `{col}` listed twice")));
                }
                v.push(col);
            }
            Ok(v)
        };
        let balance_columns = columns(&t.balance_columns, "balance")?;
        let cas_columns = columns(&t.cas_columns, "cas")?;
        if let Some(c) = t.cas_columns.iter().find(|c| balance_columns.contains(&c.value.trim().to_lowercase())) {
            return Err(err(&c.referenced, format!("`{}` is both a balance and a cas column", c.value.trim())));
        }
        let last_writer_wins = columns(&t.last_writer_wins, "last_writer_wins")?;
        if let Some(c) = t
            .last_writer_wins
            .iter()
            .find(|c| balance_columns.contains(&c.value.trim().to_lowercase()) || cas_columns.contains(&c.value.trim().to_lowercase()))
        {
            return Err(err(&c.referenced, format!("`{}` is listed in last_writer_wins and as a balance or cas column", c.value.trim())));
        }
        if let Some((inv, c)) =
            t.invariants.iter().zip(&invariants).find_map(|(s, i)| i.columns.iter().find(|c| last_writer_wins.contains(c)).map(|c| (s, c)))
        {
            return Err(err(&inv.referenced, format!("invariant column `{c}` cannot be last_writer_wins")));
        }
        let names = |list: &[Spanned<String>], what: &str| -> Result<Vec<String>, RulesError> {
            let mut v: Vec<String> = Vec::new();
            for n in list {
                let name = n.value.trim().to_lowercase();
                if name.is_empty() || name.eq_ignore_ascii_case(&table) {
                    return Err(err(&n.referenced, format!("{what} must name another table")));
                }
                if !v.contains(&name) {
                    v.push(name);
                }
            }
            Ok(v)
        };
        let trigger_tables = names(&t.trigger_tables, "trigger_tables")?;
        let views = names(&t.views, "views")?;
        let violation = match &t.violation {
            None => ViolationPolicy::default(),
            Some(v) => violation(&v.value, &v.referenced, &err)?,
        };
        let mut statements = Vec::new();
        for s in &t.statements {
            let p = StatementPattern::parse(&s.value).map_err(|m| err(&s.referenced, format!("statement pattern: {m}")))?;
            statements.push(p);
        }
        out.push(TableRule {
            name,
            table,
            key,
            invariants,
            balance_columns,
            cas_columns,
            last_writer_wins,
            trigger_tables,
            views,
            unlock: t.unlock.unwrap_or(true),
            unlock_try_locks: t.unlock_try_locks.unwrap_or(false),
            defer_writes: t.defer_writes.unwrap_or(false),
            mode: t.mode.unwrap_or_default(),
            violation,
            unhandled: t.unhandled.unwrap_or_default(),
            statements,
            source: format!("{file}:{}:{}", st.referenced.line(), st.referenced.column()),
        });
    }
    Ok(out)
}

fn violation(v: &RawViolation, at: &Location, err: &dyn Fn(&Location, String) -> RulesError) -> Result<ViolationPolicy, RulesError> {
    if v.pass_through == Some(true) {
        if v.error.is_some() || v.rollback.is_some() {
            return Err(err(at, "`pass_through: true` cannot have `error` or `rollback`".into()));
        }
        return Ok(ViolationPolicy::PassThrough);
    }
    let e = v.error.as_ref();
    let code = match e.and_then(|e| e.code.as_ref()) {
        Some(c) if c.value < 1000 => return Err(err(&c.referenced, format!("error code {} is not a MySQL error number", c.value))),
        Some(c) => c.value,
        None => DEFAULT_CODE,
    };
    let sqlstate = match e.and_then(|e| e.sqlstate.as_ref()) {
        Some(s) if s.value.len() != 5 || !s.value.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            return Err(err(&s.referenced, format!("sqlstate `{}` must be 5 letters or digits", s.value)));
        }
        Some(s) => s.value.to_ascii_uppercase(),
        None => DEFAULT_SQLSTATE.into(),
    };
    let message = match e.and_then(|e| e.message.as_ref()) {
        Some(m) => {
            check_template(&m.value).map_err(|msg| err(&m.referenced, msg))?;
            m.value.clone()
        }
        None => DEFAULT_MESSAGE.into(),
    };
    Ok(ViolationPolicy::Error { code, sqlstate, message, rollback: v.rollback.unwrap_or(true) })
}

/// Only `{rule}`, `{table}` and `{key}` may appear in braces.
fn check_template(t: &str) -> Result<(), String> {
    let mut rest = t;
    while let Some(i) = rest.find('{') {
        let after = &rest[i + 1..];
        let Some(j) = after.find('}') else { return Err("unclosed `{` in message".into()) };
        let name = &after[..j];
        if !matches!(name, "rule" | "table" | "key") {
            return Err(format!("unknown placeholder `{{{name}}}` in message (use {{rule}}, {{table}} or {{key}})"));
        }
        rest = &after[j + 1..];
    }
    Ok(())
}

/// Fill a message template.
pub fn render_message(template: &str, rule: &str, table: &str, key: &str) -> String {
    template.replace("{rule}", rule).replace("{table}", table).replace("{key}", key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse_str(text, "rules/billing.yaml").unwrap_err().to_string()
    }

    #[test]
    fn unknown_field_has_location() {
        let e = err("tables:\n  - table: users\n    key: id\n    invarint: [a]\n");
        assert!(e.starts_with("rules/billing.yaml:4:5: unknown field `invarint`, expected"), "{e}");
    }

    #[test]
    fn invalid_invariant_has_location() {
        let e = err("tables:\n  - table: users\n    key: id\n    invariants:\n      - balance >= 0\n      - ABS(balance) >= 0\n");
        assert!(e.starts_with("rules/billing.yaml:6:9: "), "{e}");
        assert!(e.contains("not allowed in an invariant"), "{e}");
    }

    #[test]
    fn other_errors_have_locations() {
        let cases = [
            ("tables:\n  - table: [users]\n    key: id\n", "rules/billing.yaml:2:12: "),
            ("tables:\n  - table: users\n    key: id\n    balance_columns: [id]\n", "rules/billing.yaml:4:23: "),
            (
                "tables:\n  - table: users\n    key: id\n    violation:\n      error:\n        sqlstate: '4500'\n",
                "rules/billing.yaml:6:19: ",
            ),
            (
                "tables:\n  - table: users\n    key: id\n    violation:\n      error:\n        message: 'no {user}'\n",
                "rules/billing.yaml:6:18: ",
            ),
            ("tables:\n  - table: users\n    key: id\n    unhandled: drop\n", "rules/billing.yaml:4:"),
            ("tables:\n  - table: users\n    key: id\n    statements: ['DELETE FROM users']\n", "rules/billing.yaml:4:18: "),
            ("tables:\n  - table: users\n    key: id\n    invariants: ['id > 0']\n", "rules/billing.yaml:4:18: "),
        ];
        for (yaml, prefix) in cases {
            let e = err(yaml);
            assert!(e.starts_with(prefix), "{e} (want {prefix})");
        }
    }

    #[test]
    fn defaults() {
        let r = parse_str("tables:\n  - table: Conversations\n    key: ID\n", "x.yaml").unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].name, "Conversations");
        assert_eq!(r[0].key, "id");
        assert!(r[0].unlock);
        assert_eq!(r[0].violation, ViolationPolicy::default());
        assert_eq!(r[0].unhandled, UnhandledPolicy::ForwardLog);
        assert_eq!(r[0].source, "x.yaml:2:5");
        assert!(parse_str("", "x.yaml").unwrap().is_empty());
        assert!(parse_str("# nothing yet\n", "x.yaml").unwrap().is_empty());
    }

    #[test]
    fn violation_forms() {
        let r = parse_str("tables:\n  - table: t\n    key: id\n    violation: { pass_through: true }\n", "x").unwrap();
        assert_eq!(r[0].violation, ViolationPolicy::PassThrough);
        let r = parse_str(
            "tables:\n  - table: t\n    key: id\n    violation:\n      error: { code: 1644, sqlstate: '45000', message: 'insufficient balance' }\n      rollback: false\n",
            "x",
        )
        .unwrap();
        assert_eq!(
            r[0].violation,
            ViolationPolicy::Error { code: 1644, sqlstate: "45000".into(), message: "insufficient balance".into(), rollback: false }
        );
        assert!(parse_str("tables:\n  - table: t\n    key: id\n    violation: { pass_through: true, rollback: true }\n", "x").is_err());
        assert_eq!(render_message(DEFAULT_MESSAGE, "r", "users", "8"), "thaw: rule r violated for users key 8");
    }

    #[test]
    fn load_folder_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_empty());
        assert!(load(&dir.path().join("nope.yaml")).unwrap().is_empty());
        std::fs::write(dir.path().join("a.yaml"), "tables:\n  - table: users\n    key: id\n").unwrap();
        std::fs::write(dir.path().join("b.yml"), "tables:\n  - table: conversations\n    key: id\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not yaml").unwrap();
        std::fs::write(dir.path().join(".hidden.yaml"), "garbage: [").unwrap();
        let r = load(dir.path()).unwrap();
        assert_eq!(r.iter().map(|r| r.table.as_str()).collect::<Vec<_>>(), ["users", "conversations"]);
        std::fs::write(dir.path().join("c.yaml"), "tables:\n  - table: USERS\n    key: id\n").unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("c.yaml:2:5: table `USERS` already has a rule at"), "{e}");
    }
}
