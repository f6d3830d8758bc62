//! Values thaw writes into SQL, immune to the connection's character set.
use crate::rules::captures::ColMeta;
use crate::rules::decimal::Decimal;

/// `col = <last seen>`, written so that no connection character set can
/// change its meaning: exact numbers as bare ASCII numbers, everything else
/// as a hex literal with the character set the value was sent in.
pub(crate) fn cas_condition(col_sql: &str, v: Option<&[u8]>, meta: &ColMeta) -> Option<String> {
    let Some(v) = v else { return Some(format!("{col_sql} IS NULL")) };
    if meta.is_inexact() {
        return None;
    }
    if meta.is_exact_number() {
        let text = std::str::from_utf8(v).ok()?;
        return (Decimal::parse(text).is_some() && text.bytes().all(|b| b.is_ascii_digit() || b == b'-' || b == b'.'))
            .then(|| format!("{col_sql} = {text}"));
    }
    Some(format!("{col_sql} = {}", hex_literal(v, meta.charset)?))
}

/// `_utf8mb4 X'..'`: a string literal no quoting rule or multi-byte
/// character set can reinterpret. Unknown character sets are refused.
pub(crate) fn hex_literal(v: &[u8], charset: u16) -> Option<String> {
    let name = charset_name(charset)?;
    let mut out = String::with_capacity(v.len() * 2 + 12);
    if name != "binary" {
        out.push('_');
        out.push_str(name);
        out.push(' ');
    }
    out.push_str("X'");
    for b in v {
        out.push_str(&format!("{b:02X}"));
    }
    out.push('\'');
    Some(out)
}

/// Character set of a collation id as column definitions report it (0:
/// unknown metadata, as in `thaw explain`, taken as utf8mb4).
fn charset_name(id: u16) -> Option<&'static str> {
    Some(match id {
        0 | 45 | 46 | 224..=247 | 255 | 2048..=2303 => "utf8mb4",
        33 | 83 | 192..=215 | 223 | 576..=579 | 1024..=1279 => "utf8mb3",
        5 | 8 | 15 | 31 | 47 | 48 | 49 | 94 => "latin1",
        11 | 65 => "ascii",
        63 => "binary",
        28 | 87 => "gbk",
        13 | 88 => "sjis",
        1 | 84 => "big5",
        95 | 96 => "cp932",
        24 | 86 => "gb2312",
        12 | 91 => "ujis",
        97 | 98 => "eucjpms",
        19 | 85 => "euckr",
        54 | 55 | 101..=124 | 608..=611 => "utf16",
        _ => return None,
    })
}
