//! Capability negotiation: flags are patched in the original bytes, never by
//! re-encoding through a struct (that would drop unknown flags or reorder
//! connection attributes).
use super::conn::WireError;
use mysql_common::constants::CapabilityFlags as C;

pub const CLIENT_MYSQL: u32 = C::CLIENT_LONG_PASSWORD.bits();
pub const CONNECT_WITH_DB: u32 = C::CLIENT_CONNECT_WITH_DB.bits();
pub const SSL: u32 = C::CLIENT_SSL.bits();
pub const MULTI_STATEMENTS: u32 = C::CLIENT_MULTI_STATEMENTS.bits();
pub const DEPRECATE_EOF: u32 = C::CLIENT_DEPRECATE_EOF.bits();
pub const SESSION_TRACK: u32 = C::CLIENT_SESSION_TRACK.bits();
pub const LOCAL_FILES: u32 = C::CLIENT_LOCAL_FILES.bits();
pub const FOUND_ROWS: u32 = C::CLIENT_FOUND_ROWS.bits();
pub const PLUGIN_AUTH_LENENC: u32 = C::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA.bits();
pub const SECURE_CONNECTION: u32 = C::CLIENT_SECURE_CONNECTION.bits();
pub const COMPRESS: u32 = C::CLIENT_COMPRESS.bits();

/// Flags not relayed as received: query attributes change COM_QUERY,
/// optional metadata can drop column definitions, MFA adds an auth step,
/// zstd compression is not implemented. SSL and zlib compression are
/// per leg: thaw offers them to the client itself (`offer`) and asks the
/// server for them on its own leg.
pub const MASKED: u32 = COMPRESS
    | C::CLIENT_ZSTD_COMPRESSION_ALGORITHM.bits()
    | C::CLIENT_QUERY_ATTRIBUTES.bits()
    | C::CLIENT_OPTIONAL_RESULTSET_METADATA.bits()
    | C::MULTI_FACTOR_AUTHENTICATION.bits()
    | SSL;

/// MariaDB extended capabilities thaw does not implement: bulk execute (a
/// new command), cached metadata (a byte after the column count, column
/// definitions left out) and bulk unit results. Progress reports (bit 0)
/// are handled; extended metadata (bit 3) only adds a string inside column
/// definitions, which thaw relays as bytes.
pub const MASKED_EXT: u32 = 0x4 | 0x10 | 0x20;

#[derive(Debug, Clone)]
pub struct Greeting {
    /// Capabilities as the server offered them, before masking.
    pub server_caps: u32,
    pub server_ext_caps: u32,
    pub thread_id: u32,
    pub server_version: String,
    pub status: u16,
    pub charset: u8,
}

/// Advertise a lower-16 flag (CLIENT_SSL, CLIENT_COMPRESS) in a greeting
/// already checked by `patch_greeting`: thaw speaks it on the client's leg itself.
pub fn offer(p: &mut [u8], flag: u32) -> Result<(), WireError> {
    const BAD: WireError = WireError::Malformed("server greeting");
    debug_assert!(flag <= 0xFFFF);
    let nul = p.get(1..).and_then(|b| b.iter().position(|&b| b == 0)).ok_or(BAD)? + 1;
    let lo = nul + 1 + 13;
    let flags = p.get(lo..lo + 2).ok_or(BAD)?;
    let flags = u16::from_le_bytes([flags[0], flags[1]]) | flag as u16;
    p[lo..lo + 2].copy_from_slice(&flags.to_le_bytes());
    Ok(())
}

/// Capability flags of a client's first packet (an SSLRequest or a HandshakeResponse41).
pub fn client_caps(p: &[u8]) -> u32 {
    p.get(0..4).map(|b| u32::from_le_bytes(b.try_into().unwrap())).unwrap_or(0)
}

/// Parse a HandshakeV10 and mask `MASKED` flags in place.
pub fn patch_greeting(p: &mut [u8]) -> Result<Greeting, WireError> {
    const BAD: WireError = WireError::Malformed("server greeting");
    if p.first() != Some(&10) {
        return Err(BAD);
    }
    let nul = p[1..].iter().position(|&b| b == 0).ok_or(BAD)? + 1;
    let server_version = String::from_utf8_lossy(&p[1..nul]).into_owned();
    let v = nul + 1;
    if p.len() < v + 31 {
        return Err(BAD);
    }
    let thread_id = u32::from_le_bytes(p[v..v + 4].try_into().unwrap());
    let lo = v + 13;
    let hi = v + 18;
    let caps = u16::from_le_bytes([p[lo], p[lo + 1]]) as u32 | (u16::from_le_bytes([p[hi], p[hi + 1]]) as u32) << 16;
    let charset = p[v + 15];
    let status = u16::from_le_bytes([p[v + 16], p[v + 17]]);
    let masked = caps & !MASKED;
    p[lo..lo + 2].copy_from_slice(&(masked as u16).to_le_bytes());
    p[hi..hi + 2].copy_from_slice(&((masked >> 16) as u16).to_le_bytes());
    // MariaDB puts its extended capabilities in the last 4 reserved bytes,
    // valid only when CLIENT_MYSQL is clear.
    let mut ext = 0;
    if caps & CLIENT_MYSQL == 0 {
        let e = v + 27;
        ext = u32::from_le_bytes(p[e..e + 4].try_into().unwrap());
        p[e..e + 4].copy_from_slice(&(ext & !MASKED_EXT).to_le_bytes());
    }
    Ok(Greeting { server_caps: caps, server_ext_caps: ext, thread_id, server_version, status, charset })
}

/// The nonce (both parts, joined) and the auth plugin a HandshakeV10 offers.
pub fn greeting_auth(p: &[u8]) -> Option<(Vec<u8>, String)> {
    if p.first() != Some(&10) {
        return None;
    }
    let v = p[1..].iter().position(|&b| b == 0)? + 2;
    let part1 = p.get(v + 4..v + 12)?;
    let caps_hi = u16::from_le_bytes([*p.get(v + 18)?, *p.get(v + 19)?]) as u32;
    let auth_len = *p.get(v + 20)? as usize;
    let rest = p.get(v + 31..)?;
    let part2_len = auth_len.saturating_sub(8).max(13).min(rest.len());
    let part2 = &rest[..part2_len];
    let part2 = part2.strip_suffix(&[0]).unwrap_or(part2);
    let mut nonce = part1.to_vec();
    nonce.extend_from_slice(part2);
    let plugin = if (caps_hi << 16) & C::CLIENT_PLUGIN_AUTH.bits() != 0 {
        let name = &rest[part2_len..];
        String::from_utf8_lossy(&name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())]).into_owned()
    } else {
        "mysql_native_password".into()
    };
    Some((nonce, plugin))
}

/// A minimal HandshakeResponse41 of thaw's own (readiness check, ending a
/// backend handshake that the client abandoned): no schema, no attributes.
pub fn build_handshake_response(user: &str, auth: &[u8], plugin: &str) -> Vec<u8> {
    let caps = C::CLIENT_LONG_PASSWORD.bits()
        | C::CLIENT_PROTOCOL_41.bits()
        | C::CLIENT_TRANSACTIONS.bits()
        | SECURE_CONNECTION
        | C::CLIENT_PLUGIN_AUTH.bits();
    let mut resp = caps.to_le_bytes().to_vec();
    resp.extend_from_slice(&(1u32 << 24).to_le_bytes());
    resp.push(33); // utf8_general_ci
    resp.extend_from_slice(&[0; 23]);
    resp.extend_from_slice(user.as_bytes());
    resp.push(0);
    resp.push(auth.len().min(255) as u8);
    resp.extend_from_slice(&auth[..auth.len().min(255)]);
    resp.extend_from_slice(plugin.as_bytes());
    resp.push(0);
    resp
}

/// What thaw needs from the client's HandshakeResponse41.
#[derive(Debug, Clone, Default)]
pub struct ClientHello {
    /// Capabilities the client asked for, after masking.
    pub caps: u32,
    pub user: String,
    pub database: Option<String>,
}

/// Clear the masked flags in a HandshakeResponse41 in place and read the user and schema.
pub fn patch_client_response(p: &mut [u8]) -> Result<ClientHello, WireError> {
    const BAD: WireError = WireError::Malformed("client handshake response");
    if p.len() < 32 {
        return Err(BAD);
    }
    let caps = u32::from_le_bytes(p[0..4].try_into().unwrap()) & !MASKED;
    p[0..4].copy_from_slice(&caps.to_le_bytes());
    if caps & CLIENT_MYSQL == 0 {
        let ext = u32::from_le_bytes(p[28..32].try_into().unwrap()) & !MASKED_EXT;
        p[28..32].copy_from_slice(&ext.to_le_bytes());
    }
    let mut i = 32;
    let nul = p[i..].iter().position(|&b| b == 0).ok_or(BAD)?;
    let user = String::from_utf8_lossy(&p[i..i + nul]).into_owned();
    i += nul + 1;
    // Skip the auth response; only its length matters here.
    if caps & PLUGIN_AUTH_LENENC != 0 {
        // The length is the client's to choose (up to 8 bytes): checked, never wrapped.
        let (len, used) = super::packets::lenenc_int(p.get(i..).ok_or(BAD)?).ok_or(BAD)?;
        let len = usize::try_from(len).map_err(|_| BAD)?;
        i = i.checked_add(used).and_then(|i| i.checked_add(len)).ok_or(BAD)?;
    } else if caps & SECURE_CONNECTION != 0 {
        let len = *p.get(i).ok_or(BAD)? as usize;
        i += 1 + len;
    } else {
        i += p.get(i..).ok_or(BAD)?.iter().position(|&b| b == 0).ok_or(BAD)? + 1;
    }
    let mut database = None;
    if caps & CONNECT_WITH_DB != 0
        && let Some(rest) = p.get(i..)
    {
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        let db = String::from_utf8_lossy(&rest[..end]).into_owned();
        if !db.is_empty() {
            database = Some(db);
        }
    }
    Ok(ClientHello { caps, user, database })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greeting(caps: u32, ext: u32) -> Vec<u8> {
        let mut p = vec![10];
        p.extend_from_slice(b"5.5.5-10.11.19-MariaDB\0");
        p.extend_from_slice(&42u32.to_le_bytes());
        p.extend_from_slice(b"abcdefgh\0");
        p.extend_from_slice(&(caps as u16).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 6]);
        p.extend_from_slice(&ext.to_le_bytes());
        p.extend_from_slice(b"ijklmnopqrst\0mysql_native_password\0");
        p
    }

    #[test]
    fn greeting_masks_in_place_and_keeps_the_rest() {
        let caps = 0xF7FF_FFFF & !CLIENT_MYSQL;
        let orig = greeting(caps, 0x3F);
        let mut p = orig.clone();
        let g = patch_greeting(&mut p).unwrap();
        assert_eq!(g.server_caps, caps);
        assert_eq!(g.thread_id, 42);
        assert_eq!(g.server_ext_caps, 0x3F);
        assert_eq!(p.len(), orig.len());
        let again = patch_greeting(&mut p.clone()).unwrap();
        assert_eq!(again.server_caps, caps & !MASKED);
        assert_eq!(again.server_ext_caps, 0x3F & !MASKED_EXT);
        assert_eq!(again.server_caps & MULTI_STATEMENTS, MULTI_STATEMENTS);
        // Nonce and plugin name untouched.
        assert_eq!(&p[p.len() - 34..], &orig[orig.len() - 34..]);
    }

    /// Found by fuzzing (issue 10): an 8-byte lenenc auth length near
    /// 2^64 overflowed the offset (a panic with overflow checks, a wrapped
    /// offset without).
    #[test]
    fn client_chosen_auth_length_does_not_overflow() {
        let caps = PLUGIN_AUTH_LENENC | CONNECT_WITH_DB | C::CLIENT_PROTOCOL_41.bits();
        for len in [u64::MAX, u64::MAX - 8, 1 << 63] {
            let mut p = caps.to_le_bytes().to_vec();
            p.extend_from_slice(&[0; 28]);
            p.extend_from_slice(b"root\0\xFE");
            p.extend_from_slice(&len.to_le_bytes());
            p.extend_from_slice(b"billing\0");
            // Refused as malformed, never a panic or a wrapped offset.
            if let Ok(h) = patch_client_response(&mut p) {
                assert_eq!(h.user, "root");
                assert_eq!(h.database, None, "an auth response past the end leaves no schema");
            }
        }
    }

    #[test]
    fn offered_flags_are_set_in_the_masked_greeting() {
        let caps = 0xF7FF_FFFF & !CLIENT_MYSQL;
        let mut p = greeting(caps, 0);
        patch_greeting(&mut p).unwrap();
        assert_eq!(patch_greeting(&mut p.clone()).unwrap().server_caps & (COMPRESS | SSL), 0);
        offer(&mut p, COMPRESS).unwrap();
        offer(&mut p, SSL).unwrap();
        let g = patch_greeting(&mut p.clone()).unwrap();
        assert_eq!(g.server_caps & (COMPRESS | SSL), COMPRESS | SSL);
        assert_eq!(g.server_caps | MASKED, caps | MASKED, "nothing else moved");
        assert!(offer(&mut [10, b'x'], COMPRESS).is_err());
    }

    #[test]
    fn greeting_auth_reads_both_nonce_parts_and_the_plugin() {
        let caps = 0xF7FF_FFFF & !CLIENT_MYSQL;
        let (nonce, plugin) = greeting_auth(&greeting(caps, 0)).unwrap();
        assert_eq!(nonce, b"abcdefghijklmnopqrst");
        assert_eq!(plugin, "mysql_native_password");
        assert!(greeting_auth(&[10, b'x']).is_none(), "a truncated greeting is not read past its end");
    }

    #[test]
    fn own_handshake_response_parses_back() {
        let mut p = build_handshake_response("thaw_probe", &[7; 20], "mysql_native_password");
        let h = patch_client_response(&mut p).unwrap();
        assert_eq!(h.user, "thaw_probe");
        assert_eq!(h.database, None);
        assert!(p.ends_with(b"mysql_native_password\0"));
    }

    #[test]
    fn client_response_masks_and_reads_user_and_db() {
        let caps =
            PLUGIN_AUTH_LENENC | SECURE_CONNECTION | CONNECT_WITH_DB | SSL | C::CLIENT_COMPRESS.bits() | C::CLIENT_PROTOCOL_41.bits();
        let mut p = caps.to_le_bytes().to_vec();
        p.extend_from_slice(&[0, 0, 0, 1, 45]);
        p.extend_from_slice(&[0; 23]);
        p.extend_from_slice(b"root\0");
        p.extend_from_slice(&[3, 1, 2, 3]);
        p.extend_from_slice(b"billing\0mysql_native_password\0");
        let h = patch_client_response(&mut p).unwrap();
        assert_eq!(h.user, "root");
        assert_eq!(h.database.as_deref(), Some("billing"));
        assert_eq!(h.caps & (SSL | C::CLIENT_COMPRESS.bits()), 0);
        assert_eq!(u32::from_le_bytes(p[0..4].try_into().unwrap()), h.caps);
    }

    fn response_with_auth(auth: &[u8]) -> Vec<u8> {
        let caps = PLUGIN_AUTH_LENENC | SECURE_CONNECTION | CONNECT_WITH_DB | C::CLIENT_PROTOCOL_41.bits();
        let mut p = caps.to_le_bytes().to_vec();
        p.extend_from_slice(&[0; 28]);
        p.extend_from_slice(b"root\0");
        p.extend_from_slice(auth);
        p
    }

    #[test]
    fn huge_auth_length_is_malformed_not_an_overflow() {
        // An 8-byte length of u64::MAX (and others near usize::MAX) used to
        // overflow `i += used + len` (a panic with overflow checks on).
        for len in [u64::MAX, u64::MAX - 8, usize::MAX as u64 - 40] {
            let mut auth = vec![0xFE];
            auth.extend_from_slice(&len.to_le_bytes());
            auth.extend_from_slice(b"xy\0billing\0");
            let mut p = response_with_auth(&auth);
            let r = std::panic::catch_unwind(move || patch_client_response(&mut p).map(|h| h.user));
            assert!(matches!(r, Ok(Err(WireError::Malformed(_)))), "len {len}: {r:?}");
        }
        // Past the end but no overflow: the server judges it; no schema read.
        let mut auth = vec![0xFE];
        auth.extend_from_slice(&1000u64.to_le_bytes());
        assert_eq!(patch_client_response(&mut response_with_auth(&auth)).unwrap().database, None);
        // A length that fits still works.
        let mut p = response_with_auth(b"\xFE\x02\0\0\0\0\0\0\0abbilling\0");
        assert_eq!(patch_client_response(&mut p).unwrap().database.as_deref(), Some("billing"));
    }
}
