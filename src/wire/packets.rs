//! Parsing of the few server packets thaw must understand (OK, EOF, ERR) and
//! building of the ERR packets thaw sends itself. Everything else is relayed
//! as the original bytes.
use super::conn::MAX_FRAME;

pub const OK: u8 = 0x00;
pub const EOF: u8 = 0xFE;
pub const ERR: u8 = 0xFF;
pub const LOCAL_INFILE: u8 = 0xFB;

pub mod status {
    pub const IN_TRANS: u16 = 0x0001;
    pub const AUTOCOMMIT: u16 = 0x0002;
    pub const MORE_RESULTS: u16 = 0x0008;
    pub const CURSOR_EXISTS: u16 = 0x0040;
    pub const NO_BACKSLASH_ESCAPES: u16 = 0x0200;
    pub const IN_TRANS_READONLY: u16 = 0x2000;
    /// MariaDB only.
    pub const ANSI_QUOTES: u16 = 0x8000;
    /// The bits that describe the session rather than the statement just
    /// run; the others (no index used, cursor, last row sent, slow query,
    /// session state changed, ...) are about one response only.
    pub const SESSION: u16 = IN_TRANS | AUTOCOMMIT | NO_BACKSLASH_ESCAPES | IN_TRANS_READONLY | ANSI_QUOTES;
}

/// A length-encoded integer at the start of `b`: (value, bytes used).
pub fn lenenc_int(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let (n, used) = match first {
        0..=0xFA => return Some((first as u64, 1)),
        0xFC => (2, 3),
        0xFD => (3, 4),
        0xFE => (8, 9),
        _ => return None, // 0xFB is NULL in rows, 0xFF invalid
    };
    let bytes = b.get(1..1 + n)?;
    let mut v = 0u64;
    for (i, x) in bytes.iter().enumerate() {
        v |= (*x as u64) << (8 * i);
    }
    Some((v, used))
}

/// A length-encoded string (`None` for NULL 0xFB): (value, bytes used).
pub fn lenenc_str(b: &[u8]) -> Option<(Option<&[u8]>, usize)> {
    if *b.first()? == 0xFB {
        return Some((None, 1));
    }
    let (len, used) = lenenc_int(b)?;
    let end = used.checked_add(usize::try_from(len).ok()?)?;
    Some((Some(b.get(used..end)?), end))
}

pub fn put_lenenc_int(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=0xFA => out.push(v as u8),
        0xFB..=0xFFFF => {
            out.push(0xFC);
            out.extend_from_slice(&(v as u16).to_le_bytes())
        }
        0x1_0000..=0xFF_FFFF => {
            out.push(0xFD);
            out.extend_from_slice(&(v as u32).to_le_bytes()[..3])
        }
        _ => {
            out.push(0xFE);
            out.extend_from_slice(&v.to_le_bytes())
        }
    }
}

pub fn put_lenenc_str(out: &mut Vec<u8>, s: &[u8]) {
    put_lenenc_int(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// An OK packet (0x00, or 0xFE under CLIENT_DEPRECATE_EOF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OkInfo {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
    /// Human-readable info ("Rows matched: 1  Changed: 0  Warnings: 0").
    pub info: Vec<u8>,
}

pub fn parse_ok(p: &[u8], session_track: bool) -> Option<OkInfo> {
    let mut i = 1;
    let (affected_rows, n) = lenenc_int(p.get(i..)?)?;
    i += n;
    let (last_insert_id, n) = lenenc_int(p.get(i..)?)?;
    i += n;
    let status = u16::from_le_bytes(p.get(i..i + 2)?.try_into().ok()?);
    let warnings = u16::from_le_bytes(p.get(i + 2..i + 4)?.try_into().ok()?);
    i += 4;
    let rest = p.get(i..).unwrap_or_default();
    let info = if session_track { lenenc_str(rest).and_then(|(s, _)| s).unwrap_or_default().to_vec() } else { rest.to_vec() };
    Some(OkInfo { affected_rows, last_insert_id, status, warnings, info })
}

/// Status flags of a result-set terminator: an old EOF or, with
/// CLIENT_DEPRECATE_EOF, an OK packet with header 0xFE. Chosen by the
/// negotiated flag, never by length.
pub fn terminator_status(p: &[u8], deprecate_eof: bool) -> Option<u16> {
    if deprecate_eof { parse_ok(p, false).map(|ok| ok.status) } else { Some(u16::from_le_bytes(p.get(3..5)?.try_into().ok()?)) }
}

/// Status flags of any packet that carries them (OK or terminator).
pub fn status_of(p: &[u8], deprecate_eof: bool) -> Option<u16> {
    match *p.first()? {
        OK => parse_ok(p, false).map(|o| o.status),
        EOF if p.len() < MAX_FRAME => terminator_status(p, deprecate_eof),
        _ => None,
    }
}

/// A result-set row can only start with 0xFE when it is at least 16 MiB long.
pub fn is_terminator(p: &[u8]) -> bool {
    p.first() == Some(&EOF) && p.len() < MAX_FRAME
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrInfo {
    pub code: u16,
    pub sqlstate: Option<[u8; 5]>,
    pub message: Vec<u8>,
}

/// MariaDB progress reports are ERR packets with code 0xFFFF; they are not terminal.
pub const PROGRESS_CODE: u16 = 0xFFFF;

pub fn parse_err(p: &[u8]) -> Option<ErrInfo> {
    if p.first() != Some(&ERR) {
        return None;
    }
    let code = u16::from_le_bytes(p.get(1..3)?.try_into().ok()?);
    // Test for '#' before reading a SQLSTATE: pre-handshake errors have none.
    if p.get(3) == Some(&b'#') && p.len() >= 9 {
        let mut st = [0u8; 5];
        st.copy_from_slice(&p[4..9]);
        Some(ErrInfo { code, sqlstate: Some(st), message: p[9..].to_vec() })
    } else {
        Some(ErrInfo { code, sqlstate: None, message: p.get(3..).unwrap_or_default().to_vec() })
    }
}

pub fn build_err(code: u16, sqlstate: &str, message: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(9 + message.len());
    p.push(ERR);
    p.extend_from_slice(&code.to_le_bytes());
    p.push(b'#');
    let mut st = [b'H', b'Y', b'0', b'0', b'0'];
    for (d, s) in st.iter_mut().zip(sqlstate.bytes()) {
        *d = s;
    }
    p.extend_from_slice(&st);
    p.extend_from_slice(message.as_bytes());
    p
}

/// An ERR sent before the handshake: servers send these without a SQLSTATE.
pub fn build_err_no_state(code: u16, message: &str) -> Vec<u8> {
    let mut p = vec![ERR];
    p.extend_from_slice(&code.to_le_bytes());
    p.extend_from_slice(message.as_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_roundtrip() {
        for v in [0u64, 250, 251, 0xFFFF, 0x1_0000, 0xFF_FFFF, 0x100_0000, u64::MAX] {
            let mut b = Vec::new();
            put_lenenc_int(&mut b, v);
            assert_eq!(lenenc_int(&b), Some((v, b.len())));
        }
        assert_eq!(lenenc_str(&[0xFB]), Some((None, 1)));
        assert_eq!(lenenc_str(&[2, b'h', b'i', 9]), Some((Some(&b"hi"[..]), 3)));
        assert_eq!(lenenc_str(&[5, b'h']), None);
    }

    #[test]
    fn ok_with_info() {
        let mut p = vec![0x00, 0x01, 0x00, 0x03, 0x40, 0x00, 0x00];
        p.extend_from_slice(b"Rows matched: 1  Changed: 1  Warnings: 0");
        let ok = parse_ok(&p, false).unwrap();
        assert_eq!(ok.affected_rows, 1);
        assert_eq!(ok.status, 0x4003);
        assert_eq!(ok.warnings, 0);
        assert!(ok.info.starts_with(b"Rows matched"));
    }

    #[test]
    fn short_fe_ok_is_not_read_as_eof() {
        // 0xFE-OK: affected 0, insert id 10000 (3-byte lenenc), status 0x0002.
        let p = [0xFE, 0x00, 0xFC, 0x10, 0x27, 0x02, 0x00, 0x00, 0x00];
        assert_eq!(terminator_status(&p, true), Some(0x0002));
        // The same bytes read as an old EOF take the insert id for status: wrong mode.
        assert_eq!(terminator_status(&p, false), Some(0x2710));
        let eof = [0xFE, 0x01, 0x00, 0x0A, 0x00];
        assert_eq!(terminator_status(&eof, false), Some(0x000A));
    }

    #[test]
    fn err_with_and_without_sqlstate() {
        let e = parse_err(&build_err(1205, "HY000", "Lock wait timeout")).unwrap();
        assert_eq!(e.code, 1205);
        assert_eq!(&e.sqlstate.unwrap(), b"HY000");
        assert_eq!(e.message, b"Lock wait timeout");
        let pre = [0xFF, 0x10, 0x04, b'T', b'o', b'o'];
        let e = parse_err(&pre).unwrap();
        assert_eq!(e.code, 1040);
        assert_eq!(e.sqlstate, None);
        assert_eq!(e.message, b"Too");
    }
}
