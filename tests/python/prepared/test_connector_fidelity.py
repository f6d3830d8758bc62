"""Differential fidelity of prepared statements with mysql-connector-python:
the same scenario on a fresh database direct and on one through the
endpoint under test must give the same transcript (rows, cursor
descriptions, rowcount, lastrowid, warning counts, errors) and the same
final tables. ``via=direct`` compares direct with direct (the scenario is
deterministic); ``via=thaw`` compares direct with thaw.

``prep_typed`` is governed (conftest TYPED_RULES) and ``users`` by the
billing rules, so the steps inside transactions take the paths issue 9
adds: a prepared locking read (shadow statement, captured binary rows), a
prepared UPDATE of the captured row (CAS or delta), long data, a cursor,
COM_STMT_RESET / COM_STMT_CLOSE, and statements reused across transactions.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from decimal import Decimal

import mysql.connector
import pytest

from conftest import admin_connect, admin_exec, unique_name
from prepared import support as S

SCHEMA = [
    """CREATE TABLE prep_typed (id INT PRIMARY KEY AUTO_INCREMENT, ti TINYINT, bi BIGINT,
      bu BIGINT UNSIGNED, f FLOAT, d DOUBLE, dc DECIMAL(30,10), vc VARCHAR(255), vb VARBINARY(255),
      dt DATE, dtm DATETIME(6), tm TIME(6), bt BIT(12), en ENUM('a','b','c'),
      st SET('x','y'), js JSON, bl BLOB, lb LONGBLOB, lt LONGTEXT)""",
    """CREATE TABLE users (id BIGINT PRIMARY KEY, username VARCHAR(64),
      balance DECIMAL(18,2) NOT NULL DEFAULT 0, frozen_balance DECIMAL(18,2) NOT NULL DEFAULT 0,
      updated_at DATETIME NULL)""",
    "INSERT INTO users (id, username, balance) VALUES (8, 'user8', 1000.00), (9, 'user9', 50.00)",
]
COLS = "ti, bi, bu, f, d, dc, vc, vb, dt, dtm, tm, bt, en, st, js, bl, lb, lt"
INSERT = f"INSERT INTO prep_typed ({COLS}) VALUES ({', '.join('?' for _ in COLS.split(', '))})"
# No YEAR column: mysql-connector-python 26.10 (pure) decodes a binary-protocol
# YEAR as one byte and misreads every later column (tests/prepared_binary.rs
# covers YEAR with mysql_async).
NASTY = "it's \"quoted\" \\ back\\slash \0 NUL ünïcødé 😀 ''"
BIG = bytes(range(256)) * 1200  # 300 KiB: sent as COM_STMT_SEND_LONG_DATA chunks

ROWS = [
    (-128, -(2**63), 0, -1.5, -2.2250738585072014e-308, Decimal("-12345678901234567890.0123456789"), "", b"",
     dt.date(1000, 1, 1), dt.datetime(1000, 1, 1, 0, 0, 0), dt.timedelta(hours=-838, minutes=-59, seconds=-59),
     0, "a", "", "null", b"", b"", ""),
    (127, 2**63 - 1, 2**64 - 1, 3.4e38, 1.7976931348623157e308, Decimal("99999999999999999999.9999999999"), NASTY,
     b"\x00\x01'\\\"\xff\x00", dt.date(9999, 12, 31), dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
     dt.timedelta(hours=838, minutes=59, seconds=59), 4095, "c", "x,y", '{"k": [1, "é", null]}',
     b"\x00" * 70, b"\xff" * 10, NASTY),
    (True, 0, 1, 0.1, 1e-300, Decimal("0.0000000001"), "é\n\t\r\x1a", b"\xe9", dt.date(2024, 2, 29),
     dt.datetime(2024, 2, 29, 12, 34, 56, 123456), dt.time(1, 2, 3, 456789), 1, "b", "y", "[]", b"b",
     b"c", "d"),
    (None,) * 18,
]


def plain(v):
    """A value in a form that compares exactly and prints readably."""
    if isinstance(v, (bytes, bytearray)):
        return "0x" + bytes(v).hex() if len(v) <= 200 else f"<{len(v)} bytes {hash(bytes(v)) & 0xffffffff:08x}>"
    if isinstance(v, (Decimal, dt.date, dt.time, dt.timedelta)):
        return f"{type(v).__name__}:{v}"
    if isinstance(v, (set, frozenset)):
        return sorted(v)
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, str) and len(v) > 200:
        return f"<{len(v)} chars {hash(v) & 0xffffffff:08x}>"
    return v


class Transcript:
    """Runs statements on one connection, noting everything the app sees."""

    def __init__(self, conn):
        self.conn = conn
        self.out: list = []
        self.cur = conn.cursor(prepared=True)

    def x(self, sql, params=(), cur=None):
        """A prepared statement on the shared (or the given) prepared cursor."""
        cur = cur or self.cur
        try:
            cur.execute(sql, params)
            if sql.startswith("SELECT"):
                rows = [plain(r) for r in cur.fetchall()]
                desc = [d[:2] + d[6:] for d in cur.description]  # name, type, null_ok, flags, charset
                self.out.append((sql, "rows", rows, desc, cur.rowcount, cur.warning_count))
            else:  # the connector keeps the last SELECT's description: not read here
                self.out.append((sql, "ok", cur.rowcount, cur.lastrowid, cur.warning_count))
        except mysql.connector.Error as e:
            self.out.append((sql, "err", e.errno, e.sqlstate, re.sub(r"\d+", "N", e.msg) if e.errno == 1243 else e.msg))

    def q(self, sql):
        cur = self.conn.cursor()
        try:
            cur.execute(sql)
            self.out.append((sql, "ok", [plain(r) for r in cur.fetchall()] if cur.description else cur.rowcount))
        finally:
            cur.close()

    def note(self, label, value):
        self.out.append(("note", label, plain(value)))


def _run(endpoint, scenario):
    db = unique_name("thaw_prep_fid_")
    admin_exec(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
    try:
        admin = admin_connect(database=db)
        with admin.cursor() as cur:
            for sql in SCHEMA:
                cur.execute(sql)
        conn = S.connect(endpoint, db)
        t = Transcript(conn)
        try:
            scenario(t, admin)
        finally:
            conn.close()
        with admin.cursor() as cur:
            tables = {}
            for name in ("prep_typed", "users"):
                cur.execute(f"SELECT * FROM {name} ORDER BY id")
                tables[name] = [plain(r) for r in cur.fetchall()]
        admin.close()
        return t.out, tables
    finally:
        admin_exec(f"DROP DATABASE IF EXISTS `{db}`")


def differential(endpoint, scenario):
    from conftest import DIRECT_HOST, DIRECT_PORT

    ref_out, ref_tables = _run((DIRECT_HOST, DIRECT_PORT), scenario)
    out, tables = _run(endpoint, scenario)
    assert len(out) == len(ref_out), "a different number of steps"
    for i, (want, got) in enumerate(zip(ref_out, out)):
        assert got == want, f"step {i}"
    assert tables == ref_tables, "final tables differ"
    return ref_out


# ------------------------------------------------------------------ scenarios
def types_scenario(t: Transcript, admin):
    for row in ROWS:
        t.x(INSERT, row)
    t.x(INSERT, ROWS[1])  # the same statement again: only RESET + EXECUTE
    t.x(INSERT, ROWS[2][:16] + (io.BytesIO(BIG), io.BytesIO(NASTY.encode() * 5000)))  # long data
    t.x(f"SELECT id, {COLS} FROM prep_typed ORDER BY id")
    for v in ROWS[1] + ROWS[2]:
        t.x("SELECT ? AS p", (v,))
    t.x("SELECT ? AS a, ? AS b", (io.BytesIO(b"long"), 5))
    t.x("UPDATE prep_typed SET vc = ? WHERE id = ?", ("changed", 1))
    t.x("UPDATE prep_typed SET vc = ? WHERE id = ?", ("changed", 1))  # matched 1, changed 0
    t.x("UPDATE prep_typed SET ti = ? WHERE id = ?", (1000, 1))  # strict mode: 1264
    t.q("SET SESSION sql_mode = ''")
    t.x("UPDATE prep_typed SET ti = ? WHERE id = ?", (1000, 1))  # clipped: a warning
    t.q("SHOW WARNINGS")
    t.x("SELECT no_such_column FROM prep_typed WHERE id = ?", (1,))
    # inside a transaction, on the governed table: the shapes issue 9 plans
    t.q("BEGIN")
    t.x(f"SELECT id, {COLS} FROM prep_typed WHERE id = ? FOR UPDATE", (2,))
    t.x("UPDATE prep_typed SET vc = ?, dc = ?, tm = ?, en = ? WHERE id = ?",
        (NASTY, Decimal("-0.5"), dt.timedelta(seconds=-1.5), "b", 2))
    t.x("UPDATE prep_typed SET lb = ?, lt = ? WHERE id = ?", (io.BytesIO(BIG[::-1]), io.BytesIO(b"x" * 200000), 2))
    t.x(f"SELECT id, {COLS} FROM prep_typed WHERE id = ?", (2,))
    t.q("COMMIT")
    t.x(f"SELECT id, {COLS} FROM prep_typed ORDER BY id")


def cursor_scenario(t: Transcript, admin):
    """COM_STMT_EXECUTE with CURSOR_TYPE_READ_ONLY, then COM_STMT_FETCH of 2
    rows at a time, outside and inside a transaction with an unlocked read."""
    for row in ROWS:
        t.x(INSERT, row)
    conn = t.conn

    def fetch_all(sql, params):
        st = conn.cmd_stmt_prepare(sql.encode())
        res = conn.cmd_stmt_execute(st["statement_id"], data=params, parameters=st["parameters"], flags=1)
        t.note("cursor open", (res[0], [c[:2] for c in res[1]], res[2]["status_flag"] & ~0x4000))
        for _ in range(4):
            conn.cmd_stmt_fetch(st["statement_id"], 2)
            rows, eof = conn.get_rows(binary=True, columns=res[1])
            t.note("fetch", (rows, eof["status_flag"] & ~0x4000))
            if eof["status_flag"] & 0x80:  # SERVER_STATUS_LAST_ROW_SENT
                break
        conn.cmd_stmt_close(st["statement_id"])

    fetch_all(f"SELECT id, {COLS} FROM prep_typed WHERE id >= ? ORDER BY id", (1,))
    t.q("BEGIN")
    t.x("SELECT id, vc, dc FROM prep_typed WHERE id = ? FOR UPDATE", (2,))
    fetch_all("SELECT id, vc, dc, en FROM prep_typed WHERE id >= ? ORDER BY id", (1,))
    t.x("UPDATE prep_typed SET vc = ? WHERE id = ?", ("after the cursor", 2))
    t.q("COMMIT")


def _rows(conn, res):
    """The rows after a low-level cmd_stmt_execute that returned a result set
    (the connector's cursor marks the result unread itself)."""
    conn.unread_result = True
    return conn.get_rows(binary=True, columns=res[1])[0]


def close_reset_scenario(t: Transcript, admin):
    """COM_STMT_CLOSE and COM_STMT_RESET in and out of the window; executing a
    closed or never-prepared statement id is the server's 1243."""
    conn = t.conn
    t.x(INSERT, ROWS[1])
    t.q("BEGIN")
    t.x("SELECT id, balance, frozen_balance FROM users WHERE id = ? FOR UPDATE", (8,))
    a = conn.cmd_stmt_prepare(b"UPDATE users SET frozen_balance = ? WHERE id = ?")
    b = conn.cmd_stmt_prepare(b"SELECT balance, frozen_balance FROM users WHERE id = ?")
    t.note("prepare", (a["num_params"], a["num_columns"], b["num_params"], b["num_columns"]))
    # long data for a, then COM_STMT_RESET drops it: the execute sends its value inline
    conn.cmd_stmt_send_long_data(a["statement_id"], 0, io.BytesIO(b"999"))
    conn.cmd_stmt_reset(a["statement_id"])
    t.note("exec a", conn.cmd_stmt_execute(a["statement_id"], data=(Decimal("10.00"), 8), parameters=a["parameters"]))
    res = conn.cmd_stmt_execute(b["statement_id"], data=(8,), parameters=b["parameters"])
    t.note("exec b", _rows(conn, res))
    conn.cmd_stmt_close(a["statement_id"])
    for sid, params in ((a["statement_id"], (1, 8)), (4000000000, (1, 8))):
        try:
            conn.cmd_stmt_execute(sid, data=params, parameters=a["parameters"])
            t.note("executed a closed statement", sid)
        except mysql.connector.Error as e:
            t.note("closed", (e.errno, e.sqlstate, re.sub(r"\d+", "N", e.msg)))
    res = conn.cmd_stmt_execute(b["statement_id"], data=(8,), parameters=b["parameters"])
    t.note("exec b again", _rows(conn, res))
    conn.cmd_stmt_close(b["statement_id"])
    t.q("COMMIT")


def reuse_scenario(t: Transcript, admin):
    """The same two prepared statements across transactions (committed,
    rolled back, committed), with a change by another session between them:
    each write must be planned from this transaction's read."""
    sel, upd = t.conn.cursor(prepared=True), t.conn.cursor(prepared=True)
    read = "SELECT id, balance, frozen_balance FROM users WHERE id = ? FOR UPDATE"
    write = "UPDATE users SET balance = ?, frozen_balance = ? WHERE id = ?"
    for n, (uid, amount, end) in enumerate([(8, "1.25", "COMMIT"), (8, "2.50", "ROLLBACK"), (9, "3.75", "COMMIT"),
                                            (8, "4.00", "COMMIT"), (9, "6.00", "COMMIT")]):
        t.q("BEGIN")
        t.x(read, (uid,), cur=sel)
        _, balance, frozen = t.out[-1][2][0]
        new_frozen = Decimal(frozen.split(":")[1]) + Decimal(amount)
        t.x(write, (Decimal(balance.split(":")[1]), new_frozen, uid), cur=upd)
        t.q(end)
        with admin.cursor() as cur:  # another session tops user 8 up between transactions
            cur.execute("UPDATE users SET balance = balance + %s WHERE id = 8", (n + 1,))
    t.x("SELECT id, balance, frozen_balance FROM users ORDER BY id", cur=sel)


@pytest.mark.parametrize("scenario", [types_scenario, cursor_scenario, close_reset_scenario, reuse_scenario],
                         ids=["types_and_long_data", "cursor_fetch", "close_and_reset", "reuse_across_transactions"])
def test_prepared_differential(via, endpoint, scenario):
    out = differential(endpoint, scenario)
    assert any(step[1] == "rows" for step in out)
