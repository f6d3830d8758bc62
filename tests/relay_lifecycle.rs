//! Connection lifecycle through thaw: client and backend going away, commands
//! thaw refuses, SIGTERM drain, and an unreachable backend. Every wait is
//! bounded: a hang is a failure, never a stuck test.
mod common;

use common::raw::{self, RawConn, cmd};
use common::*;
use mysql_async::Conn;
use mysql_async::prelude::*;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

/// A direct connection that waits at most 3 s for row locks.
async fn lock_waiter(db: &str) -> Conn {
    let mut b = direct(Some(db)).await;
    b.query_drop("SET SESSION innodb_lock_wait_timeout = 3").await.unwrap();
    b
}

/// From a direct connection: the row is locked right now by someone else.
async fn assert_row_locked(b: &mut Conn, what: &str) {
    b.query_drop("BEGIN").await.unwrap();
    let r = b.query_drop("SELECT v FROM t WHERE id = 1 FOR UPDATE NOWAIT").await;
    b.query_drop("ROLLBACK").await.unwrap();
    let e = r.expect_err(&format!("{what}: the row should be locked"));
    assert!(matches!(server_code(&e), Some(1205 | 3572)), "{what}: NOWAIT on a locked row gave {e}");
}

/// Time until `b` gets the row lock (it must get it within 3 s), and the value it sees.
async fn time_to_lock(b: &mut Conn) -> (Duration, i64) {
    let (took, v) = try_lock(b).await;
    let v = v.unwrap_or_else(|e| panic!("the row lock was not released within innodb_lock_wait_timeout=3 ({took:?}): {e}"));
    (took, v)
}

/// Time until `b` gets the row lock or gives up (innodb_lock_wait_timeout=3).
async fn try_lock(b: &mut Conn) -> (Duration, Result<i64, mysql_async::Error>) {
    let t0 = Instant::now();
    b.query_drop("BEGIN").await.unwrap();
    let v: Result<Option<i64>, _> = within(10, "taking the row lock", b.query_first("SELECT v FROM t WHERE id = 1 FOR UPDATE")).await;
    let took = t0.elapsed();
    b.query_drop("ROLLBACK").await.unwrap();
    (took, v.map(|v| v.expect("row 1")))
}

// ---------------------------------------------------------------------- (a)

/// A client that vanishes (no COM_QUIT, socket just closed) in the middle of a
/// transaction: the backend session ends at once, so its row lock is released
/// and its uncommitted write rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_mid_transaction_releases_row_lock() {
    let db = TestDb::new("disc").await;
    direct_exec(Some(db.name()), &["CREATE TABLE t (id INT PRIMARY KEY, v INT)", "INSERT INTO t VALUES (1, 0)"]).await;
    let thaw = Thaw::start();
    let mut b = lock_waiter(db.name()).await;

    let mut a = RawConn::connect(thaw.addr, raw::caps::BASIC, Some(db.name())).expect("raw login through thaw");
    a.query_ok("BEGIN");
    a.query_ok("SELECT * FROM t WHERE id = 1 FOR UPDATE");
    a.query_ok("UPDATE t SET v = 99 WHERE id = 1");
    assert_row_locked(&mut b, "while A holds it through thaw").await;

    // Abrupt end: close the socket without COM_QUIT.
    a.stream.shutdown(std::net::Shutdown::Both).ok();
    drop(a);
    let (took, v) = time_to_lock(&mut b).await;
    assert!(took < Duration::from_millis(1000), "the row lock was released {took:?} after the client vanished (expected < 1 s)");
    assert_eq!(v, 0, "the vanished client's uncommitted UPDATE must be rolled back");
    b.disconnect().await.ok();
    wait_sessions_closed(&thaw).await;
}

/// Same, but the client vanishes while a statement of its transaction is still
/// running on the server. MariaDB itself only notices when the statement ends
/// (it does not watch the socket during SLEEP), so this is compared with the
/// same thing done directly: thaw must not hold the session (and the lock)
/// noticeably longer than the server alone does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_mid_statement_releases_row_lock() {
    let db = TestDb::new("discq").await;
    direct_exec(Some(db.name()), &["CREATE TABLE t (id INT PRIMARY KEY, v INT)", "INSERT INTO t VALUES (1, 0)"]).await;
    let thaw = Thaw::start();
    let mut b = lock_waiter(db.name()).await;

    let mut results = vec![];
    for (label, addr) in [("direct", format!("{DB_HOST}:{DB_PORT}").parse().unwrap()), ("through thaw", thaw.addr)] {
        let mut a = RawConn::connect(addr, raw::caps::BASIC, Some(db.name())).expect("raw login");
        a.query_ok("BEGIN");
        a.query_ok("UPDATE t SET v = 7 WHERE id = 1");
        // A statement still running when the client vanishes, sent but not waited for.
        a.set_seq(0);
        a.write_packet(b"\x03SELECT SLEEP(1.5)").unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_row_locked(&mut b, label).await;
        a.stream.shutdown(std::net::Shutdown::Both).ok();
        drop(a);
        let (took, v) = try_lock(&mut b).await;
        let v = v.unwrap_or_else(|e| panic!("{label}: the row lock was still held {took:?} after the client vanished mid-statement: {e}"));
        assert_eq!(v, 0, "{label}: the vanished client's UPDATE must be rolled back");
        results.push((label, took));
    }
    let (direct_took, thaw_took) = (results[0].1, results[1].1);
    assert!(
        thaw_took < direct_took + Duration::from_millis(1000),
        "client vanished during a running statement: lock released after {direct_took:?} direct but {thaw_took:?} through thaw"
    );
    b.disconnect().await.ok();
}

async fn wait_sessions_closed(thaw: &Thaw) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let open = thaw.metric("thaw_client_connections_open");
        if open == Some(0.0) {
            return;
        }
        assert!(Instant::now() < deadline, "thaw_client_connections_open is still {open:?} 5 s after the clients went away");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// COM_QUIT through thaw ends the backend session at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quit_ends_the_backend_session() {
    let thaw = Thaw::start();
    let c = thaw.conn(None).await;
    let id = c.id();
    let mut watcher = direct(None).await;
    let alive = |n: Option<i64>| n.unwrap_or(0) > 0;
    let q = format!("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = {id}");
    assert!(alive(watcher.query_first(&q).await.unwrap()), "the backend session {id} exists");
    c.disconnect().await.expect("COM_QUIT through thaw");
    let deadline = Instant::now() + Duration::from_secs(2);
    while alive(watcher.query_first(&q).await.unwrap()) {
        assert!(Instant::now() < deadline, "backend session {id} still there 2 s after COM_QUIT");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_sessions_closed(&thaw).await;
    watcher.disconnect().await.ok();
}

// ---------------------------------------------------------------------- (b)

/// The backend session is killed while the client is idle: the client's next
/// query fails promptly (no hang) and thaw ends the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_killed_while_idle() {
    let db = TestDb::new("killidle").await;
    let thaw = Thaw::start();
    let mut c = thaw.conn(Some(db.name())).await;
    let id: u32 = c.query_first("SELECT CONNECTION_ID()").await.unwrap().unwrap();
    assert_eq!(id, c.id(), "the greeting's thread id is the backend's");

    let mut k = direct(None).await;
    k.query_drop(format!("KILL CONNECTION {id}")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let r = within(10, "the first query after the backend was killed", c.query_drop("SELECT 1")).await;
    assert!(r.is_err(), "a query on a killed backend session must fail");
    // The connection is finished for good: a second attempt fails too, quickly.
    let r = within(10, "the second query after the backend was killed", c.query_drop("SELECT 1")).await;
    assert!(r.is_err());
    wait_sessions_closed(&thaw).await;
    // thaw itself is fine: a new connection works.
    let mut c2 = thaw.conn(Some(db.name())).await;
    let one: Option<i64> = c2.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    c2.disconnect().await.unwrap();
    k.disconnect().await.ok();
}

/// The backend session is killed while a statement runs: the client gets an
/// error for that statement promptly, not after the statement's own duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_killed_mid_query() {
    let db = TestDb::new("killq").await;
    let thaw = Thaw::start();
    let mut c = thaw.conn(Some(db.name())).await;
    let id: u32 = c.query_first("SELECT CONNECTION_ID()").await.unwrap().unwrap();
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut k = direct(None).await;
        k.query_drop(format!("KILL CONNECTION {id}")).await.unwrap();
        k.disconnect().await.ok();
    });
    let t0 = Instant::now();
    let r = within(15, "a SLEEP(30) whose backend session gets killed", c.query_drop("SELECT SLEEP(30)")).await;
    let took = t0.elapsed();
    killer.await.unwrap();
    let e = r.expect_err("the killed statement must fail");
    assert!(took < Duration::from_secs(5), "the error came {took:?} after the statement started ({e})");
    let r = within(10, "a query after the kill", c.query_drop("SELECT 1")).await;
    assert!(r.is_err(), "the connection is gone after KILL CONNECTION");
    wait_sessions_closed(&thaw).await;
}

/// KILL QUERY (not the connection): the statement fails with 1317 and the
/// session stays usable; 1317 is never retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_query_interrupts_only_the_statement() {
    let db = TestDb::new("killquery").await;
    let thaw = Thaw::start();
    let mut c = thaw.conn(Some(db.name())).await;
    let id: u32 = c.query_first("SELECT CONNECTION_ID()").await.unwrap().unwrap();
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut k = direct(None).await;
        k.query_drop(format!("KILL QUERY {id}")).await.unwrap();
        k.disconnect().await.ok();
    });
    let t0 = Instant::now();
    // SLEEP() interrupted by KILL QUERY returns 1 rather than failing; a
    // lock wait is interrupted with an error. Use the error-producing form.
    let r: Result<Option<i64>, _> = within(15, "SLEEP under KILL QUERY", c.query_first("SELECT SLEEP(30)")).await;
    killer.await.unwrap();
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(5), "KILL QUERY took effect only after {took:?}");
    match r {
        Ok(v) => assert_eq!(v, Some(1), "an interrupted SLEEP returns 1"),
        Err(e) => assert_eq!(server_code(&e), Some(1317), "KILL QUERY: {e}"),
    }
    let one: Option<i64> = c.query_first("SELECT 1").await.expect("the session survives KILL QUERY");
    assert_eq!(one, Some(1));
    c.disconnect().await.unwrap();
}

// ---------------------------------------------------------------------- (c)

/// Replication and unknown commands are refused with ERR 1047 (08S01) at the
/// right sequence id, and the connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_replication_commands_get_err_1047() {
    let thaw = Thaw::start();
    let addr = thaw.addr;
    tokio::task::spawn_blocking(move || {
        for caps in [raw::caps::BASIC, raw::caps::BASIC | raw::caps::DEPRECATE_EOF] {
            let mut c = RawConn::connect(addr, caps, None).expect("raw login through thaw");
            // COM_BINLOG_DUMP: binlog pos 4, flags 0, server id 4242, no file name.
            let mut dump = vec![cmd::BINLOG_DUMP];
            dump.extend_from_slice(&4u32.to_le_bytes());
            dump.extend_from_slice(&0u16.to_le_bytes());
            dump.extend_from_slice(&4242u32.to_le_bytes());
            for payload in [dump, vec![0x99, 1, 2, 3], vec![0xFA, 0, 0, 0, 0], vec![0x1E], vec![0x14]] {
                let r = c.command(&payload, raw::Expect::One).unwrap_or_else(|e| panic!("command 0x{:02x}: {e}", payload[0]));
                assert_eq!(r.len(), 1);
                assert_eq!(r[0].seq, 1, "the ERR answers seq 0 with seq 1");
                let (code, state, msg) = r[0].err().unwrap_or_else(|| panic!("command 0x{:02x}: expected ERR, got {:?}", payload[0], r[0]));
                assert_eq!((code, state.as_str()), (1047, "08S01"), "command 0x{:02x}: {msg}", payload[0]);
                // Still in step: PING, then a query.
                let p = c.command(&[cmd::PING], raw::Expect::One).unwrap();
                assert!(p.len() == 1 && p[0].is_ok() && p[0].seq == 1, "PING after a refused command: {p:?}");
                assert_eq!(c.query_rows("SELECT 'still here'"), vec![vec![Some("still here".to_string())]]);
            }
            // A refused multi-frame command (16 MiB + 1) is consumed whole.
            let mut big = vec![0x99];
            big.resize(raw::MAX_FRAME + 1, b'x');
            let r = c.command(&big, raw::Expect::One).expect("huge unknown command");
            assert_eq!(r[0].err().map(|e| e.0), Some(1047));
            assert_eq!(r[0].seq, 2, "after a 2-frame command the ERR carries seq 2");
            let p = c.command(&[cmd::PING], raw::Expect::One).unwrap();
            assert!(p[0].is_ok(), "PING after a refused 2-frame command: {p:?}");
        }
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------- (d)

fn config_file(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let p = dir.path().join("thaw.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

/// True once connecting to `addr` is refused (polls for up to `timeout`).
async fn refused_within(addr: std::net::SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return true,
            _ if Instant::now() > deadline => return false,
            _ => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

/// SIGTERM: stop accepting at once, let the open transaction finish (it
/// commits), close idle connections, exit 0 as soon as nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_open_transaction_then_exits_zero() {
    let db = TestDb::new("drain").await;
    direct_exec(Some(db.name()), &["CREATE TABLE t (id INT PRIMARY KEY)"]).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(&dir, "shutdown_grace_secs: 15\n");
    let mut thaw = Thaw::builder().config(&cfg).start();

    let mut a = thaw.conn(Some(db.name())).await;
    a.query_drop("BEGIN").await.unwrap();
    a.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    let mut idle = thaw.conn(Some(db.name())).await;
    idle.query_drop("SELECT 1").await.unwrap();

    thaw.signal("TERM");
    let t_term = Instant::now();
    assert!(refused_within(thaw.addr, Duration::from_secs(3)).await, "new connections are still accepted 3 s after SIGTERM");
    let refused = Conn::new(thaw.opts(Some(db.name()))).await;
    assert!(refused.is_err(), "a mysql_async connection after SIGTERM must fail");
    // Not ready any more, but the admin port still answers while draining.
    let (code, body) = thaw.admin_get("/readyz");
    assert_eq!(code, 503, "/readyz while draining: {body}");
    assert_eq!(thaw.metric("thaw_draining"), Some(1.0));

    // The open transaction carries on and commits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(thaw.try_wait().is_none(), "thaw exited with a transaction still open: {:?}", thaw.try_wait());
    a.query_drop("INSERT INTO t VALUES (2)").await.expect("a statement inside the open transaction during drain");
    a.query_drop("COMMIT").await.expect("COMMIT during drain");
    let t_commit = Instant::now();

    // Nothing left open: exit well before the grace period ends, with status 0.
    let status =
        thaw.wait_exit(Duration::from_secs(5)).unwrap_or_else(|| panic!("thaw still running 5 s after the last transaction committed"));
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(t_term.elapsed() < Duration::from_secs(15), "thaw waited for the whole grace period");
    let exit_after_commit = t_commit.elapsed();
    assert!(exit_after_commit < Duration::from_secs(5), "exit {exit_after_commit:?} after the commit");

    let n: Vec<i64> = direct(Some(db.name())).await.query("SELECT id FROM t ORDER BY id").await.unwrap();
    assert_eq!(n, vec![1, 2], "the transaction that was open at SIGTERM must be committed");
    // The idle connection was closed by the drain.
    let r = within(10, "idle connection after drain", idle.query_drop("SELECT 1")).await;
    assert!(r.is_err(), "an idle connection must be closed by the drain");
    // And the committing one after its transaction ended.
    let r = within(10, "drained connection after COMMIT", a.query_drop("SELECT 1")).await;
    assert!(r.is_err(), "the connection is closed once its transaction ended during drain");
}

/// A transaction still open when the grace period ends is cut off: the
/// connection closes, the server rolls the transaction back, thaw exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_grace_period_expires() {
    let db = TestDb::new("grace").await;
    direct_exec(Some(db.name()), &["CREATE TABLE t (id INT PRIMARY KEY)"]).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(&dir, "shutdown_grace_secs: 1\n");
    let mut thaw = Thaw::builder().config(&cfg).start();
    let mut a = thaw.conn(Some(db.name())).await;
    a.query_drop("BEGIN").await.unwrap();
    a.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    let t0 = Instant::now();
    thaw.signal("TERM");
    let status = thaw
        .wait_exit(Duration::from_secs(6))
        .unwrap_or_else(|| panic!("thaw still running {:?} after SIGTERM with a 1 s grace period", t0.elapsed()));
    assert!(status.success(), "exit status: {status}");
    assert!(t0.elapsed() >= Duration::from_millis(900), "thaw exited after {:?}, before the grace period ended", t0.elapsed());
    let r = within(10, "query after the grace period", a.query_drop("COMMIT")).await;
    assert!(r.is_err(), "the cut-off connection cannot commit");
    // The server rolled it back.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n: Option<i64> = direct(Some(db.name())).await.query_first("SELECT COUNT(*) FROM t").await.unwrap();
        if n == Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "the cut-off transaction's row is visible: it was committed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------- (e)

/// Backend down: the client gets a clear ERR (a server-side code, no hang) and
/// the failure is counted in /metrics; /readyz says not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_down_gets_clear_err_and_is_counted() {
    let closed = free_port();
    let thaw = Thaw::builder().backend(format!("127.0.0.1:{closed}")).start();
    assert_eq!(thaw.metric("thaw_backend_connect_failures_total"), Some(0.0));

    let e = within(15, "mysql_async connect with the backend down", Conn::new(thaw.opts(None)))
        .await
        .expect_err("connecting with the backend down must fail");
    match &e {
        mysql_async::Error::Server(s) => {
            assert!(!(2000..3000).contains(&s.code), "a client-side code ({}) sent as if from the server", s.code);
            assert!(
                s.message.contains("backend") && s.message.contains(&closed.to_string()),
                "the message should say which backend is unreachable: {}",
                s.message
            );
        }
        other => panic!("expected a server ERR packet, got {other:?}"),
    }

    // The raw view: one ERR packet, seq 0, in place of the greeting.
    let addr = thaw.addr;
    let first = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut all = vec![];
        std::io::Read::read_to_end(&mut s, &mut all).expect("thaw closes after the ERR");
        all
    })
    .await
    .unwrap();
    assert!(first.len() > 7, "expected an ERR packet, got {first:?}");
    let len = first[0] as usize | (first[1] as usize) << 8 | (first[2] as usize) << 16;
    assert_eq!(first.len(), 4 + len, "exactly one packet, then close");
    assert_eq!(first[3], 0, "seq 0");
    assert_eq!(first[4], 0xFF, "an ERR packet");
    let code = u16::from_le_bytes([first[5], first[6]]);
    assert_eq!(code, 1040, "ERR code");

    assert_eq!(thaw.metric("thaw_backend_connect_failures_total"), Some(2.0), "two failed backend connections counted");
    let (code, body) = thaw.admin_get("/readyz");
    assert_eq!(code, 503, "/readyz with the backend down: {body}");
    assert!(thaw.log().contains("cannot connect to backend"), "thaw should log the failure:\n{}", thaw.log());
}

/// A backend that accepts TCP and closes at once, without a greeting: the
/// client gets an error promptly, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_that_closes_immediately_does_not_hang_the_client() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    let acceptor = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut n = 0;
        while Instant::now() < deadline && n < 1 {
            match l.accept() {
                Ok((s, _)) => {
                    drop(s);
                    n += 1;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        n
    });
    let thaw = Thaw::builder().backend(format!("127.0.0.1:{port}")).start();
    let r = within(15, "connect to a backend that closes at once", Conn::new(thaw.opts(None))).await;
    assert!(r.is_err(), "connecting must fail");
    assert_eq!(acceptor.join().unwrap(), 1, "thaw connected to the fake backend once");
    wait_sessions_closed(&thaw).await;
}
