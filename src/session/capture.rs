//! Collects the rows of a text result set the rules asked to capture
//! (the check read whose lock thaw removed).
use crate::wire::packets::lenenc_str;
use mysql_common::io::ParseBuf;
use mysql_common::packets::Column;
use mysql_common::proto::MyDeserialize;

#[derive(Debug, Default)]
pub struct RowCollector {
    pub names: Vec<String>,
    pub rows: Vec<Vec<Option<Vec<u8>>>>,
    /// More than one result set, or a malformed packet: capture nothing.
    pub spoiled: bool,
}

impl RowCollector {
    pub fn column(&mut self, def: &[u8]) {
        match Column::deserialize((), &mut ParseBuf(def)) {
            Ok(c) => {
                let org = c.org_name_ref();
                let name = if org.is_empty() { c.name_ref() } else { org };
                self.names.push(String::from_utf8_lossy(name).into_owned());
            }
            Err(_) => self.spoiled = true,
        }
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
