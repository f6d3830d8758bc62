//! Connection phase: relay the greeting, the client's response and the whole
//! auth exchange. thaw never sees a password: the server's nonce reaches the
//! client untouched and every auth packet is relayed as sent. Only capability
//! flags are patched, in place. Compression starts on each leg that agreed
//! to it once the server's OK is relayed (inside TLS where there is TLS).
use super::backend::BackendStream;
use super::client_tls::{ClientStream, Prefixed};
use super::compress::{self, Legs};
use super::state::ConnState;
use super::{SessionError, Shared};
use crate::config::{Config, ProbeConfig, TlsMode};
use crate::wire::compress::Framing;
use crate::wire::packets::{self, ERR, OK};
use crate::wire::{PacketIo, caps};
use bytes::Bytes;
use std::time::Duration;

pub type ClientIo = PacketIo<ClientStream>;
pub type ServerIo = PacketIo<BackendStream>;

/// Deadlines of the connection phase, from the generation in force when the client connected.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub client_handshake: Duration,
    pub backend_greeting: Duration,
    pub auth: Duration,
    pub tls: Duration,
}

impl Deadlines {
    pub fn from_config(c: &Config) -> Self {
        Deadlines {
            client_handshake: Duration::from_millis(c.client_handshake_timeout_ms),
            backend_greeting: Duration::from_millis(c.backend_greeting_timeout_ms),
            auth: Duration::from_millis(c.auth_timeout_ms),
            tls: Duration::from_millis(c.tls_handshake_timeout_ms),
        }
    }
}

/// Relay the connection phase. `Ok(None)`: the server refused (its ERR was
/// relayed to the client), thaw refused with its own ERR, or the client left
/// before its HandshakeResponse (the backend handshake was then ended by thaw).
pub async fn relay(
    client: &mut ClientIo,
    mut server: ServerIo,
    shared: &Shared,
    deadlines: &Deadlines,
    probe: Option<&ProbeConfig>,
    compression: compress::Policy,
    client_tls: Option<&tokio_rustls::TlsAcceptor>,
) -> Result<Option<(ServerIo, ConnState)>, SessionError> {
    let greeting = match tokio::time::timeout(deadlines.backend_greeting, server.read()).await {
        Ok(read) => read?.ok_or(SessionError::BackendClosed)?,
        Err(_) => {
            shared.metrics.handshake_timeout("backend_greeting");
            let why = format!("no greeting within {} ms", deadlines.backend_greeting.as_millis());
            return Err(super::backend_unreachable(client, shared, why).await);
        }
    };
    if greeting.first() == Some(&ERR) {
        // 1040 / 1129 before any handshake: no SQLSTATE, relayed as is.
        client.send(&greeting).await?;
        client.flush().await?;
        return Ok(None);
    }
    let mut g = greeting.to_vec();
    let info = caps::patch_greeting(&mut g)?;
    let offers_tls = info.server_caps & caps::SSL != 0;
    let tls = &shared.tls;
    let use_tls = match tls.mode {
        TlsMode::Disabled => false,
        TlsMode::Preferred => offers_tls,
        TlsMode::Required if offers_tls => true,
        TlsMode::Required => {
            // Before the handshake, as servers do: no SQLSTATE, and a server-range
            // code (libmariadb reports 2xxx codes from a server as malformed packets).
            client.send(&packets::build_err_no_state(1043, "thaw: backend_tls is required but the backend does not offer TLS")).await?;
            client.flush().await?;
            end_abandoned(server, &greeting, probe, deadlines.auth, shared).await;
            return Ok(None);
        }
    };
    if let Err(msg) = compression.check_server(info.server_caps) {
        client.send(&packets::build_err_no_state(1043, msg)).await?;
        client.flush().await?;
        end_abandoned(server, &greeting, probe, deadlines.auth, shared).await;
        return Ok(None);
    }
    if client_tls.is_some() {
        caps::offer(&mut g, caps::SSL)?;
    }
    if compression.offers_client() {
        caps::offer(&mut g, caps::COMPRESS)?;
    }
    client.send(&g).await?;
    client.flush().await?;

    // The client has not shown yet that it is a MySQL client: until its
    // HandshakeResponse arrives nothing has gone to the backend, so if it
    // leaves (a TCP probe, a port scan) or stays silent, thaw can still end the
    // backend handshake itself instead of leaving an aborted connect there.
    let started = tokio::time::Instant::now();
    let mut response = match client_hello(client, deadlines.client_handshake).await {
        Hello::Got(p) => p,
        other => return abandoned(other, server, &greeting, probe, deadlines, shared).await,
    };
    if response.len() <= 32 {
        let Some(acceptor) = client_tls.filter(|_| caps::client_caps(&response) & caps::SSL != 0) else {
            // An SSLRequest although thaw did not offer TLS toward the client.
            let msg = "thaw: TLS between the application and thaw is not configured (client_tls); use plain text on loopback";
            refuse(client, 1043, "08S01", msg).await?;
            end_abandoned(server, &greeting, probe, deadlines.auth, shared).await;
            return Ok(None);
        };
        // SSLRequest: the TLS handshake, then the real HandshakeResponse over it.
        match tokio::time::timeout(deadlines.tls, accept_client_tls(client, acceptor)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                end_abandoned(server, &greeting, probe, deadlines.auth, shared).await;
                return Err(SessionError::ClientTls(e));
            }
            Err(_) => {
                shared.metrics.handshake_timeout("client_tls");
                end_abandoned(server, &greeting, probe, deadlines.auth, shared).await;
                return Err(SessionError::Timeout("the TLS handshake with the client", deadlines.tls.as_millis() as u64));
            }
        }
        let left = deadlines.client_handshake.saturating_sub(started.elapsed());
        response = match client_hello(client, left).await {
            Hello::Got(p) if p.len() > 32 => p,
            Hello::Got(_) => {
                end_abandoned(server, &greeting, probe, deadlines.auth, shared).await;
                return Err(SessionError::Protocol("a second SSLRequest from the client"));
            }
            other => return abandoned(other, server, &greeting, probe, deadlines, shared).await,
        };
    }
    let mut r = response.to_vec();
    let hello = match caps::patch_client_response(&mut r) {
        Ok(h) => h,
        Err(e) => {
            end_abandoned(server, &greeting, probe, deadlines.auth, shared).await;
            return Err(e.into());
        }
    };
    let legs = match compression.legs(caps::client_caps(&response), info.server_caps) {
        Ok(legs) => legs,
        Err(msg) => {
            refuse(client, 1043, "08S01", msg).await?;
            end_abandoned(server, &greeting, probe, deadlines.auth, shared).await;
            return Ok(None);
        }
    };
    if legs.backend {
        r[0..4].copy_from_slice(&(hello.caps | caps::COMPRESS).to_le_bytes());
    }
    if tls.mode == TlsMode::Preferred && !use_tls {
        // Not silent: this login and everything after it go to the server in
        // plain text. Counted once the client has shown it is a MySQL client
        // (a TCP probe is no fallback).
        shared.metrics.backend_tls_fallbacks.inc();
        if let Some(suppressed) = shared.tls_fallback_warn.check() {
            tracing::warn!(
                backend = %shared.config.backend,
                suppressed,
                "backend_tls is preferred but the backend does not offer TLS; this connection is plain text to the server"
            );
        }
    }
    if use_tls {
        let with_ssl = (caps::client_caps(&r) | caps::SSL).to_le_bytes();
        r[0..4].copy_from_slice(&with_ssl);
        server.send(&r[..32]).await?;
        server.flush().await?;
        let (stream, seq) = server.into_parts();
        let BackendStream::Plain(tcp) = stream else { unreachable!("TLS is negotiated once") };
        let stream = match tokio::time::timeout(deadlines.tls, tls.upgrade(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                // Tell the app why, not just "lost connection".
                refuse(client, 1043, "08S01", &format!("thaw: {e}")).await?;
                return Err(e.into());
            }
            Err(_) => {
                shared.metrics.handshake_timeout("tls");
                let ms = deadlines.tls.as_millis() as u64;
                refuse(client, 1043, "08S01", &format!("thaw: the TLS handshake with the backend did not finish within {ms} ms")).await?;
                return Err(SessionError::Timeout("the TLS handshake with the backend", ms));
            }
        };
        server = PacketIo::new(stream, shared.config.max_packet_bytes);
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
        mariadb: info.server_version.contains("MariaDB"),
        ..ConnState::default()
    };
    match tokio::time::timeout(deadlines.auth, auth_exchange(client, &mut server, use_tls)).await {
        Ok(Ok(Some(status))) => {
            state.status = status;
            start_compression(client, &mut server, legs, compression.level, shared);
            Ok(Some((server, state)))
        }
        Ok(Ok(None)) => Ok(None),
        Ok(Err(e)) => Err(e),
        Err(_) => {
            shared.metrics.handshake_timeout("auth");
            let ms = deadlines.auth.as_millis() as u64;
            refuse(client, 1043, "08S01", &format!("thaw: authentication did not finish within {ms} ms")).await?;
            Err(SessionError::Timeout("authentication", ms))
        }
    }
}

/// After the OK both sides of each agreeing leg switch their framing.
fn start_compression(client: &mut ClientIo, server: &mut ServerIo, legs: Legs, level: u32, shared: &Shared) {
    if legs.client {
        // Whole packets per frame toward the app, as the servers send them.
        client.start_compression(level, Framing::Packets, Some(compress::tally(&shared.metrics, "client")));
    }
    if legs.backend {
        server.start_compression(level, Framing::Pieces, Some(compress::tally(&shared.metrics, "backend")));
    }
    if legs != Legs::default() {
        tracing::debug!(client = legs.client, backend = legs.backend, "compressed protocol");
    }
}

enum Hello {
    Got(Bytes),
    Closed,
    Failed(SessionError),
    Silent(Duration),
}

async fn client_hello(client: &mut ClientIo, within: Duration) -> Hello {
    match tokio::time::timeout(within, client.read()).await {
        Ok(Ok(Some(p))) => Hello::Got(p),
        Ok(Ok(None)) => Hello::Closed,
        Ok(Err(e)) => Hello::Failed(e.into()),
        Err(_) => Hello::Silent(within),
    }
}

/// No HandshakeResponse: end the backend handshake, and say how the client went.
async fn abandoned(
    how: Hello,
    server: ServerIo,
    greeting: &[u8],
    probe: Option<&ProbeConfig>,
    deadlines: &Deadlines,
    shared: &Shared,
) -> Result<Option<(ServerIo, ConnState)>, SessionError> {
    end_abandoned(server, greeting, probe, deadlines.auth, shared).await;
    match how {
        Hello::Got(_) => Ok(None),
        Hello::Closed => Err(SessionError::ClientClosed),
        Hello::Failed(e) => Err(e),
        Hello::Silent(within) => {
            shared.metrics.handshake_timeout("client_handshake");
            tracing::debug!(timeout_ms = within.as_millis() as u64, "no handshake response from the client in time; closed");
            Ok(None)
        }
    }
}

/// Swap the client's transport for TLS after its SSLRequest. Bytes already
/// read past the SSLRequest (the start of its ClientHello) go to the TLS layer.
async fn accept_client_tls(client: &mut ClientIo, acceptor: &tokio_rustls::TlsAcceptor) -> std::io::Result<()> {
    let early = client.take_buffered();
    let ClientStream::Plain(tcp) = std::mem::replace(client.stream_mut(), ClientStream::Detached) else {
        return Err(std::io::Error::other("TLS is negotiated once"));
    };
    let tls = acceptor.accept(Prefixed::new(early, tcp)).await?;
    *client.stream_mut() = ClientStream::Tls(Box::new(tls));
    Ok(())
}

/// User name thaw logs in as, without a probe user, to end a backend
/// handshake that the client abandoned. It should not exist.
pub const ABANDONED_USER: &str = "thaw_abandoned_handshake";

/// The client left before its HandshakeResponse. Closing the backend socket
/// now would be an aborted connect (`Aborted_connects`, and a handshake error
/// toward `max_connect_errors`: enough of them block the pod's host with 1129).
/// Instead finish the handshake: as the probe user when one is configured
/// (a real login, then COM_QUIT: nothing counted), else as a user that does
/// not exist (an authentication failure, which does not count toward
/// `max_connect_errors`).
async fn end_abandoned(mut server: ServerIo, greeting: &[u8], probe: Option<&ProbeConfig>, within: Duration, shared: &Shared) {
    let ending = match tokio::time::timeout(within, end_backend_handshake(&mut server, greeting, probe)).await {
        Ok(Ok(ending)) => ending,
        Ok(Err(_)) | Err(_) => "dropped",
    };
    shared.metrics.handshake_abandoned(ending);
    tracing::debug!(ending, "the client left before its handshake response; thaw ended the backend handshake");
}

async fn end_backend_handshake(server: &mut ServerIo, greeting: &[u8], probe: Option<&ProbeConfig>) -> Result<&'static str, SessionError> {
    const BAD: SessionError = SessionError::Protocol("server greeting");
    let (nonce, plugin) = caps::greeting_auth(greeting).ok_or(BAD)?;
    let (user, password) = match probe {
        Some(p) => (p.user.as_str(), p.password.as_bytes()),
        None => (ABANDONED_USER, &b""[..]),
    };
    let (auth, plugin) = match own_auth(&plugin, &nonce, password) {
        Some(auth) => (auth, plugin.as_str()),
        None => (own_auth(NATIVE, &nonce, password).unwrap_or_default(), NATIVE),
    };
    server.send(&caps::build_handshake_response(user, &auth, plugin)).await?;
    server.flush().await?;
    // OK, ERR, or an auth switch / more data; a few rounds at most.
    for _ in 0..4 {
        let p = server.read().await?.ok_or(SessionError::BackendClosed)?;
        match p.first() {
            Some(&OK) => {
                server.reset_seq();
                server.send(&[0x01]).await?; // COM_QUIT: a clean end, counted nowhere
                server.flush().await?;
                return Ok("quit");
            }
            Some(&ERR) => return Ok("auth_failed"),
            Some(&0xFE) => {
                let body = &p[1..];
                let nul = body.iter().position(|&b| b == 0).unwrap_or(body.len());
                let plugin = String::from_utf8_lossy(&body[..nul]).into_owned();
                let data = body.get(nul + 1..).unwrap_or_default();
                let nonce = data.strip_suffix(&[0]).unwrap_or(data);
                // A plugin thaw cannot speak gets an empty answer: the server says ERR.
                server.send(&own_auth(&plugin, nonce, password).unwrap_or_default()).await?;
                server.flush().await?;
            }
            Some(&0x01) if p.as_ref() == [0x01, 0x03] => {} // caching_sha2 fast auth: OK follows
            _ => return Ok("dropped"),
        }
    }
    Ok("dropped")
}

const NATIVE: &str = "mysql_native_password";

/// thaw's own auth answer for `plugin`, or None if it cannot compute one.
fn own_auth(plugin: &str, nonce: &[u8], password: &[u8]) -> Option<Vec<u8>> {
    use mysql_common::scramble;
    match plugin {
        NATIVE => Some(scramble::scramble_native(nonce, password).map(|s| s.to_vec()).unwrap_or_default()),
        "caching_sha2_password" => Some(scramble::scramble_sha256(nonce, password).map(|s| s.to_vec()).unwrap_or_default()),
        _ => None,
    }
}

/// Relay auth packets both ways until the server's OK (returns its status
/// flags) or ERR (returns None). Full duplex: after caching_sha2's fast-auth
/// success (`01 03`) the server sends OK without a client packet.
pub async fn auth_exchange(client: &mut ClientIo, server: &mut ServerIo, tls_backend: bool) -> Result<Option<u16>, SessionError> {
    // A client on TLS to thaw sends clear-text passwords (caching_sha2 full
    // authentication, mysql_clear_password) that must not go on in plain text.
    let clear_text_unsafe = client.stream_mut().is_tls() && !tls_backend;
    let mut clear_text_next = false;
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
                clear_text_next = full_auth_requested || p.starts_with(b"\xfemysql_clear_password\0");
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
                if clear_text_unsafe && clear_text_next && p.as_ref() != [0x02] {
                    // The client took its TLS leg to thaw for the whole path: its
                    // password in clear text would reach the server unencrypted.
                    refuse(client, 1045, "28000", "thaw: the client sent a clear-text password (its leg to thaw is TLS) \
                        but thaw's leg to the server is plain text; not forwarded. Set backend_tls, or use mysql_native_password/ed25519").await?;
                    return Ok(None);
                }
                clear_text_next = false;
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
