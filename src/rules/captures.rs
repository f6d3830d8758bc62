//! Per-transaction captures: what the app last saw of governed rows, and
//! whether thaw may rely on it.
//!
//! A row enters when thaw unlocks a keyed read of it. From then on every
//! result set that shows the row with its key updates the last-seen values,
//! whoever wrote the SELECT. A row is *protected* when this transaction holds
//! its lock and the captured values are what the row holds (a re-lock that
//! compared equal, or a locking read that showed every captured column);
//! otherwise it is in the protection window and only proven-safe statements
//! may run (see `rules::safety`).
use super::decimal::canonical_number;
use std::collections::BTreeMap;

/// Column metadata from the column definition the value came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColMeta {
    /// MySQL type code (0x00 DECIMAL, 0x03 LONG, 0xfd VAR_STRING, ...).
    pub col_type: u8,
    pub decimals: u8,
    /// Character set id of the bytes as sent (63 = binary).
    pub charset: u16,
    pub flags: u16,
    /// Column length (for DECIMAL: precision, point and sign); 0 = unknown.
    pub length: u32,
}

pub mod types {
    pub const DECIMAL: u8 = 0x00;
    pub const TINY: u8 = 0x01;
    pub const SHORT: u8 = 0x02;
    pub const LONG: u8 = 0x03;
    pub const FLOAT: u8 = 0x04;
    pub const DOUBLE: u8 = 0x05;
    pub const LONGLONG: u8 = 0x08;
    pub const INT24: u8 = 0x09;
    pub const YEAR: u8 = 0x0d;
    pub const BIT: u8 = 0x10;
    pub const JSON: u8 = 0xf5;
    pub const NEWDECIMAL: u8 = 0xf6;
    pub const GEOMETRY: u8 = 0xff;
}

/// Unknown metadata (`thaw explain`, unit tests): a string in utf8mb4.
impl Default for ColMeta {
    fn default() -> Self {
        ColMeta { col_type: 0xfd, decimals: 0, charset: 0, flags: 0, length: 0 }
    }
}

impl ColMeta {
    /// An exact number as the text protocol prints it (integers, DECIMAL).
    pub fn is_exact_number(&self) -> bool {
        use types::*;
        matches!(self.col_type, DECIMAL | NEWDECIMAL | TINY | SHORT | LONG | LONGLONG | INT24 | YEAR)
    }

    pub fn is_decimal(&self) -> bool {
        matches!(self.col_type, types::DECIMAL | types::NEWDECIMAL)
    }

    /// A value of this type cannot be compared exactly through a literal
    /// (FLOAT prints rounded; BIT, JSON and GEOMETRY compare by other rules).
    pub fn is_inexact(&self) -> bool {
        use types::*;
        matches!(self.col_type, FLOAT | DOUBLE | BIT | JSON | GEOMETRY)
    }

    pub fn unsigned(&self) -> bool {
        self.flags & 0x20 != 0
    }
}

/// A governed row: schema and table as the server reports them (folded to
/// lowercase when lower_case_table_names says names compare that way) and
/// the key value, canonical for numeric keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowId {
    pub schema: String,
    pub table: String,
    pub key: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CapturedRow {
    /// Last-seen values by column (lowercase org_name); None = NULL.
    pub values: BTreeMap<String, Option<Vec<u8>>>,
    pub meta: BTreeMap<String, ColMeta>,
    pub key_column: String,
    pub key_meta: ColMeta,
    /// The transaction holds the row lock and `values` is what the row holds.
    pub protected: bool,
    /// The app saw this row in a form thaw could not attribute (an
    /// expression, a view): its last-seen values are not known.
    pub uncertain: bool,
    /// How many result sets showed this row (a savepoint compares it).
    pub reads: u64,
    /// The values the read that captured the row showed.
    pub entry: BTreeMap<String, Option<Vec<u8>>>,
}

impl CapturedRow {
    /// In the protection window: a statement that is not proven safe must
    /// re-lock and validate this row first.
    pub fn in_window(&self) -> bool {
        !self.protected || self.uncertain
    }
}

/// What to capture from the rows of an unlocked read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureSpec {
    /// The rule's table name.
    pub table: String,
    /// Key column (lowercase).
    pub key_column: String,
    /// The key literal of the read's WHERE, canonical: the row is filed
    /// under it when the result does not show the key column.
    pub key_literal: Option<String>,
    /// False when the key column's name in the result may belong to an
    /// expression (`SELECT x AS id`): then only `key_literal` is used.
    pub key_from_row: bool,
    /// Kept for `explain`: the rule's balance and CAS columns.
    pub columns: Vec<String>,
}

/// How the session updates captures after a rewritten write succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureUpdate {
    /// The app now believes `column` holds `value` (None = NULL), as the
    /// column stores it (DECIMAL scale applied).
    Set { schema: String, table: String, key: String, column: String, value: Option<String> },
    /// The value is no longer known (the write was an expression).
    Forget { schema: String, table: String, key: String, column: String },
}

/// How a result set's rows update captures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The rows of a read thaw unlocked: new rows enter, unprotected.
    Unlocked,
    /// A read that kept its lock: known rows become protected when every
    /// captured column was shown.
    Locked,
    /// A plain read: known rows get their last-seen values updated.
    Plain,
}

/// Captured rows of one connection's transaction.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Captures {
    rows: BTreeMap<RowId, CapturedRow>,
    /// lower_case_table_names != 0: schema and table names compare folded.
    pub fold_case: bool,
    /// A result showed an unprotected row with values other than the app
    /// last saw: a concurrent change the locked flow would have kept out.
    /// The app now knows something it could not know direct, so the
    /// transaction cannot go on (the session rolls it back, 1213).
    pub diverged: bool,
}

/// Two values of a column as the text protocol shows them: numerically for
/// exact numbers (`150` and `150.00` are the same BIGINT), else byte for byte.
pub fn same_value(meta: &ColMeta, a: &Option<Vec<u8>>, b: &Option<Vec<u8>>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) if x != y && meta.is_exact_number() => {
            let num = |v: &[u8]| std::str::from_utf8(v).ok().and_then(super::decimal::Decimal::parse).map(|d| d.normalized());
            matches!((num(x), num(y)), (Some(p), Some(q)) if p == q)
        }
        _ => a == b,
    }
}

/// The key value as captures file it: canonical for numbers.
pub fn canonical_key(text: &str, numeric: bool) -> String {
    if numeric { canonical_number(text).unwrap_or_else(|| text.to_string()) } else { text.to_string() }
}

impl Captures {
    pub fn with_fold_case(fold_case: bool) -> Self {
        Captures { rows: BTreeMap::new(), fold_case, diverged: false }
    }

    pub fn id(&self, schema: &str, table: &str, key: &str) -> RowId {
        let f = |s: &str| if self.fold_case { s.to_lowercase() } else { s.to_string() };
        RowId { schema: f(schema), table: f(table), key: key.to_string() }
    }

    /// Forget everything (end of transaction, reset); keeps `fold_case`.
    pub fn clear(&mut self) {
        self.rows.clear();
        self.diverged = false;
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Some row is in the protection window.
    pub fn has_window(&self) -> bool {
        self.rows.values().any(CapturedRow::in_window)
    }

    /// Rows of `table` (any schema, names compared case-insensitively: a
    /// statement's spelling may differ) in the window.
    pub fn table_in_window(&self, table: &str) -> bool {
        self.rows.iter().any(|(id, r)| r.in_window() && id.table.eq_ignore_ascii_case(table))
    }

    /// Some row of `table` (any schema) is captured.
    pub fn holds_table(&self, table: &str) -> bool {
        self.rows.keys().any(|id| id.table.eq_ignore_ascii_case(table))
    }

    /// Every captured row, in the window or not (`thaw explain`).
    pub fn rows(&self) -> impl Iterator<Item = (&RowId, &CapturedRow)> {
        self.rows.iter()
    }

    pub fn window(&self) -> impl Iterator<Item = (&RowId, &CapturedRow)> {
        self.rows.iter().filter(|(_, r)| r.in_window())
    }

    pub fn get(&self, id: &RowId) -> Option<&CapturedRow> {
        self.rows.get(id)
    }

    pub fn has_row(&self, id: &RowId) -> bool {
        self.rows.contains_key(id)
    }

    /// `None`: not captured (or not text); `Some(None)`: captured NULL.
    pub fn value(&self, id: &RowId, column: &str) -> Option<Option<&str>> {
        match self.rows.get(id)?.values.get(&column.to_ascii_lowercase())? {
            None => Some(None),
            Some(b) => std::str::from_utf8(b).ok().map(Some),
        }
    }

    /// One row of a result set: `cols` are (org_name, meta, value) of the
    /// columns that came from this row's table alias.
    pub fn record(&mut self, id: RowId, key_column: &str, key_meta: ColMeta, cols: &[(String, ColMeta, Option<Vec<u8>>)], seen: Seen) {
        if seen != Seen::Unlocked && !self.rows.contains_key(&id) {
            return;
        }
        let fresh = !self.rows.contains_key(&id);
        let row =
            self.rows.entry(id).or_insert_with(|| CapturedRow { key_column: key_column.to_string(), key_meta, ..CapturedRow::default() });
        row.reads += 1;
        if !fresh && !row.protected && !row.uncertain {
            for (name, meta, v) in cols {
                if let Some(old) = row.values.get(&name.to_ascii_lowercase())
                    && !same_value(meta, old, v)
                {
                    self.diverged = true;
                }
            }
        }
        for (name, meta, v) in cols {
            let n = name.to_ascii_lowercase();
            if fresh {
                row.entry.insert(n.clone(), v.clone());
            }
            row.values.insert(n.clone(), v.clone());
            row.meta.insert(n, *meta);
        }
        if seen == Seen::Locked {
            // A locked read shows the truth; protected when nothing captured is left stale.
            let shown = |c: &String| cols.iter().any(|(n, _, _)| n.eq_ignore_ascii_case(c));
            if row.values.keys().all(shown) {
                row.protected = true;
                row.uncertain = false;
            }
        }
    }

    /// The app saw rows of this table without provenance or key.
    pub fn mark_uncertain(&mut self, schema: Option<&str>, table: &str) {
        for (id, r) in self.rows.iter_mut() {
            if id.table.eq_ignore_ascii_case(table) && schema.is_none_or(|s| id.schema.eq_ignore_ascii_case(s)) {
                r.uncertain = true;
            }
        }
    }

    /// ROLLBACK TO SAVEPOINT: the server undid the writes since `snap`, not
    /// the reads. A row as it was at the savepoint and not shown since gets
    /// the savepoint's values back; a row shown since (its last-seen value
    /// may be newer than the savepoint's) or first read after it keeps what
    /// is known but becomes uncertain, so a write to it is validated first.
    pub fn rollback_to(&mut self, snap: &Captures) {
        for (id, row) in self.rows.iter_mut() {
            match snap.rows.get(id) {
                Some(old) if old.reads == row.reads => {
                    let protected = row.protected && old.protected;
                    *row = old.clone();
                    row.protected = protected;
                }
                Some(old) => {
                    row.values = old.values.clone();
                    row.uncertain = true;
                    row.protected = false;
                }
                None => {
                    // First read after the savepoint: the writes since are
                    // undone, so the app's view is what that read showed.
                    row.values = row.entry.clone();
                    row.uncertain = row.reads > 1;
                    row.protected = false;
                }
            }
        }
    }

    /// ROLLBACK TO a savepoint thaw cannot place: any write since some
    /// unknown point is undone, and the locks taken since may be released.
    /// Every row's last-seen values become unknown.
    pub fn rollback_to_unknown(&mut self) {
        for row in self.rows.values_mut() {
            row.uncertain = true;
            row.protected = false;
        }
    }

    /// Validation re-locked the row and found the captured values.
    pub fn set_protected(&mut self, id: &RowId) {
        if let Some(r) = self.rows.get_mut(id) {
            r.protected = true;
            r.uncertain = false;
        }
    }

    /// Nothing is known to be locked any more (a replay re-ran the
    /// transaction without thaw's re-locks).
    pub fn unprotect_all(&mut self) {
        for r in self.rows.values_mut() {
            r.protected = false;
        }
    }

    /// After a guarded write the transaction holds the row's lock, but the
    /// captured values may differ from the row (a delta added to a
    /// concurrent change), so the row's window state does not change.
    pub fn apply(&mut self, updates: &[CaptureUpdate]) {
        for u in updates {
            match u {
                CaptureUpdate::Set { schema, table, key, column, value } => {
                    let id = self.id(schema, table, key);
                    if let Some(row) = self.rows.get_mut(&id) {
                        row.values.insert(column.to_ascii_lowercase(), value.clone().map(String::into_bytes));
                    }
                }
                CaptureUpdate::Forget { schema, table, key, column } => {
                    let id = self.id(schema, table, key);
                    if let Some(row) = self.rows.get_mut(&id) {
                        row.values.remove(&column.to_ascii_lowercase());
                        row.uncertain = true;
                    }
                }
            }
        }
    }

    /// Record one value directly (`thaw explain --captured`, tests).
    pub fn seed(&mut self, schema: &str, table: &str, key: &str, column: &str, value: Option<String>) {
        let id = self.id(schema, table, key);
        let row = self.rows.entry(id).or_default();
        row.values.insert(column.to_ascii_lowercase(), value.map(String::into_bytes));
    }

    /// Text-protocol row of an unlocked read by column name only (no
    /// schema or metadata): `thaw explain` and unit tests.
    pub fn record_row(&mut self, spec: &CaptureSpec, column_names: &[&str], values: &[Option<&[u8]>]) {
        let find = |col: &str| column_names.iter().position(|n| n.eq_ignore_ascii_case(col));
        let key = spec
            .key_from_row
            .then(|| find(&spec.key_column))
            .flatten()
            .and_then(|i| values.get(i).copied().flatten())
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(|s| canonical_key(s, canonical_number(s).is_some()))
            .or_else(|| spec.key_literal.clone());
        let Some(key) = key else { return };
        let cols: Vec<(String, ColMeta, Option<Vec<u8>>)> = column_names
            .iter()
            .zip(values)
            .filter(|(n, _)| !n.eq_ignore_ascii_case(&spec.key_column))
            .map(|(n, v)| (n.to_ascii_lowercase(), ColMeta::default(), v.map(<[u8]>::to_vec)))
            .collect();
        let id = self.id("", &spec.table, &key);
        self.record(id, &spec.key_column, ColMeta::default(), &cols, Seen::Unlocked);
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
        let id = c.id("", "users", "8");
        c.record_row(
            &spec(),
            &["id", "username", "balance", "frozen_balance"],
            &[Some(b"8"), Some(b"bob"), Some(b"2000.00"), Some(b"616.00")],
        );
        assert_eq!(c.value(&id, "frozen_balance"), Some(Some("616.00")));
        assert_eq!(c.value(&id, "username"), Some(Some("bob")), "every column the app saw");
        assert!(c.holds_table("USERS"));
        assert!(c.has_window());
        c.record_row(&spec(), &["ID", "FROZEN_BALANCE"], &[Some(b"8"), None]);
        assert_eq!(c.value(&id, "frozen_balance"), Some(None));
        assert_eq!(c.value(&id, "balance"), Some(Some("2000.00")));
        c.apply(&[CaptureUpdate::Set {
            schema: "".into(),
            table: "users".into(),
            key: "8".into(),
            column: "frozen_balance".into(),
            value: Some("1232".into()),
        }]);
        assert_eq!(c.value(&id, "frozen_balance"), Some(Some("1232")));
        c.apply(&[CaptureUpdate::Forget { schema: "".into(), table: "users".into(), key: "8".into(), column: "balance".into() }]);
        assert_eq!(c.value(&id, "balance"), None);
        c.clear();
        assert!(c.is_empty());
    }

    #[test]
    fn plain_reads_update_known_rows_only_and_locked_reads_protect() {
        let mut c = Captures::default();
        let id = c.id("db", "users", "8");
        let m = ColMeta::default();
        let cols = |v: &[u8]| vec![("balance".to_string(), m, Some(v.to_vec()))];
        c.record(c.id("db", "users", "9"), "id", m, &cols(b"1"), Seen::Plain);
        assert!(c.is_empty(), "a plain read does not start a capture");
        c.record(id.clone(), "id", m, &cols(b"5"), Seen::Unlocked);
        c.record(id.clone(), "id", m, &cols(b"7"), Seen::Plain);
        assert_eq!(c.value(&id, "balance"), Some(Some("7")));
        assert!(c.has_window());
        c.record(id.clone(), "id", m, &cols(b"9"), Seen::Locked);
        assert!(!c.has_window());
        c.mark_uncertain(Some("DB"), "USERS");
        assert!(c.has_window());
        assert!(!c.has_row(&c.id("other", "users", "8")), "schemas never mix");
    }

    #[test]
    fn fold_case_follows_lower_case_table_names() {
        let c = Captures::with_fold_case(true);
        assert_eq!(c.id("Db", "Users", "k"), c.id("db", "users", "k"));
        let c = Captures::default();
        assert_ne!(c.id("Db", "Users", "k"), c.id("db", "users", "k"));
    }

    #[test]
    fn key_from_literal_when_row_has_no_key() {
        let mut c = Captures::default();
        c.record_row(&spec(), &["balance"], &[Some(b"5")]);
        assert_eq!(c.value(&c.id("", "users", "8"), "balance"), Some(Some("5")));
        let mut s = spec();
        s.key_literal = None;
        let mut c = Captures::default();
        c.record_row(&s, &["balance"], &[Some(b"5")]);
        assert!(c.is_empty(), "no key at all: ignored");
    }

    #[test]
    fn non_utf8_value_is_kept_as_bytes_but_not_text() {
        let mut c = Captures::default();
        c.record_row(&spec(), &["id", "balance"], &[Some(b"8"), Some(&[0xff, 0xfe])]);
        let id = c.id("", "users", "8");
        assert_eq!(c.value(&id, "balance"), None);
        assert_eq!(c.get(&id).unwrap().values["balance"], Some(vec![0xff, 0xfe]));
    }
}
