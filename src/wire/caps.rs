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

/// Flags thaw does not implement: compression changes framing, query
/// attributes change COM_QUERY, optional metadata can drop column
/// definitions, MFA adds an auth step. SSL toward the client is thaw's to
/// offer, and it does not.
pub const MASKED: u32 = C::CLIENT_COMPRESS.bits()
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
        let (len, used) = super::packets::lenenc_int(p.get(i..).ok_or(BAD)?).ok_or(BAD)?;
        // The length is the client's to choose (up to 2^64 - 1): saturate, so
        // an impossible length reads as past the end, like any too-long one.
        i = i.saturating_add(used).saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
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
            let h = patch_client_response(&mut p).unwrap();
            assert_eq!(h.user, "root");
            assert_eq!(h.database, None, "an auth response past the end leaves no schema");
        }
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
}
