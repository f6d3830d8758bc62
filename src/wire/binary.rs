//! The binary protocol of prepared statements: COM_STMT_EXECUTE parameters
//! (NULL bitmap, bound types, values) and binary result rows. Decoding only;
//! what a value means in SQL is `sql::bind`'s business.

/// Column and parameter type codes (MYSQL_TYPE_*).
pub mod types {
    pub const DECIMAL: u8 = 0x00;
    pub const TINY: u8 = 0x01;
    pub const SHORT: u8 = 0x02;
    pub const LONG: u8 = 0x03;
    pub const FLOAT: u8 = 0x04;
    pub const DOUBLE: u8 = 0x05;
    pub const NULL: u8 = 0x06;
    pub const TIMESTAMP: u8 = 0x07;
    pub const LONGLONG: u8 = 0x08;
    pub const INT24: u8 = 0x09;
    pub const DATE: u8 = 0x0a;
    pub const TIME: u8 = 0x0b;
    pub const DATETIME: u8 = 0x0c;
    pub const YEAR: u8 = 0x0d;
    pub const VARCHAR: u8 = 0x0f;
    pub const BIT: u8 = 0x10;
    pub const JSON: u8 = 0xf5;
    pub const NEWDECIMAL: u8 = 0xf6;
    pub const ENUM: u8 = 0xf7;
    pub const SET: u8 = 0xf8;
    pub const TINY_BLOB: u8 = 0xf9;
    pub const MEDIUM_BLOB: u8 = 0xfa;
    pub const LONG_BLOB: u8 = 0xfb;
    pub const BLOB: u8 = 0xfc;
    pub const VAR_STRING: u8 = 0xfd;
    pub const STRING: u8 = 0xfe;
    pub const GEOMETRY: u8 = 0xff;
}

/// The UNSIGNED bit of a bound parameter's type flags.
const UNSIGNED_PARAM: u8 = 0x80;
/// Column definition flags.
const UNSIGNED_COLUMN: u16 = 0x20;
const ZEROFILL_COLUMN: u16 = 0x40;

/// Offset of the statement id, flags and the parameter block in COM_STMT_EXECUTE.
const ID_AT: usize = 1;
const FLAGS_AT: usize = 5;
const PARAMS_AT: usize = 10;

/// Cursor types a client may ask for in the execute flags.
pub const CURSOR_FLAGS: u8 = 0x07;

#[derive(Debug, Clone, PartialEq)]
pub enum BinValue {
    Null,
    Int(i64),
    UInt(u64),
    Float(f32),
    Double(f64),
    /// String-typed bytes (strings, DECIMAL, ENUM, JSON, BIT, ...), with their type.
    Bytes(u8, Vec<u8>),
    /// Year, month, day, hour, minute, second, microsecond; `None` for the
    /// zero-length (all-zero) encoding.
    DateTime(u8, Option<[u32; 7]>),
    /// Negative, days, hours, minutes, seconds, microseconds.
    Time {
        negative: bool,
        days: u32,
        h: u8,
        m: u8,
        s: u8,
        micros: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    #[error("COM_STMT_EXECUTE is shorter than its header")]
    Short,
    #[error("parameter {0}: value runs past the end of the packet")]
    Truncated(usize),
    #[error("the parameter types were never sent")]
    NoTypes,
    #[error("parameter {0}: type 0x{1:02x} thaw does not decode")]
    UnknownType(usize, u8),
}

/// What a COM_STMT_EXECUTE says, for a statement of `params` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Execute {
    pub stmt_id: u32,
    pub flags: u8,
    /// Bound types (type, flags) per parameter: this packet's or, when it
    /// sent none, `previous`.
    pub types: Vec<(u8, u8)>,
    /// This packet carried the types itself.
    pub sent_types: bool,
    /// One per parameter; `None` for a parameter sent as long data.
    pub values: Vec<Option<BinValue>>,
}

pub fn stmt_id(p: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(p.get(ID_AT..ID_AT + 4)?.try_into().ok()?))
}

/// The same command for statement `id` (COM_STMT_EXECUTE, CLOSE, RESET,
/// FETCH and SEND_LONG_DATA all start with the id).
pub fn with_stmt_id(p: &[u8], id: u32) -> Vec<u8> {
    let mut out = p.to_vec();
    if let Some(slot) = out.get_mut(ID_AT..ID_AT + 4) {
        slot.copy_from_slice(&id.to_le_bytes());
    }
    out
}

/// Decode a COM_STMT_EXECUTE. `long_data[i]` marks parameters whose value
/// came by COM_STMT_SEND_LONG_DATA (the packet carries neither a NULL bit
/// nor a value for them).
pub fn decode_execute(p: &[u8], params: usize, previous: Option<&[(u8, u8)]>, long_data: &[bool]) -> Result<Execute, BindError> {
    let stmt_id = stmt_id(p).ok_or(BindError::Short)?;
    let flags = *p.get(FLAGS_AT).ok_or(BindError::Short)?;
    if p.len() < PARAMS_AT {
        return Err(BindError::Short);
    }
    if params == 0 {
        return Ok(Execute { stmt_id, flags, types: Vec::new(), sent_types: false, values: Vec::new() });
    }
    let bitmap_len = params.div_ceil(8);
    let bitmap = p.get(PARAMS_AT..PARAMS_AT + bitmap_len).ok_or(BindError::Short)?;
    let mut at = PARAMS_AT + bitmap_len;
    let bound = *p.get(at).ok_or(BindError::Short)?;
    at += 1;
    let sent_types = bound == 1;
    let types: Vec<(u8, u8)> = if sent_types {
        let raw = p.get(at..at + 2 * params).ok_or(BindError::Short)?;
        at += 2 * params;
        raw.chunks_exact(2).map(|c| (c[0], c[1])).collect()
    } else {
        previous.filter(|t| t.len() == params).ok_or(BindError::NoTypes)?.to_vec()
    };
    let mut values = Vec::with_capacity(params);
    for (i, &(ty, tflags)) in types.iter().enumerate() {
        if long_data.get(i).copied().unwrap_or(false) {
            values.push(None);
            continue;
        }
        if bitmap[i / 8] & (1 << (i % 8)) != 0 || ty == types::NULL {
            values.push(Some(BinValue::Null));
            continue;
        }
        let (v, used) = decode_value(&p[at..], ty, tflags & UNSIGNED_PARAM != 0).ok_or(BindError::Truncated(i))?;
        let v = v.ok_or(BindError::UnknownType(i, ty))?;
        at += used;
        values.push(Some(v));
    }
    Ok(Execute { stmt_id, flags, types, sent_types, values })
}

/// The packet with its parameter types written in (new-params-bound = 1):
/// always valid, whatever the server statement was last executed with.
pub fn with_types(p: &[u8], params: usize, types: &[(u8, u8)]) -> Option<Vec<u8>> {
    if params == 0 || types.len() != params {
        return (params == 0).then(|| p.to_vec());
    }
    let at = PARAMS_AT + params.div_ceil(8);
    match *p.get(at)? {
        1 => Some(p.to_vec()),
        0 => {
            let mut out = Vec::with_capacity(p.len() + 2 * params);
            out.extend_from_slice(&p[..at]);
            out.push(1);
            for &(t, f) in types {
                out.extend_from_slice(&[t, f]);
            }
            out.extend_from_slice(&p[at + 1..]);
            Some(out)
        }
        _ => None,
    }
}

/// One value of type `ty`: (value, bytes used). `Some((None, _))` for a type
/// thaw does not know.
fn decode_value(b: &[u8], ty: u8, unsigned: bool) -> Option<(Option<BinValue>, usize)> {
    use types::*;
    let fixed = |n: usize| b.get(..n);
    let int = |n: usize| -> Option<(Option<BinValue>, usize)> {
        let raw = fixed(n)?;
        let mut buf = [0u8; 8];
        buf[..n].copy_from_slice(raw);
        let u = u64::from_le_bytes(buf);
        let v = if unsigned {
            BinValue::UInt(u)
        } else {
            // Sign-extend from n bytes.
            let shift = 64 - 8 * n as u32;
            BinValue::Int(((u << shift) as i64) >> shift)
        };
        Some((Some(v), n))
    };
    match ty {
        TINY => int(1),
        SHORT | YEAR => int(2),
        LONG | INT24 => int(4),
        LONGLONG => int(8),
        FLOAT => Some((Some(BinValue::Float(f32::from_le_bytes(fixed(4)?.try_into().ok()?))), 4)),
        DOUBLE => Some((Some(BinValue::Double(f64::from_le_bytes(fixed(8)?.try_into().ok()?))), 8)),
        DATE | DATETIME | TIMESTAMP => {
            let (len, d) = (*b.first()? as usize, b.get(1..)?);
            let d = d.get(..len)?;
            let v = match len {
                0 => None,
                4 | 7 | 11 => {
                    let mut f = [0u32; 7];
                    f[0] = u32::from(u16::from_le_bytes([d[0], d[1]]));
                    f[1] = u32::from(d[2]);
                    f[2] = u32::from(d[3]);
                    if len >= 7 {
                        f[3] = u32::from(d[4]);
                        f[4] = u32::from(d[5]);
                        f[5] = u32::from(d[6]);
                    }
                    if len == 11 {
                        f[6] = u32::from_le_bytes(d[7..11].try_into().ok()?);
                    }
                    Some(f)
                }
                _ => return None,
            };
            Some((Some(BinValue::DateTime(ty, v)), 1 + len))
        }
        TIME => {
            let (len, d) = (*b.first()? as usize, b.get(1..)?);
            let d = d.get(..len)?;
            let v = match len {
                0 => BinValue::Time { negative: false, days: 0, h: 0, m: 0, s: 0, micros: 0 },
                8 | 12 => BinValue::Time {
                    negative: d[0] == 1,
                    days: u32::from_le_bytes(d[1..5].try_into().ok()?),
                    h: d[5],
                    m: d[6],
                    s: d[7],
                    micros: if len == 12 { u32::from_le_bytes(d[8..12].try_into().ok()?) } else { 0 },
                },
                _ => return None,
            };
            Some((Some(v), 1 + len))
        }
        DECIMAL | NEWDECIMAL | VARCHAR | BIT | JSON | ENUM | SET | TINY_BLOB | MEDIUM_BLOB | LONG_BLOB | BLOB | VAR_STRING | STRING
        | GEOMETRY => {
            let (v, used) = super::packets::lenenc_str(b)?;
            Some((Some(BinValue::Bytes(ty, v?.to_vec())), used))
        }
        _ => Some((None, 0)),
    }
}

/// A column of a binary result set, as its definition says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BinColumn {
    pub col_type: u8,
    pub flags: u16,
    pub decimals: u8,
}

/// A binary result row as the text protocol would show it (what captures
/// and thaw's own re-reads compare). `None` when a value's text form is not
/// certain (ZEROFILL numbers, malformed rows).
pub fn row_as_text(p: &[u8], cols: &[BinColumn]) -> Option<Vec<Option<Vec<u8>>>> {
    if p.first() != Some(&0x00) {
        return None;
    }
    let bitmap_len = (cols.len() + 7 + 2) / 8;
    let bitmap = p.get(1..1 + bitmap_len)?;
    let mut at = 1 + bitmap_len;
    let mut out = Vec::with_capacity(cols.len());
    for (i, c) in cols.iter().enumerate() {
        let bit = i + 2;
        if bitmap[bit / 8] & (1 << (bit % 8)) != 0 {
            out.push(None);
            continue;
        }
        let (v, used) = decode_value(&p[at..], c.col_type, c.flags & UNSIGNED_COLUMN != 0)?;
        at += used;
        out.push(Some(text_of(v?, c)?));
    }
    (at == p.len()).then_some(out)
}

/// The text protocol's form of one binary value of column `c`.
fn text_of(v: BinValue, c: &BinColumn) -> Option<Vec<u8>> {
    let numeric = !matches!(v, BinValue::Bytes(..) | BinValue::DateTime(..) | BinValue::Time { .. });
    if numeric && c.col_type != types::YEAR && c.flags & ZEROFILL_COLUMN != 0 {
        return None;
    }
    let frac = |micros: u32| -> String {
        let d = usize::from(c.decimals.min(6));
        if d == 0 { String::new() } else { format!(".{:06}", micros)[..=d].to_string() }
    };
    let s = match v {
        BinValue::Null => return None,
        BinValue::Int(i) if c.col_type == types::YEAR => format!("{i:04}"),
        BinValue::UInt(u) if c.col_type == types::YEAR => format!("{u:04}"),
        BinValue::Int(i) => i.to_string(),
        BinValue::UInt(u) => u.to_string(),
        // The server prints FLOAT and DOUBLE in their shortest exact form;
        // captures compare numbers by value, so the spelling may differ.
        BinValue::Float(f) => f.to_string(),
        BinValue::Double(d) => d.to_string(),
        BinValue::Bytes(_, b) => return Some(b),
        BinValue::DateTime(ty, f) => {
            let f = f.unwrap_or_default();
            let date = format!("{:04}-{:02}-{:02}", f[0], f[1], f[2]);
            if ty == types::DATE { date } else { format!("{date} {:02}:{:02}:{:02}{}", f[3], f[4], f[5], frac(f[6])) }
        }
        BinValue::Time { negative, days, h, m, s, micros } => {
            let hours = days * 24 + u32::from(h);
            format!("{}{hours:02}:{m:02}:{s:02}{}", if negative { "-" } else { "" }, frac(micros))
        }
    };
    Some(s.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn execute(params: &[(u8, u8, Option<Vec<u8>>)], bound: bool) -> Vec<u8> {
        let mut p = vec![0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0];
        let mut bitmap = vec![0u8; params.len().div_ceil(8)];
        for (i, (_, _, v)) in params.iter().enumerate() {
            if v.is_none() {
                bitmap[i / 8] |= 1 << (i % 8);
            }
        }
        p.extend_from_slice(&bitmap);
        p.push(u8::from(bound));
        if bound {
            for (t, f, _) in params {
                p.extend_from_slice(&[*t, *f]);
            }
        }
        for (_, _, v) in params {
            if let Some(v) = v {
                p.extend_from_slice(v);
            }
        }
        p
    }

    #[test]
    fn decodes_every_kind_of_parameter() {
        let ps = vec![
            (types::TINY, 0, Some(vec![0xff])),
            (types::TINY, 0x80, Some(vec![0xff])),
            (types::LONGLONG, 0, Some((-5i64).to_le_bytes().to_vec())),
            (types::LONGLONG, 0x80, Some(u64::MAX.to_le_bytes().to_vec())),
            (types::DOUBLE, 0, Some(95.1f64.to_le_bytes().to_vec())),
            (types::VAR_STRING, 0, Some(b"\x03a'b".to_vec())),
            (types::LONG, 0, None),
            (types::DATETIME, 0, Some(vec![11, 0xe8, 0x07, 12, 1, 13, 14, 15, 0x40, 0xe2, 0x01, 0x00])),
            (types::TIME, 0, Some(vec![8, 1, 2, 0, 0, 0, 3, 4, 5])),
        ];
        let e = decode_execute(&execute(&ps, true), ps.len(), None, &[]).unwrap();
        assert_eq!(e.stmt_id, 7);
        assert!(e.sent_types);
        let v: Vec<BinValue> = e.values.into_iter().map(Option::unwrap).collect();
        assert_eq!(v[0], BinValue::Int(-1));
        assert_eq!(v[1], BinValue::UInt(255));
        assert_eq!(v[2], BinValue::Int(-5));
        assert_eq!(v[3], BinValue::UInt(u64::MAX));
        assert_eq!(v[4], BinValue::Double(95.1));
        assert_eq!(v[5], BinValue::Bytes(types::VAR_STRING, b"a'b".to_vec()));
        assert_eq!(v[6], BinValue::Null);
        assert_eq!(v[7], BinValue::DateTime(types::DATETIME, Some([2024, 12, 1, 13, 14, 15, 123_456])));
        assert_eq!(v[8], BinValue::Time { negative: true, days: 2, h: 3, m: 4, s: 5, micros: 0 });
    }

    #[test]
    fn types_of_the_previous_execute_and_long_data() {
        let ps = [(types::LONG, 0, Some(9i32.to_le_bytes().to_vec())), (types::BLOB, 0, Some(vec![]))];
        let mut p = execute(&ps[..1], false);
        // Re-executed without types: the packet has only the first value.
        assert_eq!(decode_execute(&p, 2, None, &[false, true]), Err(BindError::NoTypes));
        // Bitmap of 1 byte covers both parameters.
        p = execute(&ps[..1], false);
        let prev = [(types::LONG, 0), (types::BLOB, 0)];
        let e = decode_execute(&p, 2, Some(&prev), &[false, true]).unwrap();
        assert_eq!(e.values, vec![Some(BinValue::Int(9)), None]);
        assert!(!e.sent_types);
        let typed = with_types(&p, 2, &prev).unwrap();
        let e2 = decode_execute(&typed, 2, None, &[false, true]).unwrap();
        assert!(e2.sent_types);
        assert_eq!(e2.values, e.values);
    }

    #[test]
    fn truncated_and_unknown_values_are_errors() {
        let ps = vec![(types::LONGLONG, 0, Some(vec![1, 2, 3]))];
        assert_eq!(decode_execute(&execute(&ps, true), 1, None, &[]), Err(BindError::Truncated(0)));
        let ps = vec![(0x42, 0, Some(vec![1]))];
        assert_eq!(decode_execute(&execute(&ps, true), 1, None, &[]), Err(BindError::UnknownType(0, 0x42)));
        assert_eq!(decode_execute(&[0x17, 1, 0], 0, None, &[]), Err(BindError::Short));
    }

    #[test]
    fn statement_ids_are_rewritten_in_place() {
        let p = [0x19, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(stmt_id(&p), Some(u32::MAX));
        assert_eq!(stmt_id(&with_stmt_id(&p, 3)), Some(3));
    }

    #[test]
    fn binary_rows_read_as_text() {
        let cols = [
            BinColumn { col_type: types::LONGLONG, flags: 0, decimals: 0 },
            BinColumn { col_type: types::NEWDECIMAL, flags: 0, decimals: 2 },
            BinColumn { col_type: types::VAR_STRING, flags: 0, decimals: 0 },
            BinColumn { col_type: types::DATETIME, flags: 0, decimals: 3 },
            BinColumn { col_type: types::DATE, flags: 0, decimals: 0 },
            BinColumn { col_type: types::YEAR, flags: 0x20 | ZEROFILL_COLUMN, decimals: 0 },
        ];
        // Null bitmap: offset 2, column 2 (bit 4) is NULL.
        let mut row = vec![0x00, 0b0001_0000];
        row.extend_from_slice(&42i64.to_le_bytes());
        row.extend_from_slice(b"\x06100.50");
        row.extend_from_slice(&[11, 0xe8, 0x07, 12, 1, 13, 14, 15, 0x40, 0xe2, 0x01, 0x00]);
        row.extend_from_slice(&[0]);
        row.extend_from_slice(&2024u16.to_le_bytes());
        let text = row_as_text(&row, &cols).unwrap();
        let s = |i: usize| text[i].as_deref().map(|b| String::from_utf8_lossy(b).into_owned());
        assert_eq!(s(0).as_deref(), Some("42"));
        assert_eq!(s(1).as_deref(), Some("100.50"));
        assert_eq!(s(2), None);
        assert_eq!(s(3).as_deref(), Some("2024-12-01 13:14:15.123"));
        assert_eq!(s(4).as_deref(), Some("0000-00-00"));
        assert_eq!(s(5).as_deref(), Some("2024"));
        // ZEROFILL numbers print padded in text: not certain.
        let zf = [BinColumn { col_type: types::LONG, flags: ZEROFILL_COLUMN, decimals: 0 }];
        assert_eq!(row_as_text(&[0x00, 0, 1, 0, 0, 0], &zf), None);
        // Trailing garbage.
        assert_eq!(row_as_text(&[0x00, 0, 1, 0, 0, 0, 9], &cols[..1]), None);
    }
}
