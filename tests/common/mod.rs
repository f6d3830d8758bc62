//! Shared helpers for thaw's Rust integration tests.
//!
//! * [`Thaw`]: the real `thaw` binary on free ports with an empty rules
//!   folder (or given rules/config/extra args), killed on drop, its log kept.
//! * [`TestDb`] / [`TestUser`]: a database (`thaw_rs_<test>_<random>`) or a
//!   user made for one test and dropped at the end, even when the test panics.
//! * [`raw`]: a small, independent MySQL protocol client over a plain
//!   `TcpStream`, for what mysql_async cannot do (choose capabilities, send
//!   arbitrary commands, compare packets byte for byte, drop abruptly).
//!
//! MariaDB must answer on 127.0.0.1:3306 (root, empty password): when it does
//! not, every test fails loudly. Nothing is skipped.
#![allow(dead_code)]

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const DB_HOST: &str = "127.0.0.1";
pub const DB_PORT: u16 = 3306;
pub const DB_USER: &str = "root";

// ------------------------------------------------------------------ MariaDB

/// Panic with a clear message unless MariaDB accepts TCP connections.
pub fn require_mariadb() {
    let addr: SocketAddr = format!("{DB_HOST}:{DB_PORT}").parse().unwrap();
    if let Err(e) = TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
        panic!(
            "MariaDB is not reachable on {addr} ({e}). These tests need a running MariaDB 10.11 \
             with user root and an empty password; start it (scripts/test.sh does) and run again."
        );
    }
}

/// A short random hex string, unique per process and call.
pub fn unique() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    format!("{:08x}", h.finish() as u32)
}

fn base_opts(port: u16, db: Option<&str>) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname(DB_HOST)
        .tcp_port(port)
        .user(Some(DB_USER))
        .pass(Some(""))
        .db_name(db)
        // mysql_async would otherwise switch a loopback TCP connection to the
        // server's unix socket, silently bypassing thaw.
        .prefer_socket(false)
}

/// Options for a connection straight to MariaDB.
pub fn direct_opts(db: Option<&str>) -> OptsBuilder {
    base_opts(DB_PORT, db)
}

/// A connection straight to MariaDB.
pub async fn direct(db: Option<&str>) -> Conn {
    require_mariadb();
    Conn::new(direct_opts(db)).await.unwrap_or_else(|e| panic!("connecting to MariaDB on {DB_HOST}:{DB_PORT} as root failed: {e}"))
}

/// Run statements on a fresh direct connection (setup and cleanup).
pub async fn direct_exec(db: Option<&str>, sqls: &[&str]) {
    let mut c = direct(db).await;
    for s in sqls {
        c.query_drop(*s).await.unwrap_or_else(|e| panic!("direct setup statement failed: {s}\n{e}"));
    }
    c.disconnect().await.ok();
}

/// Run `f` on a fresh thread with its own runtime (for Drop impls, which may
/// run inside or outside a runtime).
fn block_on_thread<F>(f: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let t = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(f)
    });
    let _ = t.join();
}

/// A database of one test's own, dropped at the end.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub async fn new(test: &str) -> TestDb {
        require_mariadb();
        let name = format!("thaw_rs_{test}_{}", unique());
        assert!(name.len() <= 64, "database name too long: {name}");
        direct_exec(None, &[&format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")]).await;
        TestDb { name }
    }
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS `{}`", self.name);
        block_on_thread(async move {
            if let Ok(mut c) = Conn::new(direct_opts(None)).await {
                if let Err(e) = c.query_drop(&sql).await {
                    eprintln!("cleanup: {sql}: {e}");
                }
                c.disconnect().await.ok();
            }
        });
    }
}

/// A user of one test's own (`'name'@'%'` with a password), dropped at the end.
pub struct TestUser {
    pub name: String,
    pub password: String,
}

impl TestUser {
    pub async fn new(db: &str) -> TestUser {
        let name = format!("thaw_rs_u_{}", unique());
        let password = format!("pw-{}-Zz9!", unique());
        direct_exec(
            None,
            &[
                &format!("CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'"),
                &format!("CREATE USER '{name}'@'localhost' IDENTIFIED BY '{password}'"),
                &format!("GRANT ALL ON `{db}`.* TO '{name}'@'%'"),
                &format!("GRANT ALL ON `{db}`.* TO '{name}'@'localhost'"),
            ],
        )
        .await;
        TestUser { name, password }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let sqls = [format!("DROP USER IF EXISTS '{}'@'%'", self.name), format!("DROP USER IF EXISTS '{}'@'localhost'", self.name)];
        block_on_thread(async move {
            if let Ok(mut c) = Conn::new(direct_opts(None)).await {
                for s in sqls {
                    if let Err(e) = c.query_drop(&s).await {
                        eprintln!("cleanup: {s}: {e}");
                    }
                }
                c.disconnect().await.ok();
            }
        });
    }
}

/// Sets a GLOBAL variable for the duration of a test and restores it on drop.
pub struct GlobalVar {
    name: String,
    old: String,
}

impl GlobalVar {
    pub async fn set(name: &str, value: &str) -> GlobalVar {
        let mut c = direct(None).await;
        let old: String = c.query_first(format!("SELECT @@GLOBAL.{name}")).await.unwrap().expect("global variable");
        c.query_drop(format!("SET GLOBAL {name} = {value}")).await.unwrap();
        c.disconnect().await.ok();
        GlobalVar { name: name.into(), old }
    }
}

impl Drop for GlobalVar {
    fn drop(&mut self) {
        let sql = format!("SET GLOBAL {} = {}", self.name, self.old);
        block_on_thread(async move {
            match Conn::new(direct_opts(None)).await {
                Ok(mut c) => {
                    if let Err(e) = c.query_drop(&sql).await {
                        eprintln!("restoring: {sql}: {e}");
                    }
                    c.disconnect().await.ok();
                }
                Err(e) => eprintln!("restoring: {sql}: cannot connect: {e}"),
            }
        });
    }
}

/// Fail the test if `fut` takes longer than `secs` (no test may hang).
pub async fn within<T>(secs: u64, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs} s: {what}"),
    }
}

// ------------------------------------------------------------------ thaw

pub fn thaw_bin() -> &'static str {
    env!("CARGO_BIN_EXE_thaw")
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[derive(Default, Clone)]
pub struct ThawBuilder {
    rules: Option<PathBuf>,
    config: Option<PathBuf>,
    backend: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl ThawBuilder {
    /// A rules file or folder (default: a fresh empty folder).
    pub fn rules(mut self, p: impl AsRef<Path>) -> Self {
        self.rules = Some(p.as_ref().to_path_buf());
        self
    }
    /// A YAML config file passed with `--config`.
    pub fn config(mut self, p: impl AsRef<Path>) -> Self {
        self.config = Some(p.as_ref().to_path_buf());
        self
    }
    /// Backend address (default 127.0.0.1:3306).
    pub fn backend(mut self, addr: impl Into<String>) -> Self {
        self.backend = Some(addr.into());
        self
    }
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Spawn thaw and wait until it listens. Panics (with thaw's log) if it does not.
    pub fn start(self) -> Thaw {
        require_mariadb();
        let tmp = tempfile::tempdir().expect("tempdir");
        let rules = self.rules.clone().unwrap_or_else(|| {
            let d = tmp.path().join("rules");
            std::fs::create_dir(&d).unwrap();
            d
        });
        let mut last_log = String::new();
        // Free ports can be taken between probing and binding: retry with new ones.
        for _ in 0..5 {
            let (port, admin) = (free_port(), free_port());
            if port == admin {
                continue;
            }
            let mut cmd = Command::new(thaw_bin());
            cmd.arg("run");
            if let Some(c) = &self.config {
                cmd.arg("--config").arg(c);
            }
            cmd.arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--backend")
                .arg(self.backend.clone().unwrap_or_else(|| format!("{DB_HOST}:{DB_PORT}")))
                .arg("--admin")
                .arg(format!("127.0.0.1:{admin}"))
                .arg("--rules")
                .arg(&rules)
                .args(&self.args)
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            for (k, v) in &self.env {
                cmd.env(k, v);
            }
            let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {}: {e}", thaw_bin()));
            let log = Arc::new(Mutex::new(String::new()));
            for out in [Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>, Box::new(child.stdout.take().unwrap())] {
                let log = log.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(out).lines() {
                        let Ok(line) = line else { break };
                        let mut l = log.lock().unwrap();
                        l.push_str(&line);
                        l.push('\n');
                    }
                });
            }
            let mut thaw = Thaw {
                child: Some(child),
                addr: format!("127.0.0.1:{port}").parse().unwrap(),
                admin: format!("127.0.0.1:{admin}").parse().unwrap(),
                log,
                _tmp: None,
                rules: rules.clone(),
                exit: None,
            };
            match thaw.wait_ready(Duration::from_secs(20)) {
                Ok(()) => {
                    thaw._tmp = Some(tmp);
                    return thaw;
                }
                Err(why) => {
                    thaw.kill();
                    last_log = thaw.log();
                    // Lost a race for a port: try again with new ones.
                    if !(last_log.contains("cannot listen") || last_log.contains("in use")) {
                        panic!("thaw did not start: {why}\n--- thaw log ---\n{last_log}");
                    }
                }
            }
        }
        panic!("thaw did not start after 5 attempts\n--- thaw log ---\n{last_log}");
    }
}

/// A running thaw process. Killed (SIGKILL) on drop unless it already exited.
pub struct Thaw {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    log: Arc<Mutex<String>>,
    _tmp: Option<tempfile::TempDir>,
    pub rules: PathBuf,
    exit: Option<ExitStatus>,
}

impl Thaw {
    pub fn builder() -> ThawBuilder {
        ThawBuilder::default()
    }
    /// thaw in front of 127.0.0.1:3306 with an empty rules folder.
    pub fn start() -> Thaw {
        ThawBuilder::default().start()
    }
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("thaw already reaped")
    }
    /// Everything thaw wrote to stderr/stdout so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn opts(&self, db: Option<&str>) -> OptsBuilder {
        base_opts(self.port(), db)
    }
    /// A mysql_async connection through thaw.
    pub async fn conn(&self, db: Option<&str>) -> Conn {
        match Conn::new(self.opts(db)).await {
            Ok(c) => c,
            Err(e) => panic!("connecting through thaw ({}) failed: {e}\n--- thaw log ---\n{}", self.addr, self.log()),
        }
    }

    /// Ready = both the listen and the admin port are bound. Checked without
    /// opening a client session (which would connect to the backend and move
    /// the metrics): the admin port accepts, and the listen port cannot be bound.
    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                return Err(format!("thaw exited with {st} before listening"));
            }
            // thaw binds the listen port before the admin port; probing the
            // listen port by binding it only once the admin port is up cannot
            // steal it from thaw.
            let admin_up = TcpStream::connect_timeout(&self.admin, Duration::from_millis(200)).is_ok();
            if admin_up && TcpListener::bind(self.addr).is_err() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not listening on {} / {} after {timeout:?}", self.addr, self.admin));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if let (None, Some(c)) = (self.exit, self.child.as_mut()) {
            self.exit = c.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Wait for the process to exit; `None` if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send a signal by name (TERM, HUP, ...) with kill(1).
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().expect("kill(1)");
        assert!(st.success(), "kill -{sig} {} failed", self.pid());
    }

    pub fn kill(&mut self) {
        if let (None, Some(c)) = (self.exit, self.child.as_mut()) {
            let _ = c.kill();
            self.exit = c.wait().ok();
        }
    }

    /// GET a path on the admin port: (status code, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path)
    }

    /// The Prometheus text of /metrics.
    pub fn metrics(&self) -> String {
        let (code, body) = self.admin_get("/metrics");
        assert_eq!(code, 200, "/metrics answered {code}: {body}");
        body
    }

    /// Value of one sample (`name` or `name{labels}` exactly as exposed), if present.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        metric_value(&self.metrics(), sample)
    }
}

impl Drop for Thaw {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(200).collect();
            eprintln!("--- thaw log ({}, last {} lines) ---", self.addr, tail.len());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

pub fn metric_value(text: &str, sample: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == sample).then(|| value.parse().ok()).flatten()
    })
}

/// Minimal HTTP/1.1 GET (the admin port closes the connection after answering).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).unwrap_or_else(|e| panic!("admin {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap_or_else(|e| panic!("admin {addr}{path}: {e}"));
    let code = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("bad HTTP response: {resp:?}"));
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

// ------------------------------------------------------------------ raw protocol client

pub mod raw {
    //! An independent, deliberately small MySQL client: enough protocol to log
    //! in as root with an empty password and read whole responses, keeping
    //! every packet's sequence id and bytes so two servers' answers can be
    //! compared exactly.
    use std::fmt;
    use std::io::{self, Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;

    pub const MAX_FRAME: usize = 0xFF_FFFF;

    pub mod caps {
        pub const LONG_PASSWORD: u32 = 1;
        pub const FOUND_ROWS: u32 = 2;
        pub const CONNECT_WITH_DB: u32 = 8;
        pub const COMPRESS: u32 = 0x20;
        pub const LOCAL_FILES: u32 = 0x80;
        pub const PROTOCOL_41: u32 = 0x200;
        pub const SSL: u32 = 0x800;
        pub const TRANSACTIONS: u32 = 0x2000;
        pub const SECURE_CONNECTION: u32 = 0x8000;
        pub const MULTI_STATEMENTS: u32 = 1 << 16;
        pub const MULTI_RESULTS: u32 = 1 << 17;
        pub const PS_MULTI_RESULTS: u32 = 1 << 18;
        pub const PLUGIN_AUTH: u32 = 1 << 19;
        pub const CONNECT_ATTRS: u32 = 1 << 20;
        pub const PLUGIN_AUTH_LENENC: u32 = 1 << 21;
        pub const SESSION_TRACK: u32 = 1 << 23;
        pub const DEPRECATE_EOF: u32 = 1 << 24;
        pub const OPTIONAL_RESULTSET_METADATA: u32 = 1 << 25;
        pub const ZSTD: u32 = 1 << 26;
        pub const QUERY_ATTRIBUTES: u32 = 1 << 27;

        /// A typical modern client, without DEPRECATE_EOF.
        pub const BASIC: u32 = LONG_PASSWORD
            | PROTOCOL_41
            | TRANSACTIONS
            | SECURE_CONNECTION
            | MULTI_STATEMENTS
            | MULTI_RESULTS
            | PS_MULTI_RESULTS
            | PLUGIN_AUTH;
    }

    pub mod status {
        pub const IN_TRANS: u16 = 1;
        pub const AUTOCOMMIT: u16 = 2;
        pub const MORE_RESULTS: u16 = 8;
        pub const CURSOR_EXISTS: u16 = 0x40;
        pub const PS_OUT_PARAMS: u16 = 0x1000;
    }

    pub mod cmd {
        pub const QUIT: u8 = 0x01;
        pub const INIT_DB: u8 = 0x02;
        pub const QUERY: u8 = 0x03;
        pub const FIELD_LIST: u8 = 0x04;
        pub const STATISTICS: u8 = 0x09;
        pub const PING: u8 = 0x0E;
        pub const BINLOG_DUMP: u8 = 0x12;
        pub const STMT_PREPARE: u8 = 0x16;
        pub const STMT_EXECUTE: u8 = 0x17;
        pub const STMT_SEND_LONG_DATA: u8 = 0x18;
        pub const STMT_CLOSE: u8 = 0x19;
        pub const STMT_RESET: u8 = 0x1A;
        pub const SET_OPTION: u8 = 0x1B;
        pub const STMT_FETCH: u8 = 0x1C;
        pub const RESET_CONNECTION: u8 = 0x1F;
    }

    /// One logical packet as received: the sequence id of its first frame,
    /// how many frames carried it, and its payload.
    #[derive(Clone, PartialEq, Eq)]
    pub struct Pkt {
        pub seq: u8,
        pub frames: usize,
        pub payload: Vec<u8>,
    }

    impl fmt::Debug for Pkt {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let shown = &self.payload[..self.payload.len().min(48)];
            let hex: String = shown.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
            write!(
                f,
                "Pkt{{seq {}, {} frame(s), {} bytes: [{hex}{}] {:?}}}",
                self.seq,
                self.frames,
                self.payload.len(),
                if shown.len() < self.payload.len() { " …" } else { "" },
                String::from_utf8_lossy(shown)
            )
        }
    }

    impl Pkt {
        pub fn is_ok(&self) -> bool {
            self.payload.first() == Some(&0x00)
        }
        pub fn is_err(&self) -> bool {
            self.payload.first() == Some(&0xFF)
        }
        /// (code, sqlstate, message) of an ERR packet.
        pub fn err(&self) -> Option<(u16, String, String)> {
            let p = &self.payload;
            if !self.is_err() || p.len() < 3 {
                return None;
            }
            let code = u16::from_le_bytes([p[1], p[2]]);
            if p.get(3) == Some(&b'#') && p.len() >= 9 {
                Some((code, String::from_utf8_lossy(&p[4..9]).into(), String::from_utf8_lossy(&p[9..]).into()))
            } else {
                Some((code, String::new(), String::from_utf8_lossy(&p[3..]).into()))
            }
        }
        /// Status flags of an OK packet (0x00 or 0xFE with DEPRECATE_EOF).
        pub fn ok_status(&self) -> Option<u16> {
            let mut p = self.payload.get(1..)?;
            lenenc(&mut p)?;
            lenenc(&mut p)?;
            Some(u16::from_le_bytes([*p.first()?, *p.get(1)?]))
        }
        /// (affected rows, last insert id) of an OK packet.
        pub fn ok_counts(&self) -> Option<(u64, u64)> {
            let mut p = self.payload.get(1..)?;
            Some((lenenc(&mut p)?, lenenc(&mut p)?))
        }
        /// Status flags of an old-style EOF packet.
        pub fn eof_status(&self) -> Option<u16> {
            let p = &self.payload;
            (p.first() == Some(&0xFE) && p.len() >= 5).then(|| u16::from_le_bytes([p[3], p[4]]))
        }
    }

    /// Read a length-encoded integer and advance.
    pub fn lenenc(p: &mut &[u8]) -> Option<u64> {
        let (v, n) = match *p.first()? {
            x @ 0..=0xFA => (x as u64, 1),
            0xFC => (u16::from_le_bytes(p.get(1..3)?.try_into().ok()?) as u64, 3),
            0xFD => (u32::from_le_bytes([*p.get(1)?, *p.get(2)?, *p.get(3)?, 0]) as u64, 4),
            0xFE => (u64::from_le_bytes(p.get(1..9)?.try_into().ok()?), 9),
            _ => return None,
        };
        *p = &p[n..];
        Some(v)
    }

    pub fn put_lenenc(out: &mut Vec<u8>, v: u64) {
        match v {
            0..=0xFA => out.push(v as u8),
            0xFB..=0xFFFF => {
                out.push(0xFC);
                out.extend_from_slice(&(v as u16).to_le_bytes());
            }
            0x1_0000..=0xFF_FFFF => {
                out.push(0xFD);
                out.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
            }
            _ => {
                out.push(0xFE);
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }

    /// The response shape to read after a command.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Expect {
        /// COM_QUERY: OK / ERR / text result sets, following MORE_RESULTS.
        Query,
        /// COM_STMT_EXECUTE: OK / ERR / binary result sets (no cursor).
        Execute,
        /// COM_STMT_PREPARE.
        Prepare,
        /// One packet (PING, INIT_DB, RESET_CONNECTION, SET_OPTION, STMT_RESET, STATISTICS).
        One,
        /// COM_FIELD_LIST: column definitions up to a terminator.
        FieldList,
        /// No response at all (STMT_CLOSE, STMT_SEND_LONG_DATA).
        Nothing,
        /// COM_STMT_FETCH: binary rows up to a terminator, or ERR.
        Fetch,
    }

    #[derive(Debug, Clone)]
    pub struct Greeting {
        pub version: String,
        pub thread_id: u32,
        pub caps: u32,
        pub ext_caps: u32,
        pub charset: u8,
        pub status: u16,
        pub plugin: String,
    }

    pub struct RawConn {
        pub stream: TcpStream,
        seq: u8,
        /// Capabilities in force (what we asked, limited to what the server offered).
        pub caps: u32,
        pub greeting: Greeting,
        /// Status flags of the last OK/EOF seen.
        pub status: u16,
        /// Every packet of the login exchange, as received.
        pub login: Vec<Pkt>,
    }

    impl RawConn {
        /// Log in as root with an empty password, asking for `want` capabilities.
        pub fn connect(addr: SocketAddr, want: u32, db: Option<&str>) -> io::Result<RawConn> {
            let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            stream.set_read_timeout(Some(Duration::from_secs(30)))?;
            stream.set_write_timeout(Some(Duration::from_secs(30)))?;
            stream.set_nodelay(true)?;
            let mut c = RawConn {
                stream,
                seq: 0,
                caps: 0,
                greeting: Greeting {
                    version: String::new(),
                    thread_id: 0,
                    caps: 0,
                    ext_caps: 0,
                    charset: 0,
                    status: 0,
                    plugin: String::new(),
                },
                status: 0,
                login: vec![],
            };
            let g = c.read_packet()?;
            c.login.push(g.clone());
            if g.is_err() {
                return Err(io::Error::other(format!("server refused before the handshake: {:?}", g.err())));
            }
            c.greeting = parse_greeting(&g.payload).ok_or_else(|| io::Error::other(format!("bad greeting {g:?}")))?;
            let mut caps = want & c.greeting.caps;
            if db.is_some() {
                caps |= caps::CONNECT_WITH_DB;
            }
            caps |= caps::PROTOCOL_41;
            c.caps = caps;
            let mut r = Vec::new();
            r.extend_from_slice(&caps.to_le_bytes());
            r.extend_from_slice(&(1u32 << 30).to_le_bytes());
            r.push(45); // utf8mb4_general_ci
            r.extend_from_slice(&[0; 23]);
            r.extend_from_slice(b"root\0");
            r.push(0); // empty auth response: empty password
            if let Some(db) = db {
                r.extend_from_slice(db.as_bytes());
                r.push(0);
            }
            if caps & caps::PLUGIN_AUTH != 0 {
                r.extend_from_slice(b"mysql_native_password\0");
            }
            c.write_packet(&r)?;
            loop {
                let p = c.read_packet()?;
                c.login.push(p.clone());
                match p.payload.first() {
                    Some(0x00) => {
                        c.status = p.ok_status().unwrap_or(0);
                        return Ok(c);
                    }
                    Some(0xFF) => return Err(io::Error::other(format!("login refused: {:?}", p.err()))),
                    // AuthSwitchRequest: an empty password answers with empty data.
                    Some(0xFE) => c.write_packet(&[])?,
                    _ => return Err(io::Error::other(format!("unexpected packet during login: {p:?}"))),
                }
            }
        }

        pub fn deprecate_eof(&self) -> bool {
            self.caps & caps::DEPRECATE_EOF != 0
        }

        /// Set the sequence id the next frame (either direction) must carry.
        pub fn set_seq(&mut self, seq: u8) {
            self.seq = seq;
        }

        /// Write one logical packet, split into frames, numbered from the current seq.
        pub fn write_packet(&mut self, payload: &[u8]) -> io::Result<()> {
            let mut buf = Vec::with_capacity(payload.len() + 8);
            let mut rest = payload;
            loop {
                let n = rest.len().min(MAX_FRAME);
                buf.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
                buf.push(self.seq);
                self.seq = self.seq.wrapping_add(1);
                buf.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                if n < MAX_FRAME {
                    break;
                }
            }
            self.stream.write_all(&buf)
        }

        /// Read one logical packet, checking that frame sequence ids follow on.
        pub fn read_packet(&mut self) -> io::Result<Pkt> {
            let mut payload = Vec::new();
            let mut frames = 0;
            let mut first_seq = None;
            loop {
                let mut h = [0u8; 4];
                self.stream.read_exact(&mut h)?;
                let len = h[0] as usize | (h[1] as usize) << 8 | (h[2] as usize) << 16;
                if h[3] != self.seq {
                    return Err(io::Error::other(format!("sequence id out of order: got {}, expected {}", h[3], self.seq)));
                }
                self.seq = self.seq.wrapping_add(1);
                first_seq.get_or_insert(h[3]);
                let at = payload.len();
                payload.resize(at + len, 0);
                self.stream.read_exact(&mut payload[at..])?;
                frames += 1;
                if len < MAX_FRAME {
                    return Ok(Pkt { seq: first_seq.unwrap(), frames, payload });
                }
            }
        }

        /// Send a command (seq restarts at 0) and read its whole response.
        pub fn command(&mut self, payload: &[u8], expect: Expect) -> io::Result<Vec<Pkt>> {
            self.seq = 0;
            self.write_packet(payload)?;
            self.read_response(expect)
        }

        pub fn query(&mut self, sql: &str) -> io::Result<Vec<Pkt>> {
            let mut p = vec![cmd::QUERY];
            p.extend_from_slice(sql.as_bytes());
            self.command(&p, Expect::Query)
        }

        /// A query that must succeed (no ERR anywhere in its response).
        pub fn query_ok(&mut self, sql: &str) -> Vec<Pkt> {
            let r = self.query(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            if let Some(e) = r.iter().find(|p| p.is_err()) {
                panic!("{sql}: {:?}", e.err());
            }
            r
        }

        /// Text rows of a single-result query, as strings (NULL = None).
        pub fn query_rows(&mut self, sql: &str) -> Vec<Vec<Option<String>>> {
            let r = self.query_ok(sql);
            text_rows(&r, self.deprecate_eof())
        }

        /// COM_STMT_PREPARE; returns the response and the statement id (None on ERR).
        pub fn prepare(&mut self, sql: &str) -> io::Result<(Vec<Pkt>, Option<u32>)> {
            let mut p = vec![cmd::STMT_PREPARE];
            p.extend_from_slice(sql.as_bytes());
            let r = self.command(&p, Expect::Prepare)?;
            let id = r.first().filter(|p| p.is_ok()).map(|p| u32::from_le_bytes(p.payload[1..5].try_into().unwrap()));
            Ok((r, id))
        }

        pub fn read_response(&mut self, expect: Expect) -> io::Result<Vec<Pkt>> {
            let mut out = Vec::new();
            match expect {
                Expect::Nothing => {}
                Expect::One => {
                    let p = self.read_packet()?;
                    let s = match p.payload.first() {
                        Some(0xFE) if !self.deprecate_eof() => p.eof_status(),
                        Some(0x00 | 0xFE) => p.ok_status(),
                        _ => None,
                    };
                    if let Some(s) = s {
                        self.status = s;
                    }
                    out.push(p);
                }
                Expect::Fetch => loop {
                    let p = self.read_packet()?;
                    let end = p.is_err() || (p.payload.first() == Some(&0xFE) && p.payload.len() < MAX_FRAME);
                    out.push(p);
                    if end {
                        break;
                    }
                },
                Expect::FieldList => loop {
                    let p = self.read_packet()?;
                    let end = p.is_err() || (p.payload.first() == Some(&0xFE) && p.payload.len() < 9);
                    out.push(p);
                    if end {
                        break;
                    }
                },
                Expect::Prepare => {
                    let p = self.read_packet()?;
                    let ok = p.is_ok() && p.payload.len() >= 9;
                    let (cols, params) = if ok {
                        (u16::from_le_bytes([p.payload[5], p.payload[6]]), u16::from_le_bytes([p.payload[7], p.payload[8]]))
                    } else {
                        (0, 0)
                    };
                    out.push(p);
                    for n in [params, cols] {
                        for _ in 0..n {
                            out.push(self.read_packet()?);
                        }
                        if n > 0 && !self.deprecate_eof() {
                            out.push(self.read_packet()?);
                        }
                    }
                }
                Expect::Query | Expect::Execute => 'results: loop {
                    let p = self.read_packet()?;
                    match p.payload.first() {
                        Some(0x00) => {
                            let s = p.ok_status().unwrap_or(0);
                            self.status = s;
                            out.push(p);
                            if s & status::MORE_RESULTS != 0 {
                                continue 'results;
                            }
                            break 'results;
                        }
                        Some(0xFF) => {
                            out.push(p);
                            break 'results;
                        }
                        Some(0xFB) => return Err(io::Error::other("LOCAL INFILE request: not supported by the raw client")),
                        _ => {
                            let mut b = &p.payload[..];
                            let n = lenenc(&mut b).ok_or_else(|| io::Error::other(format!("bad column count {p:?}")))?;
                            out.push(p);
                            for _ in 0..n {
                                out.push(self.read_packet()?);
                            }
                            if !self.deprecate_eof() {
                                let eof = self.read_packet()?;
                                let cursor = eof.eof_status().is_some_and(|s| s & status::CURSOR_EXISTS != 0);
                                out.push(eof);
                                if cursor && expect == Expect::Execute {
                                    break 'results;
                                }
                            }
                            loop {
                                let r = self.read_packet()?;
                                if r.is_err() {
                                    out.push(r);
                                    break 'results;
                                }
                                if r.payload.first() == Some(&0xFE) && r.payload.len() < MAX_FRAME {
                                    let s = if self.deprecate_eof() { r.ok_status() } else { r.eof_status() }.unwrap_or(0);
                                    self.status = s;
                                    out.push(r);
                                    if s & status::MORE_RESULTS != 0 {
                                        continue 'results;
                                    }
                                    break 'results;
                                }
                                out.push(r);
                            }
                        }
                    }
                },
            }
            Ok(out)
        }
    }

    fn parse_greeting(p: &[u8]) -> Option<Greeting> {
        if *p.first()? != 10 {
            return None;
        }
        let nul = p[1..].iter().position(|&b| b == 0)? + 1;
        let version = String::from_utf8_lossy(&p[1..nul]).into_owned();
        let v = nul + 1;
        let thread_id = u32::from_le_bytes(p.get(v..v + 4)?.try_into().ok()?);
        let lo = v + 13;
        let caps = u16::from_le_bytes([p[lo], p[lo + 1]]) as u32 | (u16::from_le_bytes([*p.get(v + 18)?, *p.get(v + 19)?]) as u32) << 16;
        let charset = p[v + 15];
        let status = u16::from_le_bytes([p[v + 16], p[v + 17]]);
        let ext_caps = if caps & caps::LONG_PASSWORD == 0 { u32::from_le_bytes(p.get(v + 27..v + 31)?.try_into().ok()?) } else { 0 };
        let auth_len = p[v + 20] as usize;
        let part2 = v + 31;
        let part2_len = auth_len.saturating_sub(8).max(13);
        let plugin_at = part2 + part2_len;
        let plugin = p
            .get(plugin_at..)
            .map(|s| String::from_utf8_lossy(s.split(|&b| b == 0).next().unwrap_or(&[])).into_owned())
            .unwrap_or_default();
        Some(Greeting { version, thread_id, caps, ext_caps, charset, status, plugin })
    }

    /// Text-protocol rows of the first result set in a response.
    pub fn text_rows(resp: &[Pkt], deprecate_eof: bool) -> Vec<Vec<Option<String>>> {
        let Some(first) = resp.first() else { return vec![] };
        if first.is_ok() || first.is_err() {
            return vec![];
        }
        let mut b = &first.payload[..];
        let n = lenenc(&mut b).unwrap() as usize;
        let skip = 1 + n + usize::from(!deprecate_eof);
        let mut rows = vec![];
        for p in &resp[skip..] {
            if p.is_err() || (p.payload.first() == Some(&0xFE) && p.payload.len() < MAX_FRAME) {
                break;
            }
            let mut b = &p.payload[..];
            let mut row = vec![];
            for _ in 0..n {
                if b.first() == Some(&0xFB) {
                    b = &b[1..];
                    row.push(None);
                } else {
                    let len = lenenc(&mut b).unwrap() as usize;
                    row.push(Some(String::from_utf8_lossy(&b[..len]).into_owned()));
                    b = &b[len..];
                }
            }
            rows.push(row);
        }
        rows
    }
}
