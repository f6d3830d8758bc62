//! Differential relay fidelity: the same statements straight to MariaDB and
//! through thaw (with no rules) must look identical to the client. Compared:
//! every row as `mysql_async::Value`s, column metadata (schema, table,
//! org_table, name, org_name, type, flags, charset, length, decimals),
//! prepared-statement parameter/column definitions, affected rows, last
//! insert id, warnings, info text, status flags of the last OK, and errors
//! (code, SQLSTATE, message). Text protocol (`query_iter`) and binary protocol
//! (`exec_iter`) both.
//!
//! mysql_async always negotiates CLIENT_DEPRECATE_EOF (see its
//! `Opts::get_capabilities`), so the `raw_*` tests use the independent raw
//! client in `common::raw` to cover the classic EOF mode too, comparing the
//! server's packets byte for byte (sequence ids and frame counts included).
//!
//! Binary-protocol cursors (COM_STMT_EXECUTE with a cursor flag, then
//! COM_STMT_FETCH): mysql_async never opens one, so there is no mysql_async
//! test for them; the raw differential covers them in both EOF modes.
//!
//! mysql_async 0.37 has no COM_INIT_DB (`select_db`) nor COM_STMT_RESET call:
//! those go through the raw client.
mod common;

use common::raw::{self, Expect, Pkt, RawConn, cmd};
use common::*;
use mysql_async::prelude::*;
use mysql_async::{Column, Conn, Row, Value};
use std::fmt::Write as _;
use std::time::Duration;

// ====================================================================== snapshots

#[derive(Debug, Clone, PartialEq)]
struct ColMeta {
    schema: String,
    table: String,
    org_table: String,
    name: String,
    org_name: String,
    column_type: String,
    flags: u16,
    charset: u16,
    length: u32,
    decimals: u8,
}

fn meta(c: &Column) -> ColMeta {
    ColMeta {
        schema: c.schema_str().into(),
        table: c.table_str().into(),
        org_table: c.org_table_str().into(),
        name: c.name_str().into(),
        org_name: c.org_name_str().into(),
        column_type: format!("{:?}", c.column_type()),
        flags: c.flags().bits(),
        charset: c.character_set(),
        length: c.column_length(),
        decimals: c.decimals(),
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
struct SetSnap {
    columns: Vec<ColMeta>,
    rows: Vec<Vec<Value>>,
    affected_rows: u64,
    last_insert_id: Option<u64>,
    warnings: u16,
    info: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Failure {
    Server { code: u16, state: String, message: String },
    Other(String),
}

fn failure(e: mysql_async::Error) -> Failure {
    match e {
        mysql_async::Error::Server(s) => Failure::Server { code: s.code, state: s.state, message: s.message },
        other => Failure::Other(other.to_string()),
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
struct PrepSnap {
    params: Vec<ColMeta>,
    columns: Vec<ColMeta>,
}

/// Everything the client saw for one step.
#[derive(Debug, Clone, PartialEq, Default)]
struct Snap {
    prepare: Option<PrepSnap>,
    sets: Vec<SetSnap>,
    error: Option<Failure>,
    /// Status flags of the last OK packet the connection saw.
    status: Option<u16>,
}

async fn collect_sets<P: Protocol>(qr: &mut mysql_async::QueryResult<'_, '_, P>, snap: &mut Snap) {
    loop {
        let columns = qr.columns_ref().iter().map(meta).collect();
        match qr.collect::<Row>().await {
            Ok(rows) => snap.sets.push(SetSnap {
                columns,
                rows: rows.into_iter().map(|r| r.unwrap()).collect(),
                affected_rows: qr.affected_rows(),
                last_insert_id: qr.last_insert_id(),
                warnings: qr.warnings(),
                info: qr.info().into_owned(),
            }),
            Err(e) => {
                snap.error = Some(failure(e));
                return;
            }
        }
        if qr.is_empty() {
            return;
        }
    }
}

async fn run_text(conn: &mut Conn, sql: &str) -> Snap {
    let mut snap = Snap::default();
    match conn.query_iter(sql).await {
        Ok(mut qr) => collect_sets(&mut qr, &mut snap).await,
        Err(e) => snap.error = Some(failure(e)),
    }
    snap.status = conn.last_ok_packet().map(|p| p.status_flags().bits());
    snap
}

async fn run_exec(conn: &mut Conn, sql: &str, params: &[Value]) -> Snap {
    let mut snap = Snap::default();
    let stmt = match conn.prep(sql).await {
        Ok(s) => s,
        Err(e) => {
            snap.error = Some(failure(e));
            return snap;
        }
    };
    snap.prepare = Some(PrepSnap { params: stmt.params().iter().map(meta).collect(), columns: stmt.columns().iter().map(meta).collect() });
    match conn.exec_iter(&stmt, params.to_vec()).await {
        Ok(mut qr) => collect_sets(&mut qr, &mut snap).await,
        Err(e) => snap.error = Some(failure(e)),
    }
    snap.status = conn.last_ok_packet().map(|p| p.status_flags().bits());
    snap
}

/// One client action.
#[derive(Debug, Clone)]
enum Step {
    /// Text protocol.
    Q(String),
    /// Prepare, then execute with these parameters (binary protocol).
    X(String, Vec<Value>),
    /// Prepare once, execute once per parameter list, close.
    Reuse(String, Vec<Vec<Value>>),
    Ping,
    /// COM_RESET_CONNECTION.
    Reset,
}

fn q(s: impl Into<String>) -> Step {
    Step::Q(s.into())
}
fn x(s: impl Into<String>, p: Vec<Value>) -> Step {
    Step::X(s.into(), p)
}

async fn run_step(conn: &mut Conn, step: &Step) -> Vec<Snap> {
    match step {
        Step::Q(sql) => vec![run_text(conn, sql).await],
        Step::X(sql, p) => vec![run_exec(conn, sql, p).await],
        Step::Reuse(sql, lists) => {
            let stmt = conn.prep(sql).await.expect("prepare");
            let mut out = vec![Snap {
                prepare: Some(PrepSnap {
                    params: stmt.params().iter().map(meta).collect(),
                    columns: stmt.columns().iter().map(meta).collect(),
                }),
                ..Default::default()
            }];
            for p in lists {
                let mut snap = Snap::default();
                match conn.exec_iter(&stmt, p.clone()).await {
                    Ok(mut qr) => collect_sets(&mut qr, &mut snap).await,
                    Err(e) => snap.error = Some(failure(e)),
                }
                snap.status = conn.last_ok_packet().map(|p| p.status_flags().bits());
                out.push(snap);
            }
            conn.close(stmt).await.expect("close statement");
            out
        }
        Step::Ping => {
            let mut snap = Snap::default();
            if let Err(e) = conn.ping().await {
                snap.error = Some(failure(e));
            }
            snap.status = conn.last_ok_packet().map(|p| p.status_flags().bits());
            vec![snap]
        }
        Step::Reset => {
            let mut snap = Snap::default();
            match conn.reset().await {
                Ok(true) => {}
                Ok(false) => snap.error = Some(Failure::Other("COM_RESET_CONNECTION not supported".into())),
                Err(e) => snap.error = Some(failure(e)),
            }
            snap.status = conn.last_ok_packet().map(|p| p.status_flags().bits());
            vec![snap]
        }
    }
}

// ====================================================================== comparison

fn short_value(v: &Value) -> String {
    match v {
        Value::Bytes(b) if b.len() > 48 => {
            format!("Bytes(len {}, starts {:?}…, fnv {:016x})", b.len(), String::from_utf8_lossy(&b[..32]), fnv(b))
        }
        other => format!("{other:?}"),
    }
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, &x| (h ^ x as u64).wrapping_mul(0x100000001b3))
}

/// Where two snapshots differ first, described without dumping large values.
fn diff(d: &Snap, t: &Snap) -> Option<String> {
    if d == t {
        return None;
    }
    if d.prepare != t.prepare {
        return Some(format!("prepare metadata:\n  direct: {:?}\n  thaw:   {:?}", d.prepare, t.prepare));
    }
    if d.error != t.error {
        return Some(format!("error:\n  direct: {:?}\n  thaw:   {:?}", d.error, t.error));
    }
    if d.sets.len() != t.sets.len() {
        return Some(format!(
            "number of result sets: direct {} vs thaw {}\n  direct: {:?}\n  thaw:   {:?}",
            d.sets.len(),
            t.sets.len(),
            summary(d),
            summary(t)
        ));
    }
    for (i, (a, b)) in d.sets.iter().zip(&t.sets).enumerate() {
        if a.columns != b.columns {
            for (j, (ca, cb)) in a.columns.iter().zip(&b.columns).enumerate() {
                if ca != cb {
                    return Some(format!("result set {i}, column {j} metadata:\n  direct: {ca:?}\n  thaw:   {cb:?}"));
                }
            }
            return Some(format!("result set {i}: column count direct {} vs thaw {}", a.columns.len(), b.columns.len()));
        }
        if a.rows.len() != b.rows.len() {
            return Some(format!("result set {i}: row count direct {} vs thaw {}", a.rows.len(), b.rows.len()));
        }
        for (r, (ra, rb)) in a.rows.iter().zip(&b.rows).enumerate() {
            for (c, (va, vb)) in ra.iter().zip(rb).enumerate() {
                if va != vb {
                    return Some(format!(
                        "result set {i}, row {r}, column {c} ({}):\n  direct: {}\n  thaw:   {}",
                        a.columns.get(c).map_or("?", |m| &m.name),
                        short_value(va),
                        short_value(vb)
                    ));
                }
            }
            if ra.len() != rb.len() {
                return Some(format!("result set {i}, row {r}: width direct {} vs thaw {}", ra.len(), rb.len()));
            }
        }
        let (ia, ib) = ((a.affected_rows, a.last_insert_id, a.warnings, &a.info), (b.affected_rows, b.last_insert_id, b.warnings, &b.info));
        if ia != ib {
            return Some(format!("result set {i} (affected_rows, last_insert_id, warnings, info):\n  direct: {ia:?}\n  thaw:   {ib:?}"));
        }
    }
    if d.status != t.status {
        return Some(format!(
            "status flags of the last OK: direct {:?} vs thaw {:?}",
            d.status.map(|s| format!("{s:#06x}")),
            t.status.map(|s| format!("{s:#06x}"))
        ));
    }
    Some("snapshots differ".into())
}

fn summary(s: &Snap) -> String {
    let mut out = String::new();
    for set in &s.sets {
        let _ = write!(
            out,
            "[{} cols, {} rows, affected {}, id {:?}, warn {}, info {:?}] ",
            set.columns.len(),
            set.rows.len(),
            set.affected_rows,
            set.last_insert_id,
            set.warnings,
            set.info
        );
    }
    if let Some(e) = &s.error {
        let _ = write!(out, "error {e:?}");
    }
    out
}

/// Run `setup` then `steps` on a fresh direct connection, run `setup` again,
/// then `steps` on a fresh connection through thaw; every step must give the
/// same snapshot. Returns the direct snapshots for extra checks.
async fn differential(thaw: &Thaw, db: &TestDb, setup: &[&str], steps: &[Step]) -> Vec<Vec<Snap>> {
    direct_exec(Some(db.name()), setup).await;
    let mut c = direct(Some(db.name())).await;
    let mut direct_snaps = vec![];
    for s in steps {
        direct_snaps.push(within(120, &format!("direct: {s:?}"), run_step(&mut c, s)).await);
    }
    c.disconnect().await.ok();

    direct_exec(Some(db.name()), setup).await;
    let before = thaw.metric("thaw_client_connections_total").unwrap_or(0.0);
    let mut c = thaw.conn(Some(db.name())).await;
    assert_eq!(thaw.metric("thaw_client_connections_total").unwrap_or(0.0), before + 1.0, "the connection did not go through thaw");
    let mut thaw_snaps = vec![];
    for s in steps {
        thaw_snaps.push(within(120, &format!("through thaw: {s:?}"), run_step(&mut c, s)).await);
    }
    c.disconnect().await.ok();

    let mut problems = vec![];
    for (i, ((step, d), t)) in steps.iter().zip(&direct_snaps).zip(&thaw_snaps).enumerate() {
        for (k, (ds, ts)) in d.iter().zip(t).enumerate() {
            if let Some(why) = diff(ds, ts) {
                let shown = format!("{step:?}");
                problems.push(format!("step {i}.{k} {}:\n{why}", &shown[..shown.len().min(300)]));
            }
        }
        if d.len() != t.len() {
            problems.push(format!("step {i}: {} vs {} snapshots", d.len(), t.len()));
        }
    }
    assert!(problems.is_empty(), "{} step(s) differ between direct and thaw:\n\n{}", problems.len(), problems.join("\n\n"));
    direct_snaps
}

// ====================================================================== corpus

const TYPES_DDL: &str = "CREATE TABLE t_types (
  id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siz SMALLINT(5) UNSIGNED ZEROFILL, mi MEDIUMINT,
  i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED, bo BOOLEAN,
  fl FLOAT, fl2 FLOAT(7,3), db DOUBLE, dec65 DECIMAL(65,30), dec10 DECIMAL(10,2) UNSIGNED,
  bit1 BIT(1), bit13 BIT(13), bit64 BIT(64),
  d DATE, dt DATETIME, dt6 DATETIME(6), ts TIMESTAMP(3) NULL DEFAULT NULL, tm TIME, tm6 TIME(6), yr YEAR,
  ch CHAR(10), vc VARCHAR(255), vcl VARCHAR(20) CHARACTER SET latin1, vcb VARCHAR(20) COLLATE utf8mb4_bin,
  bin16 BINARY(16), vbin VARBINARY(64),
  tt TINYTEXT, tx TEXT, mt MEDIUMTEXT, lt LONGTEXT,
  tb TINYBLOB, bl BLOB, mb MEDIUMBLOB, lb LONGBLOB,
  en ENUM('a','b','ü😀'), st SET('x','y','z'), js JSON, geo POINT,
  uu UUID, ip6 INET6, ip4 INET4,
  nn VARCHAR(10) NOT NULL DEFAULT '',
  KEY k_vc (vc(10)), UNIQUE KEY u_bi (bi)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

const TYPES_ROWS: &[&str] = &[
    // 1: all NULL
    "INSERT INTO t_types (id) VALUES (1)",
    // 2: maxima
    "INSERT INTO t_types VALUES (2, 127, 255, 32767, 65535, 8388607, 2147483647, 4294967295, 9223372036854775807, 18446744073709551615, TRUE,
      3.40282e38, 1234.567, 1.7976931348623157e308, '99999999999999999999999999999999999.999999999999999999999999999999', 99999999.99,
      b'1', b'1111111111111', b'1111111111111111111111111111111111111111111111111111111111111111',
      '9999-12-31', '9999-12-31 23:59:59', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.999', '838:59:59', '838:59:59.000000', 2155,
      'abcdefghij', REPEAT('x', 255), 'café', 'AbC',
      UNHEX('00FF80FE0102030405060708090A0B0C'), X'FFFE00C3',
      'tiny', 'text', 'medium', 'long',
      X'00FF', X'DEADBEEF00FF', X'80', X'FF80',
      'ü😀', 'x,z', '{\"a\": [1, 2.5, \"😀\", null, true], \"b\": {}}', ST_GeomFromText('POINT(1.5 -2.25)'),
      '123e4567-e89b-12d3-a456-426614174000', '2001:db8::ff00:42:8329', '192.168.0.1', 'max')",
    // 3: minima
    "INSERT INTO t_types VALUES (3, -128, 0, -32768, 0, -8388608, -2147483648, 0, -9223372036854775808, 0, FALSE,
      -1.17549e-38, -999.999, -2.2250738585072014e-308, '-99999999999999999999999999999999999.999999999999999999999999999999', 0,
      b'0', b'0', b'0',
      '1000-01-01', '1000-01-01 00:00:00', '1000-01-01 00:00:00.000001', '1970-01-01 00:00:01.000', '-838:59:59', '-838:59:59.000000', 1901,
      '', '', '', '',
      X'', X'',
      '', '', '', '',
      X'', X'', X'', X'',
      'a', '', '[]', ST_GeomFromText('POINT(0 0)'),
      '00000000-0000-0000-0000-000000000000', '::', '0.0.0.0', '')",
    // 4: zero dates, small fractions, odd decimals
    "INSERT INTO t_types (id, d, dt, dt6, tm, tm6, yr, dec65, dec10, fl, db, bit13, bit64, nn)
      VALUES (4, '0000-00-00', '0000-00-00 00:00:00', '2024-02-29 12:00:00.000001', '00:00:00', '-00:00:00.5', 0,
      '0.000000000000000000000000000001', 0.01, 0.1, 0.1, b'1010101010101', b'1000000000000000000000000000000000000000000000000000000000000000', 'zero')",
    // 5: unicode, emoji, non-UTF-8 bytes in binary columns, NUL bytes, quotes
    "INSERT INTO t_types (id, ch, vc, vcl, vcb, bin16, vbin, tt, tx, tb, bl, js, en, st, nn)
      VALUES (5, '😀', 'Grüße, 世界 😀🎉 \\\\ \\' \" end', 'çàé', '𝕏y', X'FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF', X'C328A0A1E28228F09028BC',
      'a\\0b', CONCAT('multi\\nline\\r\\n\\ttab ', REPEAT('😀', 300)), X'00', X'000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F202122232425262728292A2B2C2D2E2F303132333435363738393A3B3C3D3E3F404142434445464748494A4B4C4D4E4F505152535455565758595A5B5C5D5E5F606162636465666768696A6B6C6D6E6F707172737475767778797A7B7C7D7E7F808182838485868788898A8B8C8D8E8F909192939495969798999A9B9C9D9E9FA0A1A2A3A4A5A6A7A8A9AAABACADAEAFB0B1B2B3B4B5B6B7B8B9BABBBCBDBEBFC0C1C2C3C4C5C6C7C8C9CACBCCCDCECFD0D1D2D3D4D5D6D7D8D9DADBDCDDDEDFE0E1E2E3E4E5E6E7E8E9EAEBECEDEEEFF0F1F2F3F4F5F6F7F8F9FAFBFCFDFEFF',
      '{\"emoji\": \"😀\", \"esc\": \"a\\\\\\\\b\"}', 'b', 'x,y,z', 'uni')",
];

fn types_setup() -> Vec<&'static str> {
    let mut v = vec![
        "DROP TABLE IF EXISTS t_types",
        "DROP TABLE IF EXISTS t_empty",
        TYPES_DDL,
        "CREATE TABLE t_empty (id INT PRIMARY KEY, v VARCHAR(10))",
    ];
    v.extend_from_slice(TYPES_ROWS);
    v
}

fn b(s: &[u8]) -> Value {
    Value::Bytes(s.to_vec())
}

// ====================================================================== tests: types

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_column_types_text_and_binary() {
    let db = TestDb::new("types").await;
    let thaw = Thaw::start();
    let steps = vec![
        q("SELECT * FROM t_types ORDER BY id"),
        x("SELECT * FROM t_types WHERE id >= ? ORDER BY id", vec![Value::Int(0)]),
        x("SELECT * FROM t_types WHERE id = ?", vec![Value::Int(5)]),
        q("SELECT id, bit13 + 0, HEX(bin16), dec65 * 2, CAST(dt6 AS CHAR), JSON_EXTRACT(js, '$.a[2]'), ST_AsText(geo), LENGTH(tx), CHAR_LENGTH(tx) FROM t_types ORDER BY id"),
        q("SELECT t.id AS ident, t.vc AS v, t.bin16 FROM t_types AS t WHERE t.id IN (2, 5) ORDER BY t.id"),
        x("SELECT t.id AS ident, t.vc AS v, t.bin16 FROM t_types AS t WHERE t.id IN (?, ?) ORDER BY t.id", vec![Value::Int(2), Value::UInt(5)]),
        // Binary-protocol writes of every value kind mysql_async can send.
        x(
            "INSERT INTO t_types (ti, tiu, si, bi, biu, fl, db, dec65, bit13, d, dt6, tm6, yr, vc, vcl, bin16, vbin, bl, js, en, st, uu, ip6, lb, ts)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                Value::Int(-5),
                Value::UInt(200),
                Value::Int(-300),
                Value::Int(-9_000_000_000),
                Value::UInt(u64::MAX),
                Value::Float(2.5),
                Value::Double(-1.0e-300),
                b(b"-12345678901234567890123456789012345.123456789012345678901234567890"),
                Value::Int(4095),
                Value::Date(2024, 2, 29, 0, 0, 0, 0),
                Value::Date(2024, 2, 29, 23, 59, 58, 123_456),
                Value::Time(true, 1, 2, 3, 4, 5),
                Value::Int(2024),
                b("Grüße 😀 \\ ' \"".as_bytes()),
                b("café".as_bytes()),
                b(&[0xFF, 0xFE, 0xFD, 0x00, 0x80, 0x81, 0xC3, 0x28, 0xA0, 0xA1, 0xE2, 0x82, 0x28, 0xF0, 0x90, 0x28]),
                b(&[0xC3, 0x28]),
                b(&(0u8..=255).collect::<Vec<_>>()),
                b(br#"{"k": "v", "n": [1, 2]}"#),
                b("ü😀".as_bytes()),
                b(b"y,z"),
                b(b"550e8400-e29b-41d4-a716-446655440000"),
                b(b"fe80::1"),
                Value::NULL,
                Value::Date(2020, 1, 2, 3, 4, 5, 600_000),
            ],
        ),
        q("SELECT * FROM t_types WHERE id > 5 ORDER BY id"),
        x("SELECT * FROM t_types WHERE id > ? ORDER BY id", vec![Value::Int(5)]),
        // Parameters as strings into numeric and temporal columns (server-side conversion).
        x("INSERT INTO t_types (ti, dec10, d, tm, bo) VALUES (?, ?, ?, ?, ?)", vec![b(b"12"), b(b"123.45"), b(b"2001-02-03"), b(b"-12:34:56"), Value::Int(1)]),
        x("SELECT ti, dec10, d, tm, bo FROM t_types WHERE id = LAST_INSERT_ID()", vec![]),
    ];
    differential(&thaw, &db, &types_setup(), &steps).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expressions_literals_and_empty_results() {
    let db = TestDb::new("exprs").await;
    let thaw = Thaw::start();
    let lit = "SELECT 1, -1, 18446744073709551615, -9223372036854775808, 1.5e300, 0.1, 123456789012345678901234567890.123456789,
               'é😀', X'00FF80', _binary 'bin', NULL, TRUE, CAST('{\"a\":1}' AS JSON), JSON_OBJECT('k', 'ü', 'n', 1.5),
               CAST(1 AS DECIMAL(65,30)), CAST('12:34:56.789' AS TIME(3)), DATE'2024-02-29', TIMESTAMP'2024-02-29 12:00:00.5',
               CAST(-1 AS UNSIGNED), b'101', 0x41, CONVERT('x' USING latin1), '' AS empty, REPEAT('ab', 40000) AS big";
    let steps = vec![
        q(lit),
        x(lit, vec![]),
        x(
            "SELECT ?, ?, ?, ?, ?, ?, ?, ?",
            vec![
                Value::Int(-7),
                Value::UInt(7),
                Value::Float(1.25),
                Value::Double(2.5),
                b("😀".as_bytes()),
                b(&[0xFF, 0x00]),
                Value::NULL,
                Value::Time(false, 0, 1, 2, 3, 0),
            ],
        ),
        q("SELECT * FROM t_empty"),
        x("SELECT * FROM t_empty WHERE id = ?", vec![Value::Int(1)]),
        q("SELECT * FROM t_types WHERE 1 = 0"),
        x("SELECT * FROM t_types WHERE 1 = 0", vec![]),
        q("SELECT COUNT(*), MAX(id), SUM(dec65), AVG(fl) FROM t_empty"),
        q("DO 1"),
        q("SET @a = 1, @b = 'x😀', @c = NULL, @d = 1.5"),
        q("SELECT @a, @b, @c, @d, @undefined"),
        x("SELECT @a, @b, @c, @d, @undefined", vec![]),
        q("SHOW COLUMNS FROM t_types"),
        q("SHOW CREATE TABLE t_types"),
        q(
            "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME, ORDINAL_POSITION",
        ),
        q("EXPLAIN SELECT * FROM t_types WHERE id = 1"),
        q("SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT NULL"),
        q("  /* leading comment */ SELECT /*+ hint */ 1 AS `quoted name`, 2 AS \"dq\" -- trailing\n"),
        // Another connection character set: column charsets and bytes change.
        q("SET NAMES latin1"),
        q("SELECT 'café' AS lit, vcl, vc, ch, en FROM t_types WHERE id IN (2, 5) ORDER BY id"),
        x("SELECT vcl, vc, ? FROM t_types WHERE id = 2", vec![b(b"caf\xe9")]),
        q("SET NAMES binary"),
        q("SELECT vc, tx, js FROM t_types WHERE id = 5"),
        q("SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci"),
        q("SELECT vc, 'ü' FROM t_types WHERE id = 5"),
    ];
    differential(&thaw, &db, &types_setup(), &steps).await;
}

// ====================================================================== tests: DML results, warnings, errors

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dml_results_info_and_insert_ids() {
    let db = TestDb::new("dml").await;
    let thaw = Thaw::start();
    let setup =
        ["DROP TABLE IF EXISTS t", "CREATE TABLE t (id BIGINT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20), n INT) AUTO_INCREMENT = 1000"];
    let steps = vec![
        q("INSERT INTO t (v, n) VALUES ('a', 1)"),
        q("INSERT INTO t (v, n) VALUES ('b', 2), ('c', 3), ('d', 4)"),
        x("INSERT INTO t (v, n) VALUES (?, ?)", vec![b(b"e"), Value::Int(5)]),
        q("INSERT INTO t (id, v, n) VALUES (5000, 'explicit', 6)"),
        q("INSERT INTO t (v, n) VALUES ('after', 7)"),
        q("SELECT LAST_INSERT_ID(), ROW_COUNT()"),
        q("UPDATE t SET n = n + 1 WHERE n > 2"),
        q("UPDATE t SET n = n WHERE id = 1000"),
        x("UPDATE t SET v = ? WHERE id >= ?", vec![b(b"z"), Value::Int(1002)]),
        q("INSERT INTO t (id, v, n) VALUES (1000, 'dup', 0) ON DUPLICATE KEY UPDATE n = n + 100"),
        q("REPLACE INTO t (id, v, n) VALUES (1001, 'replaced', 0)"),
        q("INSERT IGNORE INTO t (id, v, n) VALUES (1000, 'ignored', 0), (6000, 'new', 0)"),
        q("INSERT INTO t (v, n) SELECT v, n FROM t WHERE id < 1003"),
        q("INSERT INTO t (v, n) VALUES ('ret', 9) RETURNING id, v, n"),
        x("INSERT INTO t (v, n) VALUES (?, ?) RETURNING id, v", vec![b(b"ret2"), Value::Int(10)]),
        q("DELETE FROM t WHERE n > 100"),
        q("DELETE FROM t WHERE id = 424242"),
        q("SELECT * FROM t ORDER BY id"),
        q("CREATE TABLE t2 (a INT)"),
        q("CREATE TABLE IF NOT EXISTS t2 (a INT)"),
        q("DROP TABLE t2"),
        q("DROP TABLE IF EXISTS t_does_not_exist"),
        q("TRUNCATE TABLE t"),
    ];
    differential(&thaw, &db, &setup, &steps).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_and_errors() {
    let db = TestDb::new("errs").await;
    let thaw = Thaw::start();
    let setup = [
        "DROP TABLE IF EXISTS t",
        "CREATE TABLE t (id INT PRIMARY KEY, ti TINYINT, v VARCHAR(3), u INT UNSIGNED)",
        "INSERT INTO t VALUES (1, 1, 'a', 1), (2, 2, 'b', 2), (3, 3, 'c', 3)",
    ];
    let steps = vec![
        // Warnings.
        q("SELECT 1/0"),
        q("SHOW WARNINGS"),
        x("SELECT 1/0", vec![]),
        q("SHOW COUNT(*) WARNINGS"),
        q("SET SESSION sql_mode = ''"),
        q("INSERT INTO t VALUES (10, 1000, 'toolong', -1)"),
        q("SHOW WARNINGS"),
        x("INSERT INTO t VALUES (?, ?, ?, ?)", vec![Value::Int(11), Value::Int(-1000), b(b"abcdef"), Value::Int(-5)]),
        q("SHOW WARNINGS"),
        q("UPDATE t SET ti = 999 WHERE id <= 2"),
        q("SELECT CAST('abc' AS INT), CAST('2024-13-45' AS DATE)"),
        q("DROP TABLE IF EXISTS nope_nope"),
        q("SHOW WARNINGS"),
        q("SET SESSION sql_mode = DEFAULT"),
        // Errors: 1064 syntax, 1146 no table, 1062 duplicate, 1054 unknown column, 1264 strict range.
        q("SELEC 1"),
        q("SELECT * FROM nope_nope"),
        q("INSERT INTO t VALUES (1, 1, 'dup', 1)"),
        q("SELECT no_such_col FROM t"),
        q("INSERT INTO t VALUES (20, 1000, 'x', 1)"),
        q("SHOW ERRORS"),
        x("SELEC ?", vec![Value::Int(1)]),
        x("SELECT * FROM nope_nope WHERE id = ?", vec![Value::Int(1)]),
        x("INSERT INTO t VALUES (?, 1, 'dup', 1)", vec![Value::Int(1)]),
        x("INSERT INTO t VALUES (?, ?, 'x', 1)", vec![Value::Int(21), Value::Int(1000)]),
        // Wrong parameter count is caught by the client; the connection must stay usable.
        q("SELECT 'still usable'"),
        // An error raised while rows are being sent.
        q("SELECT id, (SELECT id FROM t AS i WHERE i.id <= o.id) FROM t AS o ORDER BY id"),
        x("SELECT id, (SELECT id FROM t AS i WHERE i.id <= o.id) FROM t AS o WHERE id > ? ORDER BY id", vec![Value::Int(0)]),
        q("SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'custom 😀 error', MYSQL_ERRNO = 1644"),
        q("SELECT 'after errors'"),
        Step::Ping,
    ];
    differential(&thaw, &db, &setup, &steps).await;
}

// ====================================================================== tests: multi results

const PROC_SETUP: &[&str] = &[
    "DROP TABLE IF EXISTS t",
    "DROP PROCEDURE IF EXISTS p_two",
    "DROP PROCEDURE IF EXISTS p_err",
    "DROP PROCEDURE IF EXISTS p_none",
    "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))",
    "INSERT INTO t VALUES (1, 'one'), (2, 'two'), (3, 'three')",
    "CREATE PROCEDURE p_two(IN n INT, OUT total INT)
     BEGIN
       SELECT id, v FROM t WHERE id <= n ORDER BY id;
       SELECT COUNT(*) AS c, 'second 😀' AS label, CAST(n AS DECIMAL(10,3)) AS d;
       SET total = n * 10;
     END",
    "CREATE PROCEDURE p_err()
     BEGIN
       SELECT 'before' AS b;
       SELECT * FROM nope_nope;
     END",
    "CREATE PROCEDURE p_none(IN n INT)
     BEGIN
       UPDATE t SET v = CONCAT(v, '!') WHERE id = n;
     END",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_with_two_selects_and_out_param() {
    let db = TestDb::new("call").await;
    let thaw = Thaw::start();
    let steps = vec![
        q("CALL p_two(2, @total)"),
        q("SELECT @total"),
        q("CALL p_two(3, @total); SELECT @total AS t"),
        // Binary protocol: the OUT parameter comes back as an extra result set (SERVER_PS_OUT_PARAMS).
        x("CALL p_two(?, ?)", vec![Value::Int(2), Value::NULL]),
        x("CALL p_two(?, @total)", vec![Value::Int(1)]),
        q("SELECT @total"),
        q("CALL p_err()"),
        x("CALL p_err()", vec![]),
        q("CALL p_none(1)"),
        x("CALL p_none(?)", vec![Value::Int(2)]),
        q("SELECT * FROM t ORDER BY id"),
        Step::Reuse("CALL p_two(?, ?)".into(), vec![vec![Value::Int(1), Value::NULL], vec![Value::Int(3), Value::NULL]]),
        q("SELECT 'usable after CALLs'"),
    ];
    let snaps = differential(&thaw, &db, PROC_SETUP, &steps).await;
    // The procedure really returned two row sets plus the final OK.
    assert!(snaps[0][0].sets.len() >= 2 && snaps[0][0].sets[1].rows.len() == 1, "CALL p_two returned {:?}", summary(&snaps[0][0]));
    assert!(
        snaps[3][0].sets.iter().any(|s| s.rows == vec![vec![Value::Int(20)]]),
        "the OUT parameter set of CALL p_two(2, ?): {:?}",
        snaps[3][0].sets
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_statement_text() {
    let db = TestDb::new("multi").await;
    let thaw = Thaw::start();
    let steps = vec![
        q(
            "SELECT 1 AS a; SELECT 'two' AS b, 2 AS c; INSERT INTO t VALUES (100, 'x'); UPDATE t SET v = 'u' WHERE id >= 100; SELECT v FROM t WHERE id = 100; DELETE FROM t WHERE id = 100",
        ),
        q("SELECT 1; SELEC 2; SELECT 3"),
        q("INSERT INTO t VALUES (101, 'a'); INSERT INTO t VALUES (101, 'again')"),
        q("SELECT * FROM t ORDER BY id; SELECT * FROM t WHERE 1 = 0; DO 1"),
        q("SET @x = 5; SELECT @x * 2 AS doubled;"),
        q("BEGIN; INSERT INTO t VALUES (102, 'tx'); SELECT @@in_transaction"),
        q("ROLLBACK; SELECT @@in_transaction, COUNT(*) FROM t WHERE id = 102"),
        q("SELECT 'usable'"),
    ];
    differential(&thaw, &db, PROC_SETUP, &steps).await;
}

// ====================================================================== tests: sessions and transactions

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_status_flags() {
    let db = TestDb::new("intrans").await;
    let thaw = Thaw::start();
    let setup = ["DROP TABLE IF EXISTS t", "CREATE TABLE t (id INT PRIMARY KEY, v INT)", "INSERT INTO t VALUES (1, 1)"];
    let steps = vec![
        q("SELECT @@in_transaction, @@autocommit"),
        q("BEGIN"),
        q("SELECT @@in_transaction"),
        q("UPDATE t SET v = v + 1 WHERE id = 1"),
        x("SELECT v FROM t WHERE id = ?", vec![Value::Int(1)]),
        q("COMMIT"),
        q("SELECT @@in_transaction"),
        q("SET autocommit = 0"),
        q("SELECT v FROM t WHERE id = 1"),
        q("SELECT @@in_transaction"),
        q("INSERT INTO t VALUES (2, 2)"),
        q("ROLLBACK"),
        q("SELECT COUNT(*) FROM t"),
        q("SET autocommit = 1"),
        q("START TRANSACTION READ ONLY"),
        q("SELECT v FROM t WHERE id = 1"),
        q("COMMIT"),
        q("START TRANSACTION"),
        q("INSERT INTO t VALUES (3, 3)"),
        Step::Ping,
        q("ROLLBACK"),
    ];
    let snaps = differential(&thaw, &db, &setup, &steps).await;
    // The flags themselves: IN_TRANS (0x1) after BEGIN + a statement, cleared after COMMIT.
    let flag = |i: usize| snaps[i][0].status.unwrap_or(0);
    assert_ne!(flag(3) & 1, 0, "IN_TRANS after UPDATE inside BEGIN");
    assert_eq!(flag(5) & 1, 0, "IN_TRANS cleared by COMMIT");
    assert_ne!(flag(8) & 1, 0, "IN_TRANS after a SELECT with autocommit=0");
    assert_eq!(flag(8) & 2, 0, "AUTOCOMMIT clear with autocommit=0");
    assert_ne!(flag(15) & 0x2000, 0, "IN_TRANS_READONLY in a read-only transaction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_reset_connection() {
    let db = TestDb::new("reset").await;
    let thaw = Thaw::start();
    let setup = ["DROP TABLE IF EXISTS t", "CREATE TABLE t (id INT PRIMARY KEY)"];
    let steps = vec![
        Step::Ping,
        q("SET @v = 42, SESSION sql_mode = 'ANSI_QUOTES'"),
        q("CREATE TEMPORARY TABLE tmp (a INT)"),
        q("BEGIN"),
        q("INSERT INTO t VALUES (1)"),
        Step::Reset,
        q("SELECT @v, @@in_transaction, @@SESSION.sql_mode = @@GLOBAL.sql_mode"),
        q("SELECT COUNT(*) FROM t"),
        q("SELECT * FROM tmp"),
        x("SELECT ? + 1", vec![Value::Int(1)]),
        Step::Reset,
        Step::Ping,
        q("SELECT 'after reset'"),
    ];
    differential(&thaw, &db, &setup, &steps).await;

    // After COM_RESET_CONNECTION the old statement ids are gone on the server:
    // a statement prepared before the reset must not run after it.
    let mut c = thaw.conn(Some(db.name())).await;
    let stmt = c.prep("SELECT 1").await.unwrap();
    assert!(c.reset().await.unwrap());
    let err = c.exec_drop(&stmt, ()).await.expect_err("executing a statement prepared before COM_RESET_CONNECTION");
    assert!(matches!(&err, mysql_async::Error::Server(s) if s.code == 1243), "expected ERR 1243, got {err}");
    let one: Option<i64> = c.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    c.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statement_reuse_and_close() {
    let db = TestDb::new("stmts").await;
    let thaw = Thaw::start();
    let setup = [
        "DROP TABLE IF EXISTS t",
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))",
        "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')",
    ];
    let counters = "SHOW SESSION STATUS WHERE Variable_name IN ('Com_stmt_prepare', 'Com_stmt_execute', 'Com_stmt_close', 'Com_stmt_reset', 'Prepared_stmt_count')";
    let steps = vec![
        Step::Reuse("SELECT v FROM t WHERE id = ?".into(), (0..20).map(|i| vec![Value::Int(i % 5)]).collect()),
        Step::Reuse(
            "INSERT INTO t VALUES (?, ?)".into(),
            (10..15).map(|i| vec![Value::Int(i), b(format!("v{i}").as_bytes())]).chain([vec![Value::Int(10), b(b"dup")]]).collect(),
        ),
        Step::Reuse(
            "UPDATE t SET v = CONCAT(v, ?) WHERE id > ?".into(),
            vec![vec![b(b"!"), Value::Int(11)], vec![b(b"?"), Value::Int(13)]],
        ),
        q(counters),
        q("SELECT * FROM t ORDER BY id"),
        // Several statements open at once, executed interleaved.
        x("SELECT COUNT(*) FROM t WHERE id > ?", vec![Value::Int(0)]),
        x("SELECT MAX(id) FROM t WHERE id < ?", vec![Value::Int(100)]),
        x("SELECT COUNT(*) FROM t WHERE id > ?", vec![Value::Int(2)]),
        q(counters),
    ];
    differential(&thaw, &db, &setup, &steps).await;

    // COM_STMT_CLOSE really reaches the server: Com_stmt_close moves, and the
    // closed statement cannot be executed again (checked with the raw client).
    let mut c = thaw.conn(Some(db.name())).await;
    let stmt = c.prep("SELECT v FROM t WHERE id = ?").await.unwrap();
    let id = stmt.id();
    let before: Option<(String, u64)> = c.query_first("SHOW SESSION STATUS LIKE 'Com_stmt_close'").await.unwrap();
    c.close(stmt).await.unwrap();
    let after: Option<(String, u64)> = c.query_first("SHOW SESSION STATUS LIKE 'Com_stmt_close'").await.unwrap();
    assert_eq!(after.unwrap().1, before.unwrap().1 + 1, "COM_STMT_CLOSE (statement {id}) did not reach the server");
    c.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_user_to_a_second_user() {
    let db = TestDb::new("chuser").await;
    let user = TestUser::new(db.name()).await;
    let thaw = Thaw::start();
    direct_exec(Some(db.name()), &["CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (1)"]).await;

    async fn scenario(mut c: Conn, db: &str, user: &TestUser) -> Vec<String> {
        let mut seen = vec![];
        let who = |v: Option<(String, String, Option<String>)>| format!("{v:?}");
        c.query_drop("SET @before = 'x'").await.unwrap();
        c.query_drop("BEGIN").await.unwrap();
        c.query_drop("INSERT INTO t VALUES (2)").await.unwrap();
        seen.push(who(c.query_first("SELECT CURRENT_USER(), SUBSTRING_INDEX(USER(), '@', 1), DATABASE()").await.unwrap()));
        c.change_user(
            mysql_async::ChangeUserOpts::default()
                .with_user(Some(user.name.clone()))
                .with_pass(Some(user.password.clone()))
                .with_db_name(Some(db.into())),
        )
        .await
        .expect("COM_CHANGE_USER to the test user");
        let cu: Option<(String, String, Option<String>)> =
            c.query_first("SELECT CURRENT_USER(), SUBSTRING_INDEX(USER(), '@', 1), DATABASE()").await.unwrap();
        let cu_s = cu.as_ref().map(|v| v.0.clone()).unwrap_or_default();
        assert!(cu_s.starts_with(&format!("{}@", user.name)), "CURRENT_USER() after change_user: {cu:?}");
        seen.push(who(cu.map(|(c, u, d)| (c.split('@').next().unwrap().to_string(), u, d))));
        // The transaction was rolled back and session state cleared by the change.
        seen.push(format!("{:?}", c.query_first::<(Option<String>, i64), _>("SELECT @before, @@in_transaction").await.unwrap()));
        seen.push(format!("{:?}", c.query_first::<i64, _>("SELECT COUNT(*) FROM t").await.unwrap()));
        // Prepared statements work for the new user.
        let n: Option<i64> = c.exec_first("SELECT COUNT(*) FROM t WHERE id >= ?", (1,)).await.unwrap();
        seen.push(format!("{n:?}"));
        // The new user has no rights outside its database.
        seen.push(format!(
            "{:?}",
            c.query_drop("SELECT * FROM mysql.user").await.map_err(|e| match e {
                mysql_async::Error::Server(s) => (s.code, s.state),
                other => panic!("{other}"),
            })
        ));
        // And back to root (empty password).
        c.change_user(mysql_async::ChangeUserOpts::default().with_user(Some("root".into())).with_pass(Some(String::new())))
            .await
            .expect("change back to root");
        seen.push(format!("{:?}", c.query_first::<String, _>("SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1)").await.unwrap()));
        c.disconnect().await.unwrap();
        seen
    }

    let d = scenario(direct(Some(db.name())).await, db.name(), &user).await;
    let t = scenario(thaw.conn(Some(db.name())).await, db.name(), &user).await;
    assert_eq!(d, t, "COM_CHANGE_USER: direct vs thaw");

    // A wrong password: same error as direct.
    async fn wrong(mut c: Conn, user: &TestUser) -> String {
        let e = c
            .change_user(mysql_async::ChangeUserOpts::default().with_user(Some(user.name.clone())).with_pass(Some("wrong".into())))
            .await
            .expect_err("change_user with a wrong password");
        match e {
            mysql_async::Error::Server(s) => format!("{} {} {}", s.code, s.state, s.message.split(" (using").next().unwrap()),
            other => format!("{other}"),
        }
    }
    let d = wrong(direct(Some(db.name())).await, &user).await;
    let t = wrong(thaw.conn(Some(db.name())).await, &user).await;
    assert_eq!(d, t, "COM_CHANGE_USER with a wrong password: direct vs thaw");
}

// ====================================================================== tests: volume

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_rows() {
    let db = TestDb::new("rows").await;
    let thaw = Thaw::start();
    let setup = [
        "DROP TABLE IF EXISTS t",
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40), d DECIMAL(12,3), b VARBINARY(8))",
        "SET SESSION max_recursive_iterations = 100000",
        "INSERT INTO t WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 10000)
         SELECT n, CONCAT('row-', n, '-😀'), n * 1.5, UNHEX(LPAD(HEX(n), 8, '0')) FROM s",
    ];
    let steps = vec![
        q("SELECT * FROM t ORDER BY id"),
        x("SELECT * FROM t WHERE id > ? ORDER BY id", vec![Value::Int(0)]),
        q("SELECT COUNT(*), SUM(d) FROM t"),
        // 10 000 OK-less single-column rows again, through a multi-statement.
        q("SELECT id FROM t ORDER BY id; SELECT 'tail'"),
    ];
    let snaps = differential(&thaw, &db, &setup, &steps).await;
    assert_eq!(snaps[0][0].sets[0].rows.len(), 10_000);
    assert_eq!(snaps[1][0].sets[0].rows.len(), 10_000);
}

/// `len` bytes that are not valid UTF-8 and not constant.
fn blob(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| ((i as u32).wrapping_mul(2654435761) >> 13) as u8 ^ salt).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_packets_and_frame_splitting() {
    const M16: usize = 0xFF_FFFF; // largest frame payload: 16 MiB − 1
    let db = TestDb::new("large").await;
    // Raise max_allowed_packet for the test; connections opened from now on see it.
    let _g = GlobalVar::set("max_allowed_packet", &(64 << 20).to_string()).await;
    let thaw = Thaw::start();
    direct_exec(Some(db.name()), &["CREATE TABLE t (id INT PRIMARY KEY, b LONGBLOB)"]).await;

    let mut d = direct(Some(db.name())).await;
    let mut t = thaw.conn(Some(db.name())).await;
    let map: Option<u64> = t.query_first("SELECT @@max_allowed_packet").await.unwrap();
    assert_eq!(map, Some(64 << 20), "max_allowed_packet as seen through thaw");

    // --- client → server: a COM_QUERY payload of exactly 16 MiB − 1 bytes
    // (one full frame plus an empty one) and of 16 MiB + 100 (two frames).
    for (id, total) in [(1, M16), (2, M16 + 1), (3, M16 + 100)] {
        let head = format!("INSERT INTO t VALUES ({id}, '");
        let pad = total - 1 - head.len() - 2; // command byte, head, closing "')"
        let sql = format!("{head}{}')", "q".repeat(pad));
        assert_eq!(1 + sql.len(), total);
        within(60, "large COM_QUERY through thaw", t.query_drop(&sql))
            .await
            .unwrap_or_else(|e| panic!("COM_QUERY of {total} bytes through thaw: {e}"));
        assert_eq!(t.affected_rows(), 1);
        let len: Option<u64> = d.query_first(format!("SELECT LENGTH(b) FROM t WHERE id = {id}")).await.unwrap();
        assert_eq!(len, Some(pad as u64), "row {id} stored through thaw has the wrong length");
    }

    // --- server → client: text rows of exactly 16 MiB − 1 (0xFD + 3-byte length
    // + data), exactly 16 MiB, and more than 16 MiB (a row starting with 0xFE).
    // Binary rows: 0x00 + 1-byte NULL bitmap + lenenc + data.
    let cases: Vec<(i32, usize)> = vec![(10, M16 - 4), (11, M16 - 3), (12, M16 - 6), (13, M16 - 5), (14, (16 << 20) + 1000)];
    for (id, len) in &cases {
        let data = blob(*len, *id as u8);
        d.exec_drop("INSERT INTO t VALUES (?, ?)", (id, data.clone())).await.unwrap();
    }
    for (id, len) in &cases {
        let sql = format!("SELECT b FROM t WHERE id = {id}");
        let expect = blob(*len, *id as u8);
        let text: Option<Vec<u8>> =
            within(60, "large text row", t.query_first(&sql)).await.unwrap_or_else(|e| panic!("text row of {len} bytes through thaw: {e}"));
        let text = text.expect("row");
        assert!(text == expect, "text row {id}: {} bytes back, {len} expected (content differs: {})", text.len(), text.len() == *len);
        let bin: Option<Vec<u8>> = within(60, "large binary row", t.exec_first("SELECT b FROM t WHERE id = ?", (id,)))
            .await
            .unwrap_or_else(|e| panic!("binary row of {len} bytes through thaw: {e}"));
        let bin = bin.expect("row");
        assert!(bin == expect, "binary row {id}: {} bytes back, {len} expected", bin.len());
    }

    // --- 20 MiB LONGBLOB round trip through thaw: inserted as a parameter
    // (mysql_async sends it with COM_STMT_SEND_LONG_DATA packets of exactly
    // 16 MiB, i.e. split frames), read back with both protocols.
    let big = blob(20 << 20, 0x5A);
    within(60, "20 MiB insert", t.exec_drop("INSERT INTO t VALUES (?, ?)", (20, big.clone())))
        .await
        .expect("20 MiB parameter through thaw");
    assert_eq!(t.affected_rows(), 1);
    let stored: Option<(u64, String)> = d.query_first("SELECT LENGTH(b), MD5(b) FROM t WHERE id = 20").await.unwrap();
    let direct_md5: Option<String> = d.exec_first("SELECT MD5(?)", (big.clone(),)).await.unwrap();
    assert_eq!(stored, Some(((20 << 20) as u64, direct_md5.unwrap())), "20 MiB blob stored through thaw differs");
    let back: Option<Vec<u8>> = within(60, "20 MiB text select", t.query_first("SELECT b FROM t WHERE id = 20")).await.unwrap();
    assert!(back.as_deref() == Some(&big[..]), "20 MiB text read through thaw differs");
    let back: Option<Vec<u8>> = within(60, "20 MiB binary select", t.exec_first("SELECT b FROM t WHERE id = ?", (20,))).await.unwrap();
    assert!(back.as_deref() == Some(&big[..]), "20 MiB binary read through thaw differs");
    // Several big rows in one result, and the connection stays in step afterwards.
    let n: Vec<(i32, u64)> = t.query("SELECT id, LENGTH(b) FROM t ORDER BY id").await.unwrap();
    let all: Vec<Row> = within(60, "all big rows", t.query("SELECT id, b FROM t ORDER BY id")).await.unwrap();
    assert_eq!(all.len(), n.len());
    let one: Option<i64> = t.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));

    // Over the server's limit: the same error as direct, and the server closes
    // the connection (so only the error is compared).
    let too_big = format!("SELECT '{}'", "z".repeat((64 << 20) + 10));
    let de = d.query_drop(&too_big).await.expect_err("over max_allowed_packet direct");
    let te = within(60, "over-limit query through thaw", t.query_drop(&too_big)).await.expect_err("over max_allowed_packet through thaw");
    let code = |e: &mysql_async::Error| match e {
        mysql_async::Error::Server(s) => format!("server {} {}", s.code, s.state),
        other => format!("{:?}", std::mem::discriminant(other)),
    };
    assert_eq!(code(&de), code(&te), "over-limit packet: direct {de} / thaw {te}");
    drop(d);
    drop(t);
}

// ====================================================================== raw protocol

/// One raw command for the byte-level differential.
#[derive(Clone)]
struct RawCmd {
    label: String,
    payload: Payload,
    expect: Expect,
    /// Compare only the packet kinds and sequence ids (the content varies by connection).
    shape_only: bool,
}

/// Statement ids are assigned by the server and differ between connections:
/// commands on a statement name it by the order it was prepared in.
#[derive(Clone)]
enum Payload {
    Fixed(Vec<u8>),
    /// Built from the id of the n-th statement prepared in the script.
    Stmt(usize, std::sync::Arc<dyn Fn(u32) -> Vec<u8> + Send + Sync>),
}

fn rq(sql: &str) -> RawCmd {
    let mut p = vec![cmd::QUERY];
    p.extend_from_slice(sql.as_bytes());
    RawCmd { label: sql.chars().take(120).collect(), payload: Payload::Fixed(p), expect: Expect::Query, shape_only: false }
}

fn rc(label: &str, payload: Vec<u8>, expect: Expect) -> RawCmd {
    RawCmd { label: label.into(), payload: Payload::Fixed(payload), expect, shape_only: false }
}

fn rprep(sql: &str) -> RawCmd {
    let mut p = vec![cmd::STMT_PREPARE];
    p.extend_from_slice(sql.as_bytes());
    RawCmd { label: format!("PREPARE {sql}"), payload: Payload::Fixed(p), expect: Expect::Prepare, shape_only: false }
}

/// A command on the `slot`-th prepared statement.
fn rs(label: &str, slot: usize, expect: Expect, build: impl Fn(u32) -> Vec<u8> + Send + Sync + 'static) -> RawCmd {
    RawCmd { label: label.into(), payload: Payload::Stmt(slot, std::sync::Arc::new(build)), expect, shape_only: false }
}

fn stmt_cmd(c: u8, id: u32, rest: &[u8]) -> Vec<u8> {
    let mut p = vec![c];
    p.extend_from_slice(&id.to_le_bytes());
    p.extend_from_slice(rest);
    p
}

/// COM_STMT_EXECUTE without cursor, with one LONGLONG parameter.
fn exec_i64(id: u32, v: i64) -> Vec<u8> {
    let mut rest = vec![0, 1, 0, 0, 0, 0, 1, 0x08, 0x00];
    rest.extend_from_slice(&v.to_le_bytes());
    stmt_cmd(cmd::STMT_EXECUTE, id, &rest)
}

/// COM_STMT_EXECUTE with one VAR_STRING parameter supplied by SEND_LONG_DATA.
fn exec_long_data(id: u32) -> Vec<u8> {
    stmt_cmd(cmd::STMT_EXECUTE, id, &[0, 1, 0, 0, 0, 0, 1, 0xFD, 0x00])
}

fn long_data(id: u32, param: u16, data: &[u8]) -> Vec<u8> {
    let mut rest = param.to_le_bytes().to_vec();
    rest.extend_from_slice(data);
    stmt_cmd(cmd::STMT_SEND_LONG_DATA, id, &rest)
}

fn raw_script(db: &str) -> Vec<RawCmd> {
    use Expect::*;
    vec![
        rq("SELECT * FROM t_types ORDER BY id"),
        rq("SELECT * FROM t_empty"),
        rq("SELECT id, vc FROM t_types WHERE 1 = 0"),
        rq("CALL p_two(2, @total)"),
        rq("SELECT @total"),
        rq("CALL p_err()"),
        rq("SELECT 1 AS a; SELECT 'two' AS b; DO 1; SELECT 3"),
        rq("SELECT 1; SELEC 2; SELECT 3"),
        rq("SELEC 1"),
        rq("SELECT * FROM nope_nope"),
        rq("INSERT INTO t_types (id) VALUES (1)"),
        rq("SELECT 1/0"),
        rq("SHOW WARNINGS"),
        // 13: more than 256 packets in one response: sequence ids wrap.
        rq("WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 700) SELECT n, REPEAT('r', n % 50) FROM s"),
        rq("SELECT id, (SELECT id FROM t AS i WHERE i.id <= o.id) FROM t AS o ORDER BY id"),
        // 15: binary protocol.
        rprep("SELECT * FROM t_types WHERE id >= ? ORDER BY id"),
        rs("EXECUTE 0 (0)", 0, Execute, |id| exec_i64(id, 0)),
        rs("EXECUTE 0 (3)", 0, Execute, |id| exec_i64(id, 3)),
        rprep("CALL p_two(?, @o)"),
        rs("EXECUTE CALL", 1, Execute, |id| exec_i64(id, 2)),
        // 20
        rprep("SELECT ? AS v"),
        rs("SEND_LONG_DATA abc", 2, Nothing, |id| long_data(id, 0, b"abc")),
        rs("SEND_LONG_DATA ff 00 d", 2, Nothing, |id| long_data(id, 0, &[0xFF, 0x00, b'd'])),
        rs("EXECUTE long data", 2, Execute, exec_long_data),
        rs("SEND_LONG_DATA dropped", 2, Nothing, |id| long_data(id, 0, b"dropped")),
        // 25
        rs("STMT_RESET", 2, One, |id| stmt_cmd(cmd::STMT_RESET, id, &[])),
        rs("SEND_LONG_DATA xyz", 2, Nothing, |id| long_data(id, 0, b"xyz")),
        rs("EXECUTE after reset", 2, Execute, exec_long_data),
        rc("STMT_RESET unknown id", stmt_cmd(cmd::STMT_RESET, 0x7FFF_FFF0, &[]), One),
        rs("STMT_CLOSE", 2, Nothing, |id| stmt_cmd(cmd::STMT_CLOSE, id, &[])),
        // 30
        rs("EXECUTE closed", 2, Execute, exec_long_data),
        rprep("SELEC ?"),
        // Other commands.
        rc("PING", vec![cmd::PING], One),
        rc("FIELD_LIST t_empty", b"\x04t_empty\0".to_vec(), FieldList),
        rc("INIT_DB own", [&[cmd::INIT_DB][..], db.as_bytes()].concat(), One),
        // 35
        rq("SELECT DATABASE()"),
        rc("INIT_DB missing", b"\x02thaw_rs_no_such_db".to_vec(), One),
        rq("SELECT DATABASE()"),
        rc("SET_OPTION multi off", vec![cmd::SET_OPTION, 1, 0], One),
        rq("SELECT 1; SELECT 2"),
        // 40
        rc("SET_OPTION multi on", vec![cmd::SET_OPTION, 0, 0], One),
        rq("SELECT 1; SELECT 2"),
        RawCmd { label: "STATISTICS".into(), payload: Payload::Fixed(vec![cmd::STATISTICS]), expect: One, shape_only: true },
        rq("SET @x = 1"),
        rq("BEGIN"),
        // 45
        rq("INSERT INTO t VALUES (50, 'tx')"),
        rc("RESET_CONNECTION", vec![cmd::RESET_CONNECTION], One),
        rq("SELECT @x, @@in_transaction, (SELECT COUNT(*) FROM t WHERE id = 50)"),
        rs("EXECUTE after COM_RESET_CONNECTION", 0, Execute, |id| exec_i64(id, 0)),
        rq("SELECT 'end'"),
        // 50: binary-protocol cursors (mysql_async never opens one).
        rprep("SELECT seq, 'x' FROM (SELECT 1 AS seq UNION SELECT 2 UNION SELECT 3) s WHERE seq >= ?"),
        rs("EXECUTE with cursor", 3, Execute, |id| exec_i64_cursor(id, 1)),
        rs("FETCH 2", 3, Fetch, |id| fetch(id, 2)),
        rs("FETCH 2 (last row)", 3, Fetch, |id| fetch(id, 2)),
        rs("FETCH without cursor", 3, Fetch, |id| fetch(id, 2)),
        // 55
        rprep("SELECT * FROM t_types WHERE id >= ? ORDER BY id"),
        rs("EXECUTE types with cursor", 4, Execute, |id| exec_i64_cursor(id, 0)),
        rs("FETCH 1", 4, Fetch, |id| fetch(id, 1)),
        rs("STMT_RESET closes the cursor", 4, One, |id| stmt_cmd(cmd::STMT_RESET, id, &[])),
        rs("FETCH after reset", 4, Fetch, |id| fetch(id, 1)),
        // 60
        rs("EXECUTE types with cursor again", 4, Execute, |id| exec_i64_cursor(id, 2)),
        rs("FETCH 100", 4, Fetch, |id| fetch(id, 100)),
        rq("SELECT 'after cursors'"),
    ]
}

/// COM_STMT_EXECUTE opening a read-only cursor, one LONGLONG parameter.
fn exec_i64_cursor(id: u32, v: i64) -> Vec<u8> {
    let mut p = exec_i64(id, v);
    p[5] = 1; // CURSOR_TYPE_READ_ONLY
    p
}

fn fetch(id: u32, rows: u32) -> Vec<u8> {
    stmt_cmd(cmd::STMT_FETCH, id, &rows.to_le_bytes())
}

fn raw_run(addr: std::net::SocketAddr, caps: u32, db: &str, script: &[RawCmd]) -> (RawConn, Vec<Vec<Pkt>>) {
    let mut c = RawConn::connect(addr, caps, Some(db)).unwrap_or_else(|e| panic!("raw connect to {addr}: {e}"));
    let mut ids = vec![];
    let mut out = vec![];
    for s in script {
        let payload = match &s.payload {
            Payload::Fixed(p) => p.clone(),
            Payload::Stmt(slot, build) => {
                build(*ids.get(*slot).unwrap_or_else(|| panic!("{}: statement {slot} was not prepared", s.label)))
            }
        };
        let mut r = c.command(&payload, s.expect).unwrap_or_else(|e| panic!("raw {addr}: {}: {e}", s.label));
        if let Payload::Stmt(slot, _) = &s.payload {
            // "Unknown prepared statement handler (<id>)" names the server's id.
            let needle = format!("({})", ids[*slot]);
            for p in r.iter_mut().filter(|p| p.is_err()) {
                let text = String::from_utf8_lossy(&p.payload[9..]).replace(&needle, "(<stmt>)");
                p.payload.truncate(9);
                p.payload.extend_from_slice(text.as_bytes());
            }
        }
        if s.expect == Expect::Prepare && r[0].is_ok() {
            // Remember the server's id, and blank it for the comparison.
            ids.push(u32::from_le_bytes(r[0].payload[1..5].try_into().unwrap()));
            r[0].payload[1..5].fill(0);
        }
        out.push(r);
    }
    (c, out)
}

fn shape(p: &[Pkt]) -> Vec<(u8, usize, Option<u8>)> {
    p.iter().map(|p| (p.seq, p.frames, p.payload.as_slice().first().copied())).collect()
}

async fn raw_differential(caps: u32, name: &str) {
    let db = TestDb::new(name).await;
    let thaw = Thaw::start();
    let mut setup = types_setup();
    setup.extend_from_slice(PROC_SETUP);
    let script = raw_script(db.name());
    let dbn = db.name().to_string();

    direct_exec(Some(&dbn), &setup).await;
    let s2 = script.clone();
    let d2 = dbn.clone();
    let (dconn, d) =
        tokio::task::spawn_blocking(move || raw_run(format!("{DB_HOST}:{DB_PORT}").parse().unwrap(), caps, &d2, &s2)).await.unwrap();
    direct_exec(Some(&dbn), &setup).await;
    let addr = thaw.addr;
    let s2 = script.clone();
    let d2 = dbn.clone();
    let (tconn, t) = tokio::task::spawn_blocking(move || raw_run(addr, caps, &d2, &s2)).await.unwrap();

    assert_eq!(dconn.caps, tconn.caps, "negotiated capabilities");
    assert_eq!(dconn.deprecate_eof(), caps & raw::caps::DEPRECATE_EOF != 0);
    let mut problems = vec![];
    for (i, ((s, dr), tr)) in script.iter().zip(&d).zip(&t).enumerate() {
        let same = if s.shape_only { shape(dr) == shape(tr) } else { dr == tr };
        if !same {
            let first = dr.iter().zip(tr).position(|(a, b)| a != b).unwrap_or(dr.len().min(tr.len()));
            problems.push(format!(
                "command {i} {:?}: {} packets direct vs {} through thaw; first difference at packet {first}:\n  direct: {:?}\n  thaw:   {:?}",
                s.label,
                dr.len(),
                tr.len(),
                dr.get(first),
                tr.get(first)
            ));
        }
    }
    assert!(problems.is_empty(), "raw responses differ (caps {caps:#x}):\n{}", problems.join("\n"));
    // Sanity: the script really produced what it is meant to exercise.
    let wrap = &d[13];
    assert!(
        wrap.len() > 700 && wrap.iter().any(|p| p.seq == 0) && wrap.last().unwrap().seq != 0,
        "sequence ids did not wrap in the 700-row result"
    );
    let ok = |i: usize| !d[i].iter().any(|p| p.is_err());
    assert!(
        ok(15) && ok(16) && ok(17) && ok(19) && ok(23) && ok(25) && ok(27),
        "the prepared-statement part of the script failed on the server itself: {:?}",
        &d[15..28]
    );
    let value_of = |r: &[Pkt]| r.iter().rev().nth(1).map(|p| p.payload.clone()).unwrap_or_default();
    assert!(value_of(&d[23]).ends_with(b"abc\xFF\x00d"), "long data accumulates: {:?}", d[23]);
    assert!(value_of(&d[27]).ends_with(b"xyz"), "COM_STMT_RESET dropped the earlier long data: {:?}", d[27]);
    assert!(d[30].last().unwrap().err().is_some_and(|e| e.0 == 1243), "executing a closed statement gives 1243: {:?}", d[30]);
    assert!(d[48].last().unwrap().err().is_some_and(|e| e.0 == 1243), "statements are gone after COM_RESET_CONNECTION: {:?}", d[48]);
    // The cursor part: EXECUTE ends after the metadata with CURSOR_EXISTS, rows come with FETCH.
    let cursor_flag =
        |p: &Pkt| if dconn.deprecate_eof() { p.ok_status() } else { p.eof_status() }.unwrap_or(0) & raw::status::CURSOR_EXISTS != 0;
    assert!(d[51].len() == 4 && cursor_flag(&d[51][3]), "EXECUTE with a cursor: {:?}", d[51]);
    assert_eq!(d[52].len(), 3, "FETCH 2: two rows and a terminator: {:?}", d[52]);
    assert_eq!(d[53].len(), 2, "FETCH 2 at the end: one row and a terminator: {:?}", d[53]);
    assert!(d[54][0].is_err() && d[59][0].is_err(), "FETCH without an open cursor is an error");
    assert_eq!(d[61].len(), 5, "FETCH 100 over rows 2..5: four rows and a terminator: {:?}", d[61]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_packets_identical_classic_eof() {
    raw_differential(raw::caps::BASIC, "raw_eof").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_packets_identical_deprecate_eof() {
    raw_differential(raw::caps::BASIC | raw::caps::DEPRECATE_EOF, "raw_depeof").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_packets_identical_with_found_rows_and_session_track() {
    raw_differential(raw::caps::BASIC | raw::caps::DEPRECATE_EOF | raw::caps::FOUND_ROWS | raw::caps::SESSION_TRACK, "raw_track").await;
}

/// thaw masks what it cannot relay (zstd, TLS toward the client, query
/// attributes, optional metadata), offers zlib compression itself (as
/// MariaDB does) and passes the rest of the server's capabilities through
/// untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeting_capabilities_and_thread_id() {
    let thaw = Thaw::start();
    let addr = thaw.addr;
    let (d, t) = tokio::task::spawn_blocking(move || {
        let d = RawConn::connect(format!("{DB_HOST}:{DB_PORT}").parse().unwrap(), raw::caps::BASIC, None).unwrap();
        let t = RawConn::connect(addr, raw::caps::BASIC, None).unwrap();
        (d, t)
    })
    .await
    .unwrap();
    use raw::caps as c;
    let masked = c::SSL | c::ZSTD | c::QUERY_ATTRIBUTES | c::OPTIONAL_RESULTSET_METADATA;
    assert_eq!(t.greeting.caps & masked, 0, "masked capabilities offered through thaw: {:#x}", t.greeting.caps & masked);
    assert_ne!(t.greeting.caps & c::COMPRESS, 0, "thaw offers compression (client_compression: allowed)");
    assert_eq!(t.greeting.caps & !masked, d.greeting.caps & !masked, "other capabilities must pass through unchanged");
    for keep in
        [c::MULTI_STATEMENTS, c::MULTI_RESULTS, c::PS_MULTI_RESULTS, c::DEPRECATE_EOF, c::PLUGIN_AUTH, c::SECURE_CONNECTION, c::PROTOCOL_41]
    {
        assert_ne!(t.greeting.caps & keep, 0, "capability {keep:#x} must be offered through thaw");
    }
    assert_eq!(t.greeting.version, d.greeting.version);
    assert_eq!(t.greeting.plugin, d.greeting.plugin);
    // The greeting's thread id is the backend's connection id.
    let (mut t, _) = (t, d);
    let rows =
        tokio::task::spawn_blocking(move || t.query_rows("SELECT CONNECTION_ID()").remove(0).remove(0).map(|s| (s, t.greeting.thread_id)))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(rows.0, rows.1.to_string(), "CONNECTION_ID() vs greeting thread id");

    // mysql_async sees the same id.
    let mut c = thaw.conn(None).await;
    let id: Option<u32> = c.query_first("SELECT CONNECTION_ID()").await.unwrap();
    assert_eq!(id, Some(c.id()));
    c.disconnect().await.unwrap();
}

/// A fresh connection through thaw must look like a fresh connection to the
/// server: whatever thaw runs on the backend before the client's first
/// command must not show in what the first statement reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_statement_sees_an_untouched_session() {
    let thaw = Thaw::start();
    let addr = thaw.addr;
    // FOUND_ROWS() is left out: on a fresh session MariaDB reports what the
    // previous user of its cached thread left there (seen: 4 direct, 1 after
    // any SELECT), so even two direct connections disagree.
    let probe = "SELECT ROW_COUNT(), LAST_INSERT_ID(), @@warning_count, @@error_count";
    let (d, t) = tokio::task::spawn_blocking(move || {
        let mut d = RawConn::connect(format!("{DB_HOST}:{DB_PORT}").parse().unwrap(), raw::caps::BASIC, None).unwrap();
        let mut t = RawConn::connect(addr, raw::caps::BASIC, None).unwrap();
        (d.query_rows(probe), t.query_rows(probe))
    })
    .await
    .unwrap();
    assert_eq!(d, t, "first statement on a new connection, direct vs thaw ({probe})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_commands_keep_their_order() {
    // MariaDB connectors send PREPARE and EXECUTE(-1) back to back without
    // waiting; any client may pipeline. Send three queries in one write and
    // read three complete responses, in order.
    let thaw = Thaw::start();
    let addr = thaw.addr;
    let resp = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut c = RawConn::connect(addr, raw::caps::BASIC | raw::caps::DEPRECATE_EOF, None).unwrap();
        let mut buf = vec![];
        for sql in ["SELECT 1", "SELECT 'two', 2", "DO 3"] {
            let len = (sql.len() + 1) as u32;
            buf.extend_from_slice(&len.to_le_bytes()[..3]);
            buf.push(0);
            buf.push(cmd::QUERY);
            buf.extend_from_slice(sql.as_bytes());
        }
        c.stream.write_all(&buf).unwrap();
        let mut out = vec![];
        for _ in 0..3 {
            out.push(c.read_response_after_pipelined().unwrap());
        }
        out
    })
    .await
    .unwrap();
    assert_eq!(resp[0].len(), 4, "SELECT 1: column count, column, row, terminator: {:?}", resp[0]);
    assert_eq!(resp[0][2].payload, b"\x011", "row of the first command: {:?}", resp[0]);
    assert_eq!(resp[1].len(), 5, "SELECT 'two', 2: {:?}", resp[1]);
    assert_eq!(resp[1][3].payload, b"\x03two\x012", "rows of the second command: {:?}", resp[1]);
    assert!(resp[2].len() == 1 && resp[2][0].is_ok(), "DO 3: {:?}", resp[2]);
}

/// MariaDB connectors send COM_STMT_PREPARE and COM_STMT_EXECUTE with
/// statement id 0xFFFFFFFF ("the statement just prepared") back to back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_prepare_and_execute_last_statement() {
    let thaw = Thaw::start();
    let addr = thaw.addr;
    let run = move |addr: std::net::SocketAddr| {
        use std::io::Write;
        let mut c = RawConn::connect(addr, raw::caps::BASIC | raw::caps::DEPRECATE_EOF, None).unwrap();
        let mut buf = vec![];
        let mut frame = |payload: &[u8]| {
            buf.extend_from_slice(&(payload.len() as u32).to_le_bytes()[..3]);
            buf.push(0);
            buf.extend_from_slice(payload);
        };
        frame(b"\x16SELECT ? + 1 AS v, 'pipelined' AS w");
        frame(&exec_i64(0xFFFF_FFFF, 41));
        frame(b"\x03SELECT 'third'");
        c.stream.write_all(&buf).unwrap();
        c.set_seq(1);
        let mut prep = c.read_response(Expect::Prepare).unwrap();
        prep[0].payload[1..5].fill(0);
        c.set_seq(1);
        let exec = c.read_response(Expect::Execute).unwrap();
        c.set_seq(1);
        let third = c.read_response(Expect::Query).unwrap();
        (prep, exec, third)
    };
    let d = tokio::task::spawn_blocking(move || run(format!("{DB_HOST}:{DB_PORT}").parse().unwrap())).await.unwrap();
    let t = tokio::task::spawn_blocking(move || run(addr)).await.unwrap();
    assert!(!d.1.iter().any(|p| p.is_err()), "the server itself must accept EXECUTE(-1): {:?}", d.1);
    assert_eq!(d.0, t.0, "PREPARE response");
    assert_eq!(d.1, t.1, "EXECUTE(0xFFFFFFFF) response");
    assert_eq!(d.2, t.2, "the query after them");
}

trait Pipelined {
    fn read_response_after_pipelined(&mut self) -> std::io::Result<Vec<Pkt>>;
}

impl Pipelined for RawConn {
    /// Each pipelined command's response starts at seq 1.
    fn read_response_after_pipelined(&mut self) -> std::io::Result<Vec<Pkt>> {
        self.set_seq(1);
        self.read_response(Expect::Query)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_closing_an_idle_connection_ends_the_client_session() {
    // The server closes an idle session after wait_timeout and (MariaDB) says
    // so first; the client must see the connection end, not hang.
    let db = TestDb::new("idle").await;
    let thaw = Thaw::start();
    let mut c = thaw.conn(Some(db.name())).await;
    c.query_drop("SET SESSION wait_timeout = 1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = within(10, "query after wait_timeout through thaw", c.query_drop("SELECT 1")).await;
    assert!(r.is_err(), "a query on a connection the server closed must fail");
    // thaw closed its side: the session count returns to 0.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while thaw.metric("thaw_client_connections_open") != Some(0.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "thaw_client_connections_open stays {:?}",
            thaw.metric("thaw_client_connections_open")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// MariaDB answers a COM_CHANGE_USER with a wrong password with ERR 1045 and
/// keeps the connection, still logged in as the previous user. Through thaw the
/// client must see the same: the connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_change_user_keeps_the_connection() {
    let db = TestDb::new("chfail").await;
    let user = TestUser::new(db.name()).await;
    let thaw = Thaw::start();
    async fn after(mut c: Conn, user: &TestUser) -> Vec<String> {
        let mut seen = vec![];
        c.query_drop("SET @kept = 'yes'").await.unwrap();
        let r =
            c.change_user(mysql_async::ChangeUserOpts::default().with_user(Some(user.name.clone())).with_pass(Some("wrong".into()))).await;
        seen.push(match r {
            Ok(()) => "change_user succeeded".into(),
            Err(mysql_async::Error::Server(s)) => format!("change_user: server error {} {}", s.code, s.state),
            Err(e) => format!("change_user: {e}"),
        });
        for sql in ["SELECT CURRENT_USER()", "SELECT 'next query'"] {
            seen.push(match within(10, "query after a failed change_user", c.query_first::<String, _>(sql)).await {
                Ok(v) => format!("{sql}: {v:?}"),
                Err(mysql_async::Error::Server(s)) => format!("{sql}: server error {} {}", s.code, s.state),
                Err(e) => format!("{sql}: client error: {e}"),
            });
        }
        seen
    }
    let d = after(direct(Some(db.name())).await, &user).await;
    let t = after(thaw.conn(Some(db.name())).await, &user).await;
    assert_eq!(d, t, "after COM_CHANGE_USER with a wrong password: direct (left) vs thaw (right)");
}

/// A client that asks for compression (mysql_async: mysql_common's codec, a
/// third implementation besides thaw's and the server's) gets a compressed
/// session through thaw, both legs by default, and everything works, large
/// results and parameters included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_asking_for_compression_gets_it() {
    let db = TestDb::new("compress").await;
    let thaw = Thaw::start();
    let mut c = within(
        10,
        "connect with compression",
        mysql_async::Conn::new(thaw.opts(Some(db.name())).compression(mysql_async::Compression::default())),
    )
    .await
    .expect("connect through thaw asking for compression");
    let rows: Vec<(i64, String)> = c
        .query("WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 500) SELECT n, REPEAT('c', 1000) FROM s")
        .await
        .unwrap();
    assert_eq!(rows.len(), 500);
    let v: Option<String> = c.exec_first("SELECT ?", ("x".repeat(100_000),)).await.unwrap();
    assert_eq!(v.map(|s| s.len()), Some(100_000));
    let big: Option<(String, i64)> = c.query_first("SELECT REPEAT(MD5(RAND()), 200000), 7").await.unwrap();
    assert_eq!(big.map(|(s, n)| (s.len(), n)), Some((6_400_000, 7)));
    let on: Option<(String, String)> = c.query_first("SHOW SESSION STATUS LIKE 'Compression'").await.unwrap();
    assert_eq!(on.map(|r| r.1).as_deref(), Some("ON"), "the backend leg is compressed too (backend_compression: as_client)");
    c.disconnect().await.unwrap();
    assert!(thaw.metric("thaw_compressed_connections_total{leg=\"client\"}").unwrap_or(0.0) >= 1.0);
}

/// thaw does not offer TLS toward the client: a client that sends an
/// SSLRequest anyway gets a clear ERR, not a hang or garbage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ssl_request_is_refused_clearly() {
    use std::io::{Read, Write};
    let thaw = Thaw::start();
    let addr = thaw.addr;
    let (seq, payload) = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut h = [0u8; 4];
        s.read_exact(&mut h).unwrap();
        let mut g = vec![0u8; h[0] as usize | (h[1] as usize) << 8];
        s.read_exact(&mut g).unwrap();
        // SSLRequest: caps with CLIENT_SSL, max packet, charset, 23 zero bytes.
        let caps = raw::caps::BASIC | raw::caps::SSL;
        let mut p = vec![32, 0, 0, 1];
        p.extend_from_slice(&caps.to_le_bytes());
        p.extend_from_slice(&(1u32 << 24).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&[0; 23]);
        s.write_all(&p).unwrap();
        let mut h = [0u8; 4];
        s.read_exact(&mut h).expect("an answer to the SSLRequest");
        let mut body = vec![0u8; h[0] as usize | (h[1] as usize) << 8 | (h[2] as usize) << 16];
        s.read_exact(&mut body).unwrap();
        (h[3], body)
    })
    .await
    .unwrap();
    assert_eq!(seq, 2);
    let e = Pkt { seq, frames: 1, payload }.err().expect("an ERR packet");
    assert!(!(2000..3000).contains(&e.0), "a client-side error code sent by the proxy: {e:?}");
    assert!(e.2.contains("TLS"), "the message should say TLS is not offered: {e:?}");
}
