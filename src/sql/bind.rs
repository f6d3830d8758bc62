//! A prepared statement read as the text protocol would send it: each `?`
//! replaced by a literal that means to the server what the bound value
//! means, so the planner and the safety gate decide exactly as for text.
//!
//! A value is written only when thaw is sure of the equivalence; anything
//! else (a character set thaw cannot quote in, a zero date, NaN, bytes that
//! are not valid in the client character set) is an error, and the caller
//! treats the statement as one it cannot read.
use crate::rules::lex::{LexError, Modes, lex};
use crate::wire::binary::{BinValue, types};
use sqlparser::tokenizer::Token;
use std::ops::Range;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    #[error("the statement text does not tokenize")]
    Lex,
    #[error("executable comment in the statement")]
    ExecutableComment,
    #[error("{found} placeholders in the text, {params} parameters announced")]
    Count { found: usize, params: usize },
    #[error("parameter {0}: {1}")]
    Value(usize, &'static str),
}

/// How the client character set lets thaw quote strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quoting {
    /// utf8mb4: any valid UTF-8.
    Utf8mb4,
    /// utf8 / utf8mb3: valid UTF-8 of at most three bytes per character.
    Utf8mb3,
    /// latin1: every byte is a character.
    Latin1,
    /// ascii: bytes below 0x80 only.
    Ascii,
    /// binary: strings are bytes.
    Binary,
}

impl Quoting {
    /// `None` for a character set in which a quote or backslash byte may be
    /// part of a multi-byte character (GBK, SJIS, ...).
    pub fn of(charset_client: &str) -> Option<Quoting> {
        Some(match charset_client.to_ascii_lowercase().as_str() {
            "utf8mb4" => Quoting::Utf8mb4,
            "utf8" | "utf8mb3" => Quoting::Utf8mb3,
            "latin1" => Quoting::Latin1,
            "ascii" => Quoting::Ascii,
            "binary" => Quoting::Binary,
            _ => return None,
        })
    }

    fn accepts(self, b: &[u8]) -> bool {
        match self {
            Quoting::Utf8mb4 => std::str::from_utf8(b).is_ok(),
            Quoting::Utf8mb3 => std::str::from_utf8(b).is_ok_and(|s| s.chars().all(|c| c.len_utf8() <= 3)),
            Quoting::Latin1 | Quoting::Binary => true,
            Quoting::Ascii => b.is_ascii(),
        }
    }
}

/// Byte ranges of the `?` placeholders of one statement, in order.
pub fn placeholders(sql: &str, modes: Modes) -> Result<Vec<Range<usize>>, BindError> {
    let toks = lex(sql, modes).map_err(|e| match e {
        LexError::ExecutableComment => BindError::ExecutableComment,
        _ => BindError::Lex,
    })?;
    Ok(toks.iter().filter(|t| matches!(&t.token, Token::Placeholder(p) if p == "?")).map(|t| t.start..t.end).collect())
}

/// The text with every placeholder replaced by its value's literal.
pub fn bind(sql: &str, at: &[Range<usize>], values: &[BinValue], modes: Modes, quoting: Quoting) -> Result<String, BindError> {
    if at.len() != values.len() {
        return Err(BindError::Count { found: at.len(), params: values.len() });
    }
    let mut out = String::with_capacity(sql.len() + 16 * values.len());
    let mut last = 0;
    for (i, (r, v)) in at.iter().zip(values).enumerate() {
        out.push_str(&sql[last..r.start]);
        out.push_str(&literal(v, modes, quoting).map_err(|m| BindError::Value(i, m))?);
        last = r.end;
    }
    out.push_str(&sql[last..]);
    Ok(out)
}

/// The SQL literal the server reads as it reads the bound value: integers
/// and doubles as numbers (a double with an exponent, so it stays a double),
/// DECIMAL as an exact number, strings quoted in the client character set
/// (what a string parameter is converted from), blobs as `_binary` strings,
/// temporal values as typed literals.
pub fn literal(v: &BinValue, modes: Modes, quoting: Quoting) -> Result<String, &'static str> {
    // Negative numbers in parentheses: `x-?` must not become `x--5`.
    let signed = |s: String| if s.starts_with('-') { format!("({s})") } else { s };
    Ok(match v {
        BinValue::Null => "NULL".into(),
        BinValue::Int(i) => signed(i.to_string()),
        BinValue::UInt(u) => u.to_string(),
        // The server widens a FLOAT parameter to double.
        BinValue::Float(f) => double(f64::from(*f))?,
        BinValue::Double(d) => double(*d)?,
        BinValue::Bytes(ty, b) => match *ty {
            types::DECIMAL | types::NEWDECIMAL => {
                let s = std::str::from_utf8(b).map_err(|_| "DECIMAL that is not a number")?;
                if !is_plain_decimal(s) {
                    return Err("DECIMAL that is not a plain number");
                }
                signed(s.to_string())
            }
            // An introduced hex literal is a string (a bare X'..' is a number
            // in numeric context), of the binary character set as a blob is.
            types::TINY_BLOB | types::MEDIUM_BLOB | types::LONG_BLOB | types::BLOB | types::GEOMETRY | types::BIT => binary_string(b),
            types::VARCHAR | types::VAR_STRING | types::STRING | types::ENUM | types::SET | types::JSON => {
                if quoting == Quoting::Binary {
                    binary_string(b)
                } else if quoting.accepts(b) {
                    // Latin-1 bytes above 0x7f cannot ride in UTF-8 text.
                    quote(std::str::from_utf8(b).map_err(|_| "string thaw cannot carry in UTF-8 text")?, modes)
                } else {
                    return Err("string not valid in the client character set");
                }
            }
            _ => return Err("value type thaw does not write as a literal"),
        },
        BinValue::DateTime(ty, f) => {
            let f = f.ok_or("zero date")?;
            // A day the month does not have (2024-02-31) has no literal: the
            // server stores it as a zero date with a warning, or refuses it.
            if f[0] > 9999
                || !(1..=12).contains(&f[1])
                || f[2] < 1
                || f[2] > days_in_month(f[0], f[1])
                || f[3] > 23
                || f[4] > 59
                || f[5] > 59
                || f[6] > 999_999
            {
                return Err("date out of range");
            }
            let date = format!("{:04}-{:02}-{:02}", f[0], f[1], f[2]);
            if *ty == types::DATE {
                format!("DATE'{date}'")
            } else {
                format!("TIMESTAMP'{date} {:02}:{:02}:{:02}.{:06}'", f[3], f[4], f[5], f[6])
            }
        }
        BinValue::Time { negative, days, h, m, s, micros } => {
            let hours = u64::from(*days) * 24 + u64::from(*h);
            if hours > 838 || *m > 59 || *s > 59 || *micros > 999_999 {
                return Err("time out of range");
            }
            format!("TIME'{}{hours:02}:{m:02}:{s:02}.{micros:06}'", if *negative { "-" } else { "" })
        }
    })
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Shortest exact digits with an exponent (`9.51e1`): an approximate-value
/// literal, which the server reads back as the same double.
fn double(d: f64) -> Result<String, &'static str> {
    if !d.is_finite() {
        return Err("NaN or infinity");
    }
    let s = format!("{d:e}");
    Ok(if s.starts_with('-') { format!("({s})") } else { s })
}

fn is_plain_decimal(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && (frac.is_empty() || !digits.ends_with('.'))
}

/// A single-quoted string: quotes doubled, and with backslash escapes on,
/// backslashes and NUL escaped (the only characters the server's lexer
/// treats specially inside quotes).
fn quote(s: &str, modes: Modes) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' if modes.backslash_escapes => out.push_str("\\\\"),
            '\0' if modes.backslash_escapes => out.push_str("\\0"),
            _ => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn binary_string(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len() * 2 + 11);
    out.push_str("_binary X'");
    for x in b {
        out.push_str(&format!("{x:02X}"));
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: Modes = Modes { backslash_escapes: true, ansi_quotes: false };

    #[test]
    fn placeholders_outside_literals_and_comments() {
        let sql = "SELECT '?', `?`, ? /* ? */ FROM t WHERE a = ? -- ?\n";
        let at = placeholders(sql, M).unwrap();
        assert_eq!(at.len(), 2);
        let out = bind(sql, &at, &[BinValue::Int(-3), BinValue::Bytes(types::VAR_STRING, b"x'y".to_vec())], M, Quoting::Utf8mb4).unwrap();
        assert_eq!(out, "SELECT '?', `?`, (-3) /* ? */ FROM t WHERE a = 'x''y' -- ?\n");
        assert_eq!(bind(sql, &at, &[BinValue::Null], M, Quoting::Utf8mb4), Err(BindError::Count { found: 2, params: 1 }));
    }

    #[test]
    fn literals() {
        let l = |v: BinValue| literal(&v, M, Quoting::Utf8mb4);
        assert_eq!(l(BinValue::UInt(u64::MAX)).unwrap(), "18446744073709551615");
        assert_eq!(l(BinValue::Double(95.1)).unwrap(), "9.51e1");
        assert_eq!(l(BinValue::Double(-0.5)).unwrap(), "(-5e-1)");
        assert_eq!(l(BinValue::Float(0.1)).unwrap(), format!("{:e}", f64::from(0.1f32)));
        assert!(l(BinValue::Double(f64::NAN)).is_err());
        assert_eq!(l(BinValue::Bytes(types::NEWDECIMAL, b"-12.50".to_vec())).unwrap(), "(-12.50)");
        assert!(l(BinValue::Bytes(types::NEWDECIMAL, b"1e5".to_vec())).is_err());
        assert_eq!(l(BinValue::Bytes(types::BLOB, b"a\\\0'\xff".to_vec())).unwrap(), "_binary X'615C0027FF'");
        assert_eq!(l(BinValue::Bytes(types::VAR_STRING, b"a\\\0'".to_vec())).unwrap(), "'a\\\\\\0'''");
        assert_eq!(l(BinValue::DateTime(types::DATE, Some([2024, 2, 29, 0, 0, 0, 0]))).unwrap(), "DATE'2024-02-29'");
        assert_eq!(
            l(BinValue::DateTime(types::DATETIME, Some([2024, 2, 29, 1, 2, 3, 4]))).unwrap(),
            "TIMESTAMP'2024-02-29 01:02:03.000004'"
        );
        assert!(l(BinValue::DateTime(types::DATETIME, None)).is_err());
        assert!(l(BinValue::DateTime(types::DATE, Some([2024, 2, 30, 0, 0, 0, 0]))).is_err());
        assert!(l(BinValue::DateTime(types::DATE, Some([2023, 2, 29, 0, 0, 0, 0]))).is_err());
        assert!(l(BinValue::DateTime(types::DATE, Some([2000, 2, 29, 0, 0, 0, 0]))).is_ok());
        assert!(l(BinValue::DateTime(types::DATE, Some([1900, 2, 29, 0, 0, 0, 0]))).is_err());
        assert!(l(BinValue::DateTime(types::DATE, Some([2024, 4, 31, 0, 0, 0, 0]))).is_err());
        assert_eq!(l(BinValue::Time { negative: true, days: 1, h: 2, m: 3, s: 4, micros: 5 }).unwrap(), "TIME'-26:03:04.000005'");
        assert!(l(BinValue::Time { negative: false, days: 40, h: 0, m: 0, s: 0, micros: 0 }).is_err());
    }

    #[test]
    fn strings_follow_the_client_character_set_and_modes() {
        let s = |b: &[u8], q: Quoting| literal(&BinValue::Bytes(types::VAR_STRING, b.to_vec()), M, q);
        assert!(s("é".as_bytes(), Quoting::Utf8mb4).is_ok());
        assert!(s(b"\xff", Quoting::Utf8mb4).is_err());
        assert!(s("😀".as_bytes(), Quoting::Utf8mb3).is_err());
        assert!(s(b"\xe9", Quoting::Ascii).is_err());
        assert!(s(b"\xe9", Quoting::Latin1).is_err());
        assert!(s(b"e", Quoting::Latin1).is_ok());
        assert_eq!(s(b"\xe9", Quoting::Binary).unwrap(), "_binary X'E9'");
        let nb = Modes { backslash_escapes: false, ansi_quotes: false };
        assert_eq!(literal(&BinValue::Bytes(types::STRING, b"a\\'".to_vec()), nb, Quoting::Utf8mb4).unwrap(), "'a\\'''");
        assert_eq!(Quoting::of("gbk"), None);
    }
}
