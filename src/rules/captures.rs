//! Per-connection captures: the row values the app saw through an unlocked
//! read in the current transaction, so a later absolute write can be made
//! relative to them.
use std::collections::HashMap;

/// What to capture from the rows of an unlocked read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureSpec {
    /// The rule's table name.
    pub table: String,
    /// Key column (lowercase).
    pub key_column: String,
    /// The key literal of the read's WHERE, canonical: rows are also filed
    /// under it, so a write spelled like the read finds them even when the
    /// key column is not selected or compares case-insensitively.
    pub key_literal: Option<String>,
    /// False when the key column's name in the result may belong to an
    /// expression (`SELECT x AS id`): then only `key_literal` is used.
    pub key_from_row: bool,
    /// Balance and CAS columns to capture (lowercase). A column is left out
    /// when a result column of that name may be an expression.
    pub columns: Vec<String>,
}

/// How the session updates captures after a rewritten write succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureUpdate {
    /// The app now believes `column` holds `value` (None = NULL).
    Set { table: String, key: String, column: String, value: Option<String> },
    /// The value is no longer known (the write was an expression).
    Forget { table: String, key: String, column: String },
}

type Row = HashMap<String, Option<String>>;

/// Captured rows of one connection's transaction.
#[derive(Debug, Default, Clone)]
pub struct Captures {
    rows: HashMap<(String, String), Row>,
}

impl Captures {
    /// Forget everything (COMMIT, ROLLBACK, end of transaction, reset).
    pub fn clear(&mut self) {
        self.rows.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// True when some row of `table` was read unlocked in this transaction:
    /// a write to that table that cannot be rewritten may then lose an
    /// update, and the session may want to say so loudly.
    pub fn holds_table(&self, table: &str) -> bool {
        self.rows.keys().any(|(t, _)| t.eq_ignore_ascii_case(table))
    }

    /// Record one text-protocol row of an unlocked read. `column_names` are
    /// the column definitions' org_name (or name when org_name is empty).
    /// Values of a later read replace earlier ones column by column, so the
    /// capture is always what the app saw last.
    pub fn record_row(&mut self, spec: &CaptureSpec, column_names: &[&str], values: &[Option<&[u8]>]) {
        let find = |col: &str| column_names.iter().position(|n| n.eq_ignore_ascii_case(col));
        let mut keys: Vec<String> = Vec::with_capacity(2);
        if spec.key_from_row
            && let Some(i) = find(&spec.key_column)
            && let Some(Some(v)) = values.get(i)
            && let Ok(s) = std::str::from_utf8(v)
        {
            keys.push(s.to_string());
        }
        if let Some(lit) = &spec.key_literal
            && !keys.contains(lit)
        {
            keys.push(lit.clone());
        }
        if keys.is_empty() {
            return;
        }
        let mut got: Vec<(String, Option<String>)> = Vec::new();
        for col in &spec.columns {
            let Some(i) = find(col) else { continue };
            let Some(v) = values.get(i) else { continue };
            match v {
                None => got.push((col.clone(), None)),
                // Not text: no literal can be made from it, so not captured.
                Some(b) => match std::str::from_utf8(b) {
                    Ok(s) => got.push((col.clone(), Some(s.to_string()))),
                    Err(_) => continue,
                },
            }
        }
        for key in keys {
            let row = self.rows.entry((spec.table.to_ascii_lowercase(), key)).or_default();
            for (c, v) in &got {
                row.insert(c.clone(), v.clone());
            }
        }
    }

    pub fn apply(&mut self, updates: &[CaptureUpdate]) {
        for u in updates {
            match u {
                CaptureUpdate::Set { table, key, column, value } => {
                    if let Some(row) = self.rows.get_mut(&(table.to_ascii_lowercase(), key.clone())) {
                        row.insert(column.to_ascii_lowercase(), value.clone());
                    }
                }
                CaptureUpdate::Forget { table, key, column } => {
                    if let Some(row) = self.rows.get_mut(&(table.to_ascii_lowercase(), key.clone())) {
                        row.remove(&column.to_ascii_lowercase());
                    }
                }
            }
        }
    }

    /// The read's lock was removed but its rows could not be captured (a
    /// malformed or multi-result response): remember the row as read with
    /// no known values, so an absolute write to it is refused rather than
    /// sent unguarded.
    pub fn mark_uncaptured(&mut self, spec: &CaptureSpec) {
        if let Some(key) = &spec.key_literal {
            self.rows.entry((spec.table.to_ascii_lowercase(), key.clone())).or_default();
        }
    }

    /// Record one value directly (`thaw explain --captured`).
    pub fn seed(&mut self, table: &str, key: &str, column: &str, value: Option<String>) {
        self.rows.entry((table.to_ascii_lowercase(), key.to_string())).or_default().insert(column.to_ascii_lowercase(), value);
    }

    /// Is there a capture of this row at all?
    pub fn has_row(&self, table: &str, key: &str) -> bool {
        self.rows.contains_key(&(table.to_ascii_lowercase(), key.to_string()))
    }

    /// `None`: not captured; `Some(None)`: captured NULL.
    pub fn value(&self, table: &str, key: &str, column: &str) -> Option<Option<&str>> {
        self.rows
            .get(&(table.to_ascii_lowercase(), key.to_string()))?
            .get(&column.to_ascii_lowercase())
            .map(|v| v.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CaptureSpec {
        CaptureSpec {
            table: "users".into(),
            key_column: "id".into(),
            key_literal: Some("8".into()),
            key_from_row: true,
            columns: vec!["balance".into(), "frozen_balance".into()],
        }
    }

    #[test]
    fn record_and_replace() {
        let mut c = Captures::default();
        c.record_row(&spec(), &["id", "username", "balance", "frozen_balance"], &[Some(b"8"), Some(b"bob"), Some(b"2000.00"), Some(b"616.00")]);
        assert_eq!(c.value("users", "8", "frozen_balance"), Some(Some("616.00")));
        assert_eq!(c.value("users", "8", "username"), None, "only spec columns");
        assert!(c.holds_table("USERS"));
        // A later read replaces the values it returned and keeps the others.
        c.record_row(&spec(), &["ID", "FROZEN_BALANCE"], &[Some(b"8"), None]);
        assert_eq!(c.value("users", "8", "frozen_balance"), Some(None));
        assert_eq!(c.value("users", "8", "balance"), Some(Some("2000.00")));
        c.apply(&[CaptureUpdate::Set { table: "users".into(), key: "8".into(), column: "frozen_balance".into(), value: Some("1232".into()) }]);
        assert_eq!(c.value("users", "8", "frozen_balance"), Some(Some("1232")));
        c.apply(&[CaptureUpdate::Forget { table: "users".into(), key: "8".into(), column: "balance".into() }]);
        assert_eq!(c.value("users", "8", "balance"), None);
        c.clear();
        assert!(c.is_empty());
    }

    #[test]
    fn key_from_literal_when_row_has_no_key() {
        let mut c = Captures::default();
        c.record_row(&spec(), &["balance"], &[Some(b"5")]);
        assert_eq!(c.value("users", "8", "balance"), Some(Some("5")));
        let mut s = spec();
        s.key_literal = None;
        let mut c = Captures::default();
        c.record_row(&s, &["balance"], &[Some(b"5")]);
        assert!(c.is_empty(), "no key at all: ignored");
    }

    #[test]
    fn non_utf8_value_not_captured() {
        let mut c = Captures::default();
        c.record_row(&spec(), &["id", "balance"], &[Some(b"8"), Some(&[0xff, 0xfe])]);
        assert_eq!(c.value("users", "8", "balance"), None);
        assert!(c.has_row("users", "8"));
    }
}
