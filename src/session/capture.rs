//! The capture sink of the response reader: reads column definitions
//! (schema, table alias, org_table, org_name, type) and text rows, and
//! updates the transaction's captures with every governed row a result set
//! shows together with its key, whoever wrote the SELECT.
use crate::rules::{CaptureSpec, Captures, ColMeta, RuleSet, Seen, canonical_key};
use crate::wire::binary::{BinColumn, row_as_text};
use crate::wire::packets::lenenc_str;

#[derive(Debug, Clone)]
struct ColDef {
    schema: String,
    alias: String,
    org_table: String,
    org_name: String,
    meta: ColMeta,
}

/// Columns of one governed table alias in a result set.
#[derive(Debug)]
struct Group {
    schema: String,
    alias: String,
    org_table: String,
    key_column: String,
    key: Option<usize>,
    cols: Vec<usize>,
    /// The rows of the read thaw unlocked.
    unlocked: bool,
}

/// Holds the captures while the response streams by (the session's copy is
/// taken out and put back after the relay).
pub struct ResultCapture<'r> {
    pub rules: &'r RuleSet,
    pub captures: Captures,
    /// The read thaw unlocked, if this statement is one.
    pub unlocked: Option<CaptureSpec>,
    /// How the other governed rows were read.
    pub seen: Seen,
    cols: Vec<ColDef>,
    groups: Option<Vec<Group>>,
    pub rows: u64,
    /// Rows of the unlocked read: more than one means the key did not pin one row.
    pub unlocked_rows: u64,
    /// A malformed packet: the rows shown could not be read.
    pub spoiled: bool,
    /// Binary-protocol rows (COM_STMT_EXECUTE), read as their text form.
    binary: bool,
}

impl<'r> ResultCapture<'r> {
    pub fn new(rules: &'r RuleSet, captures: Captures, unlocked: Option<CaptureSpec>, seen: Seen, binary: bool) -> Self {
        ResultCapture { rules, captures, unlocked, seen, cols: Vec::new(), groups: None, rows: 0, unlocked_rows: 0, spoiled: false, binary }
    }

    /// A new result set starts.
    pub fn result_set(&mut self) {
        self.cols.clear();
        self.groups = None;
    }

    /// catalog, schema, table, org_table, name, org_name as length-encoded
    /// strings, MariaDB's optional extended metadata, then the fixed part.
    pub fn column(&mut self, def: &[u8]) {
        let mut fields: [&[u8]; 6] = [&[]; 6];
        let mut i = 0;
        for f in fields.iter_mut() {
            match def.get(i..).and_then(lenenc_str) {
                Some((v, used)) => {
                    *f = v.unwrap_or_default();
                    i += used;
                }
                None => return self.spoil(),
            }
        }
        // Extended metadata (MariaDB) is one more length-encoded string when
        // the fixed part's 0x0c marker is not next.
        if def.get(i) != Some(&0x0c) {
            match def.get(i..).and_then(lenenc_str) {
                Some((_, used)) => i += used,
                None => return self.spoil(),
            }
        }
        let Some(fixed) = def.get(i..i + 13).filter(|f| f[0] == 0x0c) else { return self.spoil() };
        let meta = ColMeta {
            charset: u16::from_le_bytes([fixed[1], fixed[2]]),
            col_type: fixed[7],
            flags: u16::from_le_bytes([fixed[8], fixed[9]]),
            decimals: fixed[10],
            length: u32::from_le_bytes([fixed[3], fixed[4], fixed[5], fixed[6]]),
        };
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        self.cols.push(ColDef { schema: s(fields[1]), alias: s(fields[2]), org_table: s(fields[3]), org_name: s(fields[5]), meta });
    }

    /// A row too large to read went by: its governed values are not known.
    pub fn row_not_read(&mut self) {
        if self.groups.is_none() {
            let g = self.build_groups();
            self.groups = Some(g);
        }
        let groups = self.groups.take().unwrap_or_default();
        self.rows += 1;
        if !groups.is_empty() {
            self.spoiled = true;
            for g in &groups {
                self.captures.mark_uncertain(Some(&g.schema), &g.org_table);
            }
        }
        self.groups = Some(groups);
    }

    fn spoil(&mut self) {
        self.spoiled = true;
        self.groups = Some(Vec::new());
    }

    fn build_groups(&mut self) -> Vec<Group> {
        let mut groups: Vec<Group> = Vec::new();
        for (i, c) in self.cols.iter().enumerate() {
            if c.org_table.is_empty() || c.org_name.is_empty() {
                continue;
            }
            let Some(rule) = self.rules.table(&c.org_table) else { continue };
            // Last-writer-wins columns prove nothing and are never compared.
            if rule.class_of(&c.org_name.to_ascii_lowercase()) == crate::rules::ColumnClass::LastWriterWins {
                continue;
            }
            let g = match groups.iter_mut().position(|g| g.schema == c.schema && g.org_table == c.org_table && g.alias == c.alias) {
                Some(p) => &mut groups[p],
                None => {
                    let unlocked = self.unlocked.as_ref().is_some_and(|u| u.table.eq_ignore_ascii_case(&c.org_table));
                    groups.push(Group {
                        schema: c.schema.clone(),
                        alias: c.alias.clone(),
                        org_table: c.org_table.clone(),
                        key_column: rule.key.clone(),
                        key: None,
                        cols: Vec::new(),
                        unlocked,
                    });
                    groups.last_mut().expect("pushed")
                }
            };
            if c.org_name.eq_ignore_ascii_case(&g.key_column) {
                g.key.get_or_insert(i);
            } else {
                g.cols.push(i);
            }
        }
        groups
    }

    /// The row's values in their text form.
    fn values(&self, p: &[u8]) -> Option<Vec<Option<Vec<u8>>>> {
        if self.binary {
            let cols: Vec<BinColumn> =
                self.cols.iter().map(|c| BinColumn { col_type: c.meta.col_type, flags: c.meta.flags, decimals: c.meta.decimals }).collect();
            return row_as_text(p, &cols);
        }
        let mut values = Vec::with_capacity(self.cols.len());
        let mut i = 0;
        for _ in 0..self.cols.len() {
            let (v, used) = p.get(i..).and_then(lenenc_str)?;
            values.push(v.map(<[u8]>::to_vec));
            i += used;
        }
        Some(values)
    }

    pub fn row(&mut self, p: &[u8]) {
        if self.groups.is_none() {
            let g = self.build_groups();
            self.groups = Some(g);
        }
        let groups = self.groups.take().unwrap_or_default();
        if groups.is_empty() {
            self.groups = Some(groups);
            return;
        }
        self.rows += 1;
        let Some(owned) = self.values(p) else {
            self.spoiled = true;
            for g in &groups {
                self.captures.mark_uncertain(Some(&g.schema), &g.org_table);
            }
            self.groups = Some(groups);
            return;
        };
        let values: Vec<Option<&[u8]>> = owned.iter().map(|v| v.as_deref()).collect();
        for g in &groups {
            let key_meta = g.key.map(|k| self.cols[k].meta).unwrap_or_default();
            let key = match g.key {
                Some(k) => values[k].and_then(|v| std::str::from_utf8(v).ok()).map(|s| canonical_key(s, key_meta.is_exact_number())),
                None if g.unlocked => self.unlocked.as_ref().and_then(|u| u.key_literal.clone()),
                None => None,
            };
            let Some(key) = key else {
                // Governed values without the row they belong to.
                self.captures.mark_uncertain(Some(&g.schema), &g.org_table);
                continue;
            };
            let cols: Vec<(String, ColMeta, Option<Vec<u8>>)> = g
                .cols
                .iter()
                .map(|&c| (self.cols[c].org_name.to_ascii_lowercase(), self.cols[c].meta, values[c].map(<[u8]>::to_vec)))
                .collect();
            let id = self.captures.id(&g.schema, &g.org_table, &key);
            let seen = if g.unlocked { Seen::Unlocked } else { self.seen };
            if g.unlocked {
                self.unlocked_rows += 1;
            }
            self.captures.record(id, &g.key_column, key_meta, &cols, seen);
        }
        self.groups = Some(groups);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::packets::put_lenenc_str;

    fn def(schema: &str, alias: &str, org_table: &str, name: &str, col_type: u8, extended: bool) -> Vec<u8> {
        let mut p = Vec::new();
        for s in ["def", schema, alias, org_table, name, name] {
            put_lenenc_str(&mut p, s.as_bytes());
        }
        if extended {
            put_lenenc_str(&mut p, b"\x00\x04json");
        }
        p.extend_from_slice(&[0x0c, 0x2d, 0, 0x14, 0, 0, 0, col_type, 0x20, 0, 2, 0, 0]);
        p
    }

    fn row(vals: &[Option<&[u8]>]) -> Vec<u8> {
        let mut p = Vec::new();
        for v in vals {
            match v {
                Some(b) => put_lenenc_str(&mut p, b),
                None => p.push(0xFB),
            }
        }
        p
    }

    fn rules() -> RuleSet {
        RuleSet::from_yaml("tables:\n  - table: users\n    key: id\n    balance_columns: [balance]\n", "t.yaml").unwrap()
    }

    #[test]
    fn join_rows_are_filed_by_their_own_alias_and_key() {
        let rules = rules();
        let mut caps = Captures::default();
        for k in ["8", "9"] {
            let id = caps.id("db", "users", k);
            caps.record(id, "id", ColMeta::default(), &[("balance".into(), ColMeta::default(), Some(b"0".to_vec()))], Seen::Unlocked);
        }
        let mut rc = ResultCapture::new(&rules, caps, None, Seen::Plain, false);
        rc.result_set();
        rc.column(&def("db", "a", "users", "id", 0x08, false));
        rc.column(&def("db", "a", "users", "balance", 0xf6, true));
        rc.column(&def("db", "b", "users", "id", 0x08, false));
        rc.column(&def("db", "b", "users", "balance", 0xf6, false));
        rc.column(&def("", "", "", "x", 0x08, false));
        rc.row(&row(&[Some(b"8"), Some(b"10.00"), Some(b"9"), Some(b"20.00"), Some(b"1")]));
        assert!(!rc.spoiled);
        let c = rc.captures;
        assert_eq!(c.value(&c.id("db", "users", "8"), "balance"), Some(Some("10.00")));
        assert_eq!(c.value(&c.id("db", "users", "9"), "balance"), Some(Some("20.00")));
        assert_eq!(c.get(&c.id("db", "users", "8")).unwrap().meta["balance"].decimals, 2);
    }

    #[test]
    fn governed_values_without_key_make_rows_uncertain() {
        let rules = rules();
        let mut caps = Captures::default();
        let id = caps.id("db", "users", "8");
        caps.record(id.clone(), "id", ColMeta::default(), &[], Seen::Unlocked);
        caps.set_protected(&id);
        let mut rc = ResultCapture::new(&rules, caps, None, Seen::Plain, false);
        rc.result_set();
        rc.column(&def("db", "users", "users", "balance", 0xf6, false));
        rc.row(&row(&[Some(b"1")]));
        assert!(rc.captures.get(&id).unwrap().uncertain);
    }

    #[test]
    fn unlocked_read_files_the_row_under_the_key_literal() {
        let rules = rules();
        let spec = CaptureSpec {
            table: "users".into(),
            key_column: "id".into(),
            key_literal: Some("8".into()),
            key_from_row: true,
            columns: vec![],
        };
        let mut rc = ResultCapture::new(&rules, Captures::default(), Some(spec), Seen::Plain, false);
        rc.result_set();
        rc.column(&def("db", "users", "users", "balance", 0xf6, false));
        rc.row(&row(&[Some(b"5.00")]));
        let c = rc.captures;
        assert_eq!(c.value(&c.id("db", "users", "8"), "balance"), Some(Some("5.00")));
        assert!(c.has_window());
    }
}
