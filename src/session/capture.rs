//! Collects the rows of a text result set the rules asked to capture
//! (the check read whose lock thaw removed).
use crate::wire::packets::lenenc_str;

#[derive(Debug, Default)]
pub struct RowCollector {
    pub names: Vec<String>,
    pub rows: Vec<Vec<Option<Vec<u8>>>>,
    /// More than one result set, or a malformed packet: capture nothing.
    pub spoiled: bool,
}

impl RowCollector {
    /// A column definition: catalog, schema, table, org_table, name,
    /// org_name come first as length-encoded strings, with or without
    /// MariaDB's extended type info after them; nothing else is needed.
    pub fn column(&mut self, def: &[u8]) {
        let mut fields = [&[][..]; 6];
        let mut i = 0;
        for f in fields.iter_mut() {
            match def.get(i..).and_then(lenenc_str) {
                Some((v, used)) => {
                    *f = v.unwrap_or_default();
                    i += used;
                }
                None => {
                    self.spoiled = true;
                    return;
                }
            }
        }
        let (name, org) = (fields[4], fields[5]);
        let chosen = if org.is_empty() { name } else { org };
        self.names.push(String::from_utf8_lossy(chosen).into_owned());
    }

    pub fn row(&mut self, p: &[u8]) {
        let mut values = Vec::with_capacity(self.names.len());
        let mut i = 0;
        for _ in 0..self.names.len() {
            match p.get(i..).and_then(lenenc_str) {
                Some((v, used)) => {
                    values.push(v.map(<[u8]>::to_vec));
                    i += used;
                }
                None => {
                    self.spoiled = true;
                    return;
                }
            }
        }
        self.rows.push(values);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::packets::put_lenenc_str;

    fn def(name: &str, org: &str, extended: bool) -> Vec<u8> {
        let mut p = Vec::new();
        for s in ["def", "billing", "u", "users", name, org] {
            put_lenenc_str(&mut p, s.as_bytes());
        }
        if extended {
            put_lenenc_str(&mut p, b"\x00\x04json");
        }
        p.extend_from_slice(&[0x0c, 0x3f, 0, 0x14, 0, 0, 0, 8, 0x03, 0x42, 0, 0, 0]);
        p
    }

    #[test]
    fn names_with_and_without_extended_metadata() {
        let mut r = RowCollector::default();
        r.column(&def("b", "balance", false));
        r.column(&def("frozen", "frozen_balance", true));
        r.column(&def("x", "", false));
        assert_eq!(r.names, ["balance", "frozen_balance", "x"]);
        let mut row = Vec::new();
        put_lenenc_str(&mut row, b"100");
        row.push(0xFB);
        put_lenenc_str(&mut row, b"");
        r.row(&row);
        assert_eq!(r.rows, vec![vec![Some(b"100".to_vec()), None, Some(Vec::new())]]);
        assert!(!r.spoiled);
        r.row(&[0x05, b'a']);
        assert!(r.spoiled);
    }
}
