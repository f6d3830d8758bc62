//! Connection phase: relay the greeting, the client's response and the whole
//! auth exchange. thaw never sees a password: the server's nonce reaches the
//! client untouched and every auth packet is relayed as sent. Only capability
//! flags are patched, in place.
use super::SessionError;
use super::backend::{BackendStream, TlsSetup};
use super::state::ConnState;
use crate::config::TlsMode;
use crate::wire::packets::{self, ERR, OK};
use crate::wire::{PacketIo, caps};
use tokio::net::TcpStream;

pub type ClientIo = PacketIo<TcpStream>;
pub type ServerIo = PacketIo<BackendStream>;

/// Relay the connection phase. `Ok(None)`: the server refused (its ERR was
/// relayed to the client) or thaw refused with its own ERR.
pub async fn relay(
    client: &mut ClientIo,
    mut server: ServerIo,
    tls: &TlsSetup,
    max_packet: usize,
) -> Result<Option<(ServerIo, ConnState)>, SessionError> {
    let greeting = server.read().await?.ok_or(SessionError::BackendClosed)?;
    if greeting.first() == Some(&ERR) {
        // 1040 / 1129 before any handshake: no SQLSTATE, relayed as is.
        client.send(&greeting).await?;
        client.flush().await?;
        return Ok(None);
    }
    let mut g = greeting.to_vec();
    let info = caps::patch_greeting(&mut g)?;
    let offers_tls = info.server_caps & caps::SSL != 0;
    let use_tls = match tls.mode {
        TlsMode::Disabled => false,
        TlsMode::Preferred => offers_tls,
        TlsMode::Required if offers_tls => true,
        TlsMode::Required => {
            // Before the handshake, as servers do: no SQLSTATE, and a server-range
            // code (libmariadb reports 2xxx codes from a server as malformed packets).
            client.send(&packets::build_err_no_state(1043, "thaw: backend_tls is required but the backend does not offer TLS")).await?;
            client.flush().await?;
            return Ok(None);
        }
    };
    client.send(&g).await?;
    client.flush().await?;

    let response = client.read().await?.ok_or(SessionError::ClientClosed)?;
    let mut r = response.to_vec();
    if r.len() <= 32 {
        // An SSLRequest although thaw did not offer TLS toward the client.
        refuse(client, 1043, "08S01", "thaw: TLS between the application and thaw is not supported; use plain text on loopback").await?;
        return Ok(None);
    }
    let hello = caps::patch_client_response(&mut r)?;
    if use_tls {
        let with_ssl = (hello.caps | caps::SSL).to_le_bytes();
        r[0..4].copy_from_slice(&with_ssl);
        server.send(&r[..32]).await?;
        server.flush().await?;
        let (stream, seq) = server.into_parts();
        let BackendStream::Plain(tcp) = stream else { unreachable!("TLS is negotiated once") };
        let stream = match tls.upgrade(tcp).await {
            Ok(s) => s,
            Err(e) => {
                // Tell the app why, not just "lost connection".
                refuse(client, 1043, "08S01", &format!("thaw: {e}")).await?;
                return Err(e.into());
            }
        };
        server = PacketIo::new(stream, max_packet);
        server.set_seq(seq);
    }
    server.send(&r).await?;
    server.flush().await?;

    let mut state = ConnState {
        caps: hello.caps,
        status: info.status,
        schema: hello.database,
        user: hello.user,
        thread_id: info.thread_id,
        multi_statements: hello.caps & caps::MULTI_STATEMENTS != 0,
        simultaneous_assignment: None,
        tls_backend: use_tls,
        ..ConnState::default()
    };
    match auth_exchange(client, &mut server, use_tls).await? {
        Some(status) => {
            state.status = status;
            Ok(Some((server, state)))
        }
        None => Ok(None),
    }
}

/// Relay auth packets both ways until the server's OK (returns its status
/// flags) or ERR (returns None). Full duplex: after caching_sha2's fast-auth
/// success (`01 03`) the server sends OK without a client packet.
pub async fn auth_exchange(client: &mut ClientIo, server: &mut ServerIo, tls_backend: bool) -> Result<Option<u16>, SessionError> {
    let mut full_auth_requested = false;
    loop {
        tokio::select! {
            p = server.read() => {
                let p = p?.ok_or(SessionError::BackendClosed)?;
                client.send(&p).await?;
                client.flush().await?;
                match p.first() {
                    Some(&OK) => return Ok(Some(packets::parse_ok(&p, false).map(|o| o.status).unwrap_or(0))),
                    Some(&ERR) => return Ok(None),
                    _ => full_auth_requested = p.as_ref() == [0x01, 0x04],
                }
            }
            p = client.read() => {
                let p = p?.ok_or(SessionError::ClientClosed)?;
                if tls_backend && full_auth_requested && p.as_ref() == [0x02] {
                    // The client asks for the RSA key because its own leg is plain
                    // text; the server would take the request for a wrong password.
                    refuse(client, 1045, "28000", "thaw: caching_sha2_password full authentication over a TLS backend leg is not supported; \
                        log in once directly (to fill the server's cache), use mysql_native_password/ed25519, or disable backend_tls").await?;
                    return Ok(None);
                }
                full_auth_requested = false;
                server.send(&p).await?;
                server.flush().await?;
            }
        }
    }
}

pub async fn refuse(client: &mut ClientIo, code: u16, sqlstate: &str, msg: &str) -> Result<(), SessionError> {
    client.send(&packets::build_err(code, sqlstate, msg)).await?;
    client.flush().await?;
    Ok(())
}
