//! Admin HTTP: `/metrics` (Prometheus), `/livez`, `/readyz`. A few fixed GET
//! routes do not justify an HTTP framework: a minimal HTTP/1.1 responder.
use super::Metrics;
use super::metrics::labels;
use super::reload::Generation;
use super::throttle::{Backoff, WarnLimiter};
use crate::config::Config;
use crate::wire::{PacketIo, caps, packets};
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    /// Probe credentials and timeouts follow reloads.
    pub generation: watch::Receiver<Arc<Generation>>,
    pub drain: watch::Receiver<bool>,
    /// The last backend check, shared by every `/readyz` (see [`Readiness`]).
    pub readiness: Arc<Readiness>,
}

impl AdminState {
    pub fn new(metrics: Arc<Metrics>, generation: watch::Receiver<Arc<Generation>>, drain: watch::Receiver<bool>) -> Self {
        AdminState { metrics, generation, drain, readiness: Arc::default() }
    }
}

pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

pub async fn serve(listener: TcpListener, state: AdminState) {
    // At most `admin_max_connections` handled at once; past that, connections
    // wait in the kernel's accept queue (a burst of probes is served in turn,
    // not refused).
    let slots = Arc::new(Semaphore::new(state.generation.borrow().config.admin_max_connections));
    let warn = WarnLimiter::new(Duration::from_secs(10));
    let mut backoff = Backoff::default();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff.reset();
                stream
            }
            Err(e) => {
                // EMFILE leaves the connection pending and the listener readable: without
                // a pause this loop would spin on failing accepts.
                state.metrics.accept_errors.get_or_create(&labels([("listener", "admin".into())])).inc();
                let pause = backoff.fail();
                if let Some(suppressed) = warn.check() {
                    tracing::warn!(listener = "admin", error = %e, retry_in_ms = pause.as_millis() as u64, suppressed, "accept failed");
                }
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle(stream, state)).await;
            drop(slot);
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
        ("GET", "/contention") => ("200 OK", "application/json", state.metrics.contention.top_json(50)),
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

/// The last backend check and when it ran. One check runs at a time (the
/// lock is held across it), and its answer serves every request for
/// `readiness_interval_ms`: whatever the request rate, the backend sees at
/// most one login per interval, and concurrent probes never compete for the
/// probe user's `MAX_USER_CONNECTIONS`.
#[derive(Default)]
pub struct Readiness {
    last: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Readiness {
    /// The cached answer if younger than `interval`, else the answer of a new `check`.
    pub async fn get<F: Future<Output = Result<(), String>>>(
        &self,
        interval: Duration,
        check: impl FnOnce() -> F,
    ) -> (Result<(), String>, bool) {
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = last.as_ref()
            && at.elapsed() < interval
        {
            return (answer.clone(), false);
        }
        let answer = check().await;
        *last = Some((Instant::now(), answer.clone()));
        (answer, true)
    }
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
    let interval = Duration::from_millis(config.readiness_interval_ms);
    let (answer, ran) = state.readiness.get(interval, || backend_check(config)).await;
    if ran {
        let outcome = if answer.is_ok() { "ready" } else { "not_ready" };
        state.metrics.readiness_checks.get_or_create(&labels([("outcome", outcome.into())])).inc();
    }
    answer
}

async fn backend_check(config: Config) -> Result<(), String> {
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
    let resp = caps::build_handshake_response("thaw_readiness_probe", &[], "mysql_native_password");
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn readiness_is_single_flight_and_cached_for_the_interval() {
        let r = Arc::new(Readiness::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (r, runs) = (r.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                r.get(Duration::from_secs(60), || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(())
                })
                .await
                .0
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(()));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1, "50 concurrent requests, one backend check");
        let (again, ran) = r.get(Duration::ZERO, || async { Err("down".to_string()) }).await;
        assert_eq!((again, ran), (Err("down".to_string()), true), "an expired answer is checked again");
    }
}
