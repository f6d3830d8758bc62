//! Admin HTTP: `/metrics` (Prometheus), `/livez`, `/readyz`. A few fixed GET
//! routes do not justify an HTTP framework: a minimal HTTP/1.1 responder.
use super::Metrics;
use crate::config::Config;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub config: Config,
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
/// the probe credentials, or else a TCP connect that yields a server greeting.
async fn readiness(state: &AdminState) -> Result<(), String> {
    if *state.drain.borrow() {
        return Err("draining".into());
    }
    let timeout = Duration::from_millis(state.config.connect_timeout_ms.min(3000));
    let check = async {
        match &state.config.probe {
            Some(p) => {
                let (host, port) = split_host_port(&state.config.backend);
                let opts = mysql_async::OptsBuilder::default().ip_or_hostname(host).tcp_port(port).user(Some(p.user.clone())).pass(Some(p.password.clone()));
                let mut conn = mysql_async::Conn::new(opts).await.map_err(|e| e.to_string())?;
                use mysql_async::prelude::Queryable;
                conn.ping().await.map_err(|e| e.to_string())?;
                let _ = conn.disconnect().await;
                Ok(())
            }
            None => {
                let mut s = TcpStream::connect(&state.config.backend).await.map_err(|e| e.to_string())?;
                let mut head = [0u8; 5];
                s.read_exact(&mut head).await.map_err(|e| e.to_string())?;
                match head[4] {
                    10 => Ok(()),
                    0xFF => Err("backend refused the connection (ERR greeting)".into()),
                    _ => Err("backend did not send a MySQL greeting".into()),
                }
            }
        }
    };
    tokio::time::timeout(timeout, check).await.map_err(|_| "backend check timed out".to_string())?
}

fn split_host_port(addr: &str) -> (String, u16) {
    match addr.rsplit_once(':') {
        Some((h, p)) => (h.trim_matches(['[', ']']).to_string(), p.parse().unwrap_or(3306)),
        None => (addr.to_string(), 3306),
    }
}
