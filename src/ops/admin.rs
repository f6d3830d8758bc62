//! Admin HTTP: `/metrics` (Prometheus), `/livez`, `/readyz`. A few fixed GET
//! routes do not justify an HTTP framework: a minimal HTTP/1.1 responder.
use super::Metrics;
use super::reload::Generation;
use crate::config::Config;
use crate::wire::{PacketIo, packets};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    /// Probe credentials and timeouts follow reloads.
    pub generation: watch::Receiver<Arc<Generation>>,
    pub drain: watch::Receiver<bool>,
}

pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

pub async fn serve(listener: TcpListener, state: AdminState) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let state = state.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle(stream, state)).await;
        });
    }
}

async fn handle(mut stream: TcpStream, state: AdminState) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") && len < buf.len() {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", state.metrics.encode()),
        ("GET", "/livez") => ("200 OK", "text/plain", "ok\n".to_string()),
        ("GET", "/readyz") => match readiness(&state).await {
            Ok(()) => ("200 OK", "text/plain", "ready\n".to_string()),
            Err(why) => ("503 Service Unavailable", "text/plain", format!("not ready: {why}\n")),
        },
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => ("405 Method Not Allowed", "text/plain", "only GET\n".to_string()),
    };
    let resp = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    stream.write_all(resp.as_bytes()).await?;
    stream.shutdown().await
}

/// Ready when not draining and the backend answers: a mysql_async ping with
/// the probe credentials, or else a full handshake as a user that does not
/// exist. A completed handshake that ends in "access denied" is not counted
/// against `max_connect_errors`; a bare TCP connect that hangs up would be,
/// and would eventually block the pod's host (1129) for the app too.
async fn readiness(state: &AdminState) -> Result<(), String> {
    if *state.drain.borrow() {
        return Err("draining".into());
    }
    let config: Config = state.generation.borrow().config.clone();
    let timeout = Duration::from_millis(config.connect_timeout_ms.min(3000));
    let check = async {
        match &config.probe {
            Some(p) => {
                let (host, port) = split_host_port(&config.backend);
                let opts = mysql_async::OptsBuilder::default()
                    .ip_or_hostname(host)
                    .tcp_port(port)
                    .user(Some(p.user.clone()))
                    .pass(Some(p.password.clone()));
                let mut conn = mysql_async::Conn::new(opts).await.map_err(|e| e.to_string())?;
                use mysql_async::prelude::Queryable;
                conn.ping().await.map_err(|e| e.to_string())?;
                let _ = conn.disconnect().await;
                Ok(())
            }
            None => handshake_probe(&config.backend).await,
        }
    };
    tokio::time::timeout(timeout, check).await.map_err(|_| "backend check timed out".to_string())?
}

/// Greeting, then a HandshakeResponse41 for a user that should not exist.
/// Any auth answer (OK, ERR 1045, auth switch) means the server is up.
async fn handshake_probe(backend: &str) -> Result<(), String> {
    let mut io = PacketIo::new(TcpStream::connect(backend).await.map_err(|e| e.to_string())?, 1 << 20);
    let greeting = io.read().await.map_err(|e| e.to_string())?.ok_or("backend closed before its greeting")?;
    match greeting.first() {
        Some(10) => {}
        Some(0xFF) => return Err(format!("backend refused: {}", err_text(&greeting))),
        _ => return Err("backend did not send a MySQL greeting".into()),
    }
    let caps: u32 = 0x0000_0001 | 0x0000_0200 | 0x0000_8000 | 0x0008_0000; // LONG_PASSWORD, PROTOCOL_41, SECURE_CONNECTION, PLUGIN_AUTH
    let mut resp = caps.to_le_bytes().to_vec();
    resp.extend_from_slice(&(1u32 << 24).to_le_bytes());
    resp.push(33);
    resp.extend_from_slice(&[0; 23]);
    resp.extend_from_slice(b"thaw_readiness_probe\0");
    resp.push(0);
    resp.extend_from_slice(b"mysql_native_password\0");
    io.send(&resp).await.map_err(|e| e.to_string())?;
    io.flush().await.map_err(|e| e.to_string())?;
    let answer = io.read().await.map_err(|e| e.to_string())?.ok_or("backend closed during the handshake")?;
    match (answer.first(), packets::parse_err(&answer)) {
        (Some(0xFF), Some(e)) if e.code != 1045 && e.code != 1698 => Err(format!("backend refused: {}", err_text(&answer))),
        _ => Ok(()),
    }
}

fn err_text(p: &[u8]) -> String {
    packets::parse_err(p).map(|e| format!("{} {}", e.code, String::from_utf8_lossy(&e.message))).unwrap_or_default()
}

fn split_host_port(addr: &str) -> (String, u16) {
    match addr.rsplit_once(':') {
        Some((h, p)) => (h.trim_matches(['[', ']']).to_string(), p.parse().unwrap_or(3306)),
        None => (addr.to_string(), 3306),
    }
}
