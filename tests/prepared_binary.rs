//! Issue 9: prepared statements (binary protocol) get the same rewrite as
//! text. mysql_async `exec` / `exec_iter` against MariaDB direct and through
//! thaw with rules.
//!
//! * `governed_binary_differential_all_types`: every MySQL column type
//!   (DECIMAL, DATE/TIME/DATETIME(6), YEAR, BIT, ENUM, SET, JSON, BLOB ...)
//!   and NULLs, written and read with the binary protocol on a governed table,
//!   inside transactions whose prepared `SELECT ... FOR UPDATE` thaw now
//!   unlocks (shadow statement, binary rows captured) and whose prepared
//!   UPDATEs it plans (CAS) or validates (FLOAT/DOUBLE/BIT/JSON): the client
//!   must see exactly what it sees direct (rows, column definitions, affected
//!   rows, insert ids, warnings, info, errors), and the tables must end equal.
//! * `guarded_flow_*`: the billing rules; two sessions run the legacy
//!   prepared read + absolute write, interleaved. Direct, the second waits
//!   for the first's lock. Through thaw it reads unlocked, and its stale
//!   absolute write must become a delta (no 1213, exact books), or, when it
//!   would overdraw, the guard's 1644.
mod common;

use common::*;
use mysql_async::prelude::*;
use mysql_async::{Column, Conn, Row, Value};
use std::time::Duration;

// ---------------------------------------------------------------- snapshots

/// What the client saw for one statement.
#[derive(Debug, Clone, PartialEq)]
enum Snap {
    Done { columns: Vec<String>, rows: Vec<Vec<Value>>, affected: u64, insert_id: Option<u64>, warnings: u16, info: String },
    Failed(String),
}

fn meta(c: &Column, db: &str) -> String {
    let schema = if c.schema_str() == db { "<db>".to_string() } else { c.schema_str().into_owned() };
    format!(
        "{schema}.{}({}).{}({}) {:?} flags={:?} cs={} len={} dec={}",
        c.table_str(),
        c.org_table_str(),
        c.name_str(),
        c.org_name_str(),
        c.column_type(),
        c.flags(),
        c.character_set(),
        c.column_length(),
        c.decimals()
    )
}

fn failed(e: mysql_async::Error) -> Snap {
    match e {
        mysql_async::Error::Server(s) => Snap::Failed(format!("{} {} {}", s.code, s.state, s.message)),
        other => Snap::Failed(format!("client: {other}")),
    }
}

/// `exec_iter` (binary protocol; mysql_async prepares and caches the statement).
async fn exec(c: &mut Conn, db: &str, sql: &str, params: Vec<Value>) -> Snap {
    let mut qr = match c.exec_iter(sql, params).await {
        Ok(qr) => qr,
        Err(e) => return failed(e),
    };
    let columns = qr.columns_ref().iter().map(|col| meta(col, db)).collect();
    match qr.collect::<Row>().await {
        Ok(rows) => Snap::Done {
            columns,
            rows: rows.into_iter().map(|r| r.unwrap()).collect(),
            affected: qr.affected_rows(),
            insert_id: qr.last_insert_id(),
            warnings: qr.warnings(),
            info: qr.info().into_owned(),
        },
        Err(e) => failed(e),
    }
}

async fn text(c: &mut Conn, sql: &str) -> Snap {
    match c.query_drop(sql).await {
        Ok(()) => Snap::Done {
            columns: vec![],
            rows: vec![],
            affected: c.affected_rows(),
            insert_id: None,
            warnings: c.get_warnings(),
            info: String::new(),
        },
        Err(e) => failed(e),
    }
}

fn b(s: impl AsRef<[u8]>) -> Value {
    Value::Bytes(s.as_ref().to_vec())
}

/// Rules: the shipped billing rules and `pb_typed` (key id; every other
/// column compare-and-set), in a folder of their own.
fn rules_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/rules/billing.yaml"), dir.path().join("billing.yaml")).unwrap();
    std::fs::write(dir.path().join("pb_typed.yaml"), "tables:\n  - table: pb_typed\n    key: id\n    unlock: true\n").unwrap();
    dir
}

// ---------------------------------------------------------------- all types

const TYPED_DDL: &str = "CREATE TABLE pb_typed (id INT PRIMARY KEY AUTO_INCREMENT,
  ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT, i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED,
  fl FLOAT, db DOUBLE, dec65 DECIMAL(65,30), dec2 DECIMAL(18,2) UNSIGNED,
  d DATE, dt DATETIME, dt6 DATETIME(6), ts TIMESTAMP(3) NULL DEFAULT NULL, tm TIME, tm6 TIME(6), yr YEAR,
  bit1 BIT(1), bit64 BIT(64), ch CHAR(8), vc VARCHAR(255), vcl VARCHAR(20) CHARACTER SET latin1, vb VARBINARY(64),
  bl BLOB, tx TEXT, en ENUM('a','b','ü😀'), st SET('x','y','z'), js JSON) DEFAULT CHARSET=utf8mb4";

const TYPED_COLS: &str =
    "ti, tiu, si, mi, i, iu, bi, biu, fl, db, dec65, dec2, d, dt, dt6, ts, tm, tm6, yr, bit1, bit64, ch, vc, vcl, vb, bl, tx, en, st, js";

fn typed_insert() -> String {
    let marks = vec!["?"; TYPED_COLS.split(", ").count()].join(", ");
    format!("INSERT INTO pb_typed ({TYPED_COLS}) VALUES ({marks})")
}

/// Rows to insert, every value kind mysql_async sends: Int, UInt, Float,
/// Double, Bytes (decimals, strings, binary), Date, Time, NULL.
fn typed_rows() -> Vec<Vec<Value>> {
    use Value::*;
    let max = vec![
        Int(127),
        UInt(255),
        Int(32767),
        Int(8388607),
        Int(2147483647),
        UInt(4294967295),
        Int(i64::MAX),
        UInt(u64::MAX),
        Float(3.40282e38),
        Double(1.7976931348623157e308),
        b("99999999999999999999999999999999999.999999999999999999999999999999"),
        b("9999999999999999.99"),
        Date(9999, 12, 31, 0, 0, 0, 0),
        Date(9999, 12, 31, 23, 59, 59, 0),
        Date(9999, 12, 31, 23, 59, 59, 999_999),
        Date(2038, 1, 19, 3, 14, 7, 999_000),
        Time(false, 34, 22, 59, 59, 0),
        Time(false, 34, 22, 59, 59, 0),
        Int(2155),
        b([1u8]),
        b([0xFFu8; 8]),
        b("abcdefgh"),
        b("it's \"quoted\" \\ back\\slash \0 NUL ünïcødé 😀 ''"),
        b("café".as_bytes()),
        b([0u8, 1, 0x27, 0x5C, 0xFF, 0]),
        b((0u8..=255).collect::<Vec<_>>()),
        b("multi\nline 😀".repeat(100)),
        b("ü😀"),
        b("x,z"),
        b(r#"{"a": [1, 2.5, "😀", null, true], "b": {}}"#),
    ];
    let min = vec![
        Int(-128),
        UInt(0),
        Int(-32768),
        Int(-8388608),
        Int(-2147483648),
        UInt(0),
        Int(i64::MIN),
        UInt(0),
        Float(-1.17549e-38),
        Double(-2.2250738585072014e-308),
        b("-99999999999999999999999999999999999.999999999999999999999999999999"),
        b("0"),
        Date(1000, 1, 1, 0, 0, 0, 0),
        Date(1000, 1, 1, 0, 0, 0, 0),
        Date(1000, 1, 1, 0, 0, 0, 1),
        Date(1970, 1, 1, 0, 0, 1, 0),
        Time(true, 34, 22, 59, 59, 0),
        Time(true, 0, 0, 0, 0, 500_000),
        Int(1901),
        b([0u8]),
        b([0u8; 8]),
        b(""),
        b(""),
        b(""),
        b(""),
        b(""),
        b(""),
        b("a"),
        b(""),
        b("[]"),
    ];
    // strings for numbers and temporals: the server converts them
    let mut strings = vec![NULL; 30];
    for (k, v) in [
        (0, "12"),
        (4, "-7"),
        (10, "0.000000000000000000000000000001"),
        (11, "123.45"),
        (12, "2024-02-29"),
        (14, "2024-02-29 12:34:56.123456"),
        (17, "-12:34:56.654321"),
        (18, "2024"),
    ] {
        strings[k] = b(v);
    }
    vec![max, min, strings, vec![NULL; 30]]
}

async fn typed_scenario(c: &mut Conn, db: &str) -> Vec<(String, Snap)> {
    let mut out: Vec<(String, Snap)> = vec![];
    macro_rules! x {
        ($sql:expr, $params:expr) => {{
            let sql: String = $sql.into();
            let snap = exec(c, db, &sql, $params).await;
            out.push((sql, snap));
        }};
    }
    macro_rules! q {
        ($sql:expr) => {{
            let sql: String = $sql.into();
            let snap = text(c, &sql).await;
            out.push((sql, snap));
        }};
    }
    for row in typed_rows() {
        x!(typed_insert(), row);
    }
    x!(format!("SELECT id, {TYPED_COLS} FROM pb_typed ORDER BY id"), vec![]);
    for v in &typed_rows()[0] {
        x!("SELECT ? AS p", vec![v.clone()]);
    }
    // a prepared locking read and prepared UPDATEs of the captured rows, per type
    let updates: Vec<(&str, Value)> = vec![
        ("dec65", b("-0.5")),
        ("dec2", b("12.345")), // rounds, with a note
        ("d", Value::Date(2000, 2, 29, 0, 0, 0, 0)),
        ("dt6", Value::Date(2000, 1, 1, 0, 0, 0, 1)),
        ("tm6", Value::Time(true, 0, 1, 2, 3, 4)),
        ("yr", Value::Int(1999)),
        ("en", b("b")),
        ("st", b("y")),
        ("vb", b([0xC3u8, 0x28])),
        ("bl", b([0u8; 300])),
        ("vc", Value::NULL),
        ("biu", Value::UInt(1)),
        ("fl", Value::Float(0.1)), // FLOAT, DOUBLE, BIT, JSON: no exact CAS, validated
        ("db", Value::Double(-0.0)),
        ("bit64", b([0x80u8, 0, 0, 0, 0, 0, 0, 1])),
        ("js", b(r#"{"k": "v"}"#)),
    ];
    for id in [1i64, 2, 3, 4] {
        q!("BEGIN");
        x!(format!("SELECT id, {TYPED_COLS} FROM pb_typed WHERE id = ? FOR UPDATE"), vec![Value::Int(id)]);
        for (col, v) in &updates {
            x!(format!("UPDATE pb_typed SET {col} = ? WHERE id = ?"), vec![v.clone(), Value::Int(id)]);
        }
        x!("UPDATE pb_typed SET ti = ? WHERE id = ?", vec![Value::Int(1000), Value::Int(id)]); // 1264 in strict mode
        x!(format!("SELECT id, {TYPED_COLS} FROM pb_typed WHERE id = ?"), vec![Value::Int(id)]);
        q!(if id == 3 { "ROLLBACK" } else { "COMMIT" });
    }
    x!(format!("SELECT id, {TYPED_COLS} FROM pb_typed ORDER BY id"), vec![]);
    out
}

async fn typed_run(conn: &mut Conn, db: &TestDb) -> (Vec<(String, Snap)>, Vec<Row>) {
    direct_exec(Some(db.name()), &[TYPED_DDL]).await;
    let out = within(120, "the typed scenario", typed_scenario(conn, db.name())).await;
    let mut d = direct(Some(db.name())).await;
    let rows: Vec<Row> = d.query(format!("SELECT id, {TYPED_COLS} FROM pb_typed ORDER BY id")).await.unwrap();
    d.disconnect().await.ok();
    (out, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governed_binary_differential_all_types() {
    let rules = rules_dir();
    let thaw = Thaw::builder().rules(rules.path()).start();
    let (ddb, tdb) = (TestDb::new("pb_types_d").await, TestDb::new("pb_types_t").await);
    let mut dc = direct(Some(ddb.name())).await;
    let (want, want_rows) = typed_run(&mut dc, &ddb).await;
    let mut tc = thaw.conn(Some(tdb.name())).await;
    let (got, got_rows) = typed_run(&mut tc, &tdb).await;
    for (sql, s) in &want {
        if let Snap::Failed(m) = s {
            eprintln!("direct error (expected, compared): {sql} -> {m}");
        }
    }
    assert!(want.iter().any(|(_, s)| matches!(s, Snap::Failed(m) if m.starts_with("1264"))), "the scenario lost its strict-mode error");
    let locked_reads =
        want.iter().filter(|(sql, s)| sql.ends_with("FOR UPDATE") && matches!(s, Snap::Done { rows, .. } if rows.len() == 1));
    assert_eq!(locked_reads.count(), 4, "every prepared locking read returns its row");
    let mut problems = vec![];
    for (i, ((sql, w), (_, g))) in want.iter().zip(&got).enumerate() {
        if w != g {
            problems.push(format!("step {i}: {sql}\n  direct: {w:?}\n  thaw:   {g:?}"));
        }
    }
    assert_eq!(want.len(), got.len());
    assert!(problems.is_empty(), "{} step(s) differ:\n{}\n--- thaw log ---\n{}", problems.len(), problems.join("\n"), thaw.log());
    let (w, g): (Vec<Vec<Value>>, Vec<Vec<Value>>) =
        (want_rows.into_iter().map(|r| r.unwrap()).collect(), got_rows.into_iter().map(|r| r.unwrap()).collect());
    assert_eq!(w, g, "final tables differ");
}

// ---------------------------------------------------------------- guarded flow

const READ: &str = "SELECT id, balance, frozen_balance FROM users WHERE id = ? FOR UPDATE";
const WRITE: &str = "UPDATE users SET balance = ?, frozen_balance = ? WHERE id = ?";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Money {
    /// BIGINT columns, Value::Int parameters
    Bigint,
    /// DECIMAL(18,2) columns, decimal strings as parameters (Value::Bytes)
    Decimal,
}

impl Money {
    fn ddl(self) -> String {
        let t = if self == Money::Bigint { "BIGINT" } else { "DECIMAL(18,2)" };
        format!(
            "CREATE TABLE users (id BIGINT PRIMARY KEY, username VARCHAR(64), balance {t} NOT NULL DEFAULT 0,
             frozen_balance {t} NOT NULL DEFAULT 0, updated_at DATETIME NULL)"
        )
    }
    /// Hundredths (exact for both types).
    fn cents(self, v: &Value) -> i64 {
        match v {
            Value::Int(n) => n * 100,
            Value::Bytes(s) => {
                let s = std::str::from_utf8(s).unwrap();
                let (int, frac) = s.split_once('.').unwrap_or((s, "00"));
                int.parse::<i64>().unwrap() * 100 + frac.parse::<i64>().unwrap() * if int.starts_with('-') { -1 } else { 1 }
            }
            other => panic!("unexpected money value {other:?}"),
        }
    }
    fn param(self, cents: i64) -> Value {
        match self {
            Money::Bigint => Value::Int(cents / 100),
            Money::Decimal => b(format!("{}.{:02}", cents / 100, cents % 100)),
        }
    }
}

struct Seen {
    balance: i64,
    frozen: i64,
}

async fn read(c: &mut Conn, m: Money) -> Seen {
    let row: Row = c.exec_first(READ, (8,)).await.unwrap().expect("user 8");
    Seen { balance: m.cents(&row[1]), frozen: m.cents(&row[2]) }
}

/// The app's freeze after its read: check, absolute write, COMMIT. Ok(false)
/// when the app's check or thaw's guard (1644) refused it; Err(code) for any
/// other server error (after a ROLLBACK).
async fn write(c: &mut Conn, m: Money, seen: &Seen, amount: i64) -> Result<bool, u16> {
    if seen.balance - seen.frozen < amount {
        c.query_drop("ROLLBACK").await.unwrap();
        return Ok(false);
    }
    let r = c.exec_drop(WRITE, (m.param(seen.balance), m.param(seen.frozen + amount), 8)).await;
    match r {
        Ok(()) => {
            c.query_drop("COMMIT").await.unwrap();
            Ok(true)
        }
        Err(mysql_async::Error::Server(e)) => {
            c.query_drop("ROLLBACK").await.unwrap();
            if e.code == 1644 { Ok(false) } else { Err(e.code) }
        }
        Err(e) => panic!("{e}"),
    }
}

#[derive(Debug)]
struct Interleaved {
    b_blocked: bool,
    b_read_frozen: i64,
    b_codes: Vec<u16>,
    b_froze: bool,
    final_frozen: i64,
}

/// A and B freeze `amount_a` / `amount_b` cents for user 8 (balance
/// `balance` cents), interleaved; B retries 1213 with a fresh transaction.
async fn interleave(m: Money, via_thaw: Option<&Thaw>, db: &TestDb, balance: i64, amount_a: i64, amount_b: i64) -> Interleaved {
    direct_exec(Some(db.name()), &["DROP TABLE IF EXISTS users", &m.ddl()]).await;
    direct_exec(Some(db.name()), &[&format!("INSERT INTO users (id, username, balance) VALUES (8, 'user8', {})", balance / 100)]).await;
    let open = || async {
        let mut c = match via_thaw {
            Some(t) => t.conn(Some(db.name())).await,
            None => direct(Some(db.name())).await,
        };
        c.query_drop("SET SESSION innodb_lock_wait_timeout = 5").await.unwrap();
        c
    };
    let (mut a, mut b) = (open().await, open().await);
    a.query_drop("BEGIN").await.unwrap();
    let a_seen = read(&mut a, m).await;
    let b_task = tokio::spawn(async move {
        b.query_drop("BEGIN").await.unwrap();
        let seen = read(&mut b, m).await;
        (b, seen)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b_blocked = !b_task.is_finished();
    assert_eq!(write(&mut a, m, &a_seen, amount_a).await, Ok(true), "A's freeze");
    let (mut b, mut seen) = within(20, "B's read", b_task).await.unwrap();
    let b_read_frozen = seen.frozen;
    let mut b_codes = vec![];
    let b_froze = loop {
        match write(&mut b, m, &seen, amount_b).await {
            Ok(froze) => break froze,
            Err(code) if code == 1213 && b_codes.len() < 4 => {
                b_codes.push(code);
                b.query_drop("BEGIN").await.unwrap();
                seen = read(&mut b, m).await;
            }
            Err(code) => panic!("B: error {code} (codes so far {b_codes:?})"),
        }
    };
    let mut d = direct(Some(db.name())).await;
    let v: Value = d.query_first("SELECT frozen_balance FROM users WHERE id = 8").await.unwrap().unwrap();
    let final_frozen = m.cents(&v);
    let r = Interleaved { b_blocked, b_read_frozen, b_codes, b_froze, final_frozen };
    eprintln!("{} {m:?}: {r:?}", if via_thaw.is_some() { "thaw" } else { "direct" });
    r
}

async fn guarded_flow(m: Money) {
    let rules = rules_dir();
    let thaw = Thaw::builder().rules(rules.path()).start();
    let db = TestDb::new("pb_flow").await;
    // enough for both: B's stale absolute write must become a delta
    // (cents: fractions only where the column has them)
    let (fa, fb) = if m == Money::Decimal { (10_025, 20_050) } else { (10_000, 20_000) };
    let direct_run = interleave(m, None, &db, 1_000_000, fa, fb).await;
    assert!(direct_run.b_blocked && direct_run.b_read_frozen == fa && direct_run.b_codes.is_empty() && direct_run.b_froze);
    assert_eq!(direct_run.final_frozen, fa + fb);
    let t = interleave(m, Some(&thaw), &db, 1_000_000, fa, fb).await;
    assert_eq!(t.final_frozen, fa + fb, "a freeze was lost or doubled through thaw\n{}", thaw.log());
    assert!(t.b_froze);
    assert!(!t.b_blocked && t.b_read_frozen == 0, "B's prepared FOR UPDATE was not unlocked: {t:?}");
    assert!(t.b_codes.is_empty(), "B's prepared absolute write was refused (1213), not planned as a delta\n{}", thaw.log());

    // not enough for both: direct, B's check refuses after A's commit;
    // through thaw B's stale check passes and the guard must answer 1644
    let direct_run = interleave(m, None, &db, 10_000, 6_000, 6_000).await;
    assert!(direct_run.b_blocked && !direct_run.b_froze && direct_run.final_frozen == 6_000);
    let t = interleave(m, Some(&thaw), &db, 10_000, 6_000, 6_000).await;
    assert_eq!(t.final_frozen, 6_000, "overdrawn or lost through thaw\n{}", thaw.log());
    assert!(!t.b_froze);
    assert!(!t.b_blocked && t.b_codes.is_empty(), "the guard of B's prepared write did not answer 1644: {t:?}\n{}", thaw.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_flow_bigint_int_params() {
    guarded_flow(Money::Bigint).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_flow_decimal_string_params() {
    guarded_flow(Money::Decimal).await;
}
