"""Adversarial cases for `defer_writes` and shadow mode (third review).

Each case is an application sequence that is correct direct. It runs once
direct (the reference) and once on the endpoint under test (``via``: direct
checks the scenario itself, thaw is the subject), each on its own fresh
database, and compares what the app saw and the final rows. Every case here
passes direct and fails through thaw because of a defect named in its
docstring.

Rules: rules/billing.yaml with ``defer_writes: true`` on users-balance
(``defer_thaw``), with ``mode: shadow`` on every rule (``shadow_thaw``), and
with users-balance in shadow while conversations is enforced
(``mixed_thaw``).
"""
from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pymysql
import pytest

from conftest import DIRECT_HOST, DIRECT_PORT
from thawproc import REPO_ROOT, ThawProc

BILLING = (REPO_ROOT / "rules" / "billing.yaml").read_text()
USERS_UNLOCK = "    unlock: true\n    # The app's SKIP"
assert USERS_UNLOCK in BILLING

SCHEMA = [
    "CREATE TABLE users (id BIGINT PRIMARY KEY, username VARCHAR(64), balance BIGINT NOT NULL DEFAULT 0,"
    " frozen_balance BIGINT NOT NULL DEFAULT 0, updated_at DATETIME NULL)",
    "CREATE TABLE freeze_logs (request_id VARCHAR(64) PRIMARY KEY, user_id BIGINT NOT NULL, amount BIGINT NOT NULL)",
    "CREATE TABLE conversations (id BIGINT PRIMARY KEY, message_count INT NOT NULL DEFAULT 0, total_tokens BIGINT NOT NULL DEFAULT 0)",
    "INSERT INTO users (id, username, balance, frozen_balance) VALUES (1, 'alice', 1000, 100), (2, 'bob', 50, 0), (3, 'carol', 500, 0)",
    "INSERT INTO conversations VALUES (1, 5, 100)",
]
READ = "SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE"
FREEZE = "UPDATE users SET frozen_balance = 150 WHERE id = 1"


# ------------------------------------------------------------------ thaws
def _start(tmp_path_factory, name: str, yaml_text: str):
    d = Path(tmp_path_factory.mktemp(name))
    (d / "billing.yaml").write_text(yaml_text)
    t = ThawProc(rules=str(d))
    t.start()
    return t


@pytest.fixture(scope="module")
def defer_thaw(tmp_path_factory):
    t = _start(tmp_path_factory, "defer", BILLING.replace(USERS_UNLOCK, "    unlock: true\n    defer_writes: true\n    # The app's SKIP", 1))
    yield t
    t.stop()


@pytest.fixture(scope="module")
def shadow_thaw(tmp_path_factory):
    t = _start(tmp_path_factory, "shadow", BILLING.replace("    unlock: true\n", "    unlock: true\n    mode: shadow\n"))
    yield t
    t.stop()


@pytest.fixture(scope="module")
def mixed_thaw(tmp_path_factory):
    t = _start(tmp_path_factory, "mixed", BILLING.replace(USERS_UNLOCK, "    unlock: true\n    mode: shadow\n    # The app's SKIP", 1))
    yield t
    t.stop()


def endpoint(via: str, request, fixture: str) -> tuple[str, int]:
    if via == "direct":
        return DIRECT_HOST, DIRECT_PORT
    t = request.getfixturevalue(fixture)
    return t.host, t.port


# ---------------------------------------------------------------- helpers
def admin():
    return pymysql.connect(host=DIRECT_HOST, port=DIRECT_PORT, user="root", password="", autocommit=True)


def fresh_db(*extra: str) -> str:
    db = "thaw_adv_defer_" + uuid.uuid4().hex[:10]
    c = admin()
    try:
        cur = c.cursor()
        cur.execute(f"CREATE DATABASE `{db}`")
        cur.execute(f"USE `{db}`")
        for s in [*SCHEMA, *extra]:
            cur.execute(s)
    finally:
        c.close()
    return db


def drop_db(db: str) -> None:
    c = admin()
    try:
        c.cursor().execute(f"DROP DATABASE IF EXISTS `{db}`")
    finally:
        c.close()


def tables(db: str) -> dict:
    c = admin()
    try:
        cur = c.cursor()
        cur.execute(f"USE `{db}`")
        cur.execute("SHOW TABLES")
        out = {}
        for (t,) in cur.fetchall():
            cur.execute(f"SELECT * FROM `{t}` ORDER BY 1")
            out[t] = cur.fetchall()
        return out
    finally:
        c.close()


def connect(host: str, port: int, db: str, **kw):
    return pymysql.connect(host=host, port=port, user="root", password="", database=db, autocommit=False, **kw)


def run_statements(host: str, port: int, stmts: list[str], *extra: str) -> tuple[list, dict]:
    """Run ``stmts`` on one connection; what the app saw and the final rows."""
    db = fresh_db(*extra)
    seen = []
    try:
        c = connect(host, port, db)
        cur = c.cursor()
        for s in stmts:
            try:
                n = cur.execute(s)
                seen.append(("ok", s, n, cur.fetchall()))
            except pymysql.err.MySQLError as e:
                seen.append(("err", s, e.args[0]))
        try:
            c.close()
        except Exception:
            pass
        return seen, tables(db)
    finally:
        drop_db(db)


def differential(via, request, fixture, stmts, *extra):
    ref = run_statements(DIRECT_HOST, DIRECT_PORT, stmts, *extra)
    host, port = endpoint(via, request, fixture)
    got = run_statements(host, port, stmts, *extra)
    assert got[0] == ref[0], f"what the app saw differs\n direct: {ref[0]}\n {via}: {got[0]}"
    assert got[1] == ref[1], f"final rows differ\n direct: {ref[1]}\n {via}: {got[1]}"


# ================================================================ defer_writes
def test_defer_show_warnings_after_a_later_statement_shows_the_held_writes_warnings(via, request):
    """Freeze, then a statement with a warning (`SELECT 1/0`: 1365 Division
    by 0), then `SHOW WARNINGS`. Direct SHOW WARNINGS lists the 1365. Through
    thaw the SELECT needs no flush (a plain read of no table,
    `flush_cause`, src/session/defer.rs:96-128), but SHOW WARNINGS does
    (`_ => Some("statement")`): the held UPDATE is sent silently just before
    it (`flush_deferred`, defer.rs:133) and resets the diagnostics area, so
    the app's SHOW WARNINGS comes back empty."""
    differential(via, request, "defer_thaw", ["BEGIN", READ, FREEZE, "SELECT 1/0", "SHOW WARNINGS", "COMMIT"])


def test_defer_row_count_after_an_insert_reports_the_held_update(via, request):
    """Freeze, write two log rows, `SELECT ROW_COUNT()`: direct 2 (the INSERT).
    Through thaw the values-only INSERT into an ungoverned table goes without
    a flush (defer.rs:105-112); `SELECT ROW_COUNT()` then flushes
    (`reads_session_state`, defer.rs:233) and the held UPDATE runs right
    before it, so ROW_COUNT() is the UPDATE's 1. The flush guards against the
    held write's ROW_COUNT being missing, but moves it after statements that
    came later."""
    differential(
        via, request, "defer_thaw",
        ["BEGIN", READ, FREEZE, "INSERT INTO freeze_logs VALUES ('f1', 1, 50), ('f2', 1, 0)", "SELECT ROW_COUNT()", "COMMIT"],
    )


def test_defer_update_ending_with_a_semicolon_fails_its_commit(via, request):
    """`UPDATE users SET frozen_balance = 150 WHERE id = 1;` (a trailing `;`,
    as many apps and query builders send; it is not a multi-statement packet:
    `has_inner_semicolon` is false). Direct: OK, COMMIT commits. Through thaw
    the rewritten text keeps its `;` and `commit_deferred`
    (defer.rs:164-171) appends `\\n; IF ROW_COUNT() ...`: the block has an
    empty statement `;;` and the server answers the app's COMMIT with 1064;
    thaw rolls back. The freeze and its log row are lost, and the app got a
    syntax error for a plain COMMIT."""
    differential(
        via, request, "defer_thaw",
        ["BEGIN", READ, "INSERT INTO freeze_logs VALUES ('f1', 1, 50)", FREEZE + ";", "COMMIT"],
    )


def test_defer_commit_release_keeps_the_session(via, request):
    """`COMMIT RELEASE` commits and ends the session: direct, the next
    statement gets 2013 (lost connection). Through thaw with a held write the
    COMMIT is replaced by the block ending in a plain `COMMIT;`
    (defer.rs:172, `TxControl::Commit { chain: false }` at
    src/session/query.rs:174 does not look at RELEASE): the server session
    stays, and the app's next statement runs on it."""
    differential(via, request, "defer_thaw", ["BEGIN", READ, FREEZE, "COMMIT RELEASE", "SELECT 1"])


AUDIT = [
    "CREATE TABLE balance_audit (id INT AUTO_INCREMENT PRIMARY KEY, user_id BIGINT NOT NULL, frozen BIGINT NOT NULL)",
    "CREATE TABLE limits (id INT PRIMARY KEY, max_freeze BIGINT NOT NULL)",
    "INSERT INTO limits VALUES (1, 500)",
    "CREATE TRIGGER users_audit AFTER UPDATE ON users FOR EACH ROW"
    " INSERT INTO balance_audit (user_id, frozen) VALUES (NEW.id, NEW.frozen_balance)",
]


def test_defer_audit_row_of_a_trigger_on_the_governed_table_is_missing_before_commit(via, request):
    """users has an AFTER UPDATE trigger writing balance_audit (`thaw check`
    accepts it: a trigger on the governed table itself is not a
    trigger_tables entry, src/cli/check/objects.rs:119-135). The app reads
    the user FOR UPDATE, reads its limit (another table: validated, the row
    is now protected), freezes, and reads the audit trail of its own write.
    Direct the audit row is there. Through thaw the freeze is held back
    (the row is protected, no window, so no validation flush), and a plain
    read of balance_audit, an ungoverned table, needs no flush
    (defer.rs:114-122): the app does not see the row its own UPDATE wrote."""
    differential(
        via, request, "defer_thaw",
        ["BEGIN", READ, "SELECT max_freeze FROM limits WHERE id = 1", FREEZE,
         "SELECT user_id, frozen FROM balance_audit", "COMMIT"],
        *AUDIT,
    )


def _freeze_with_1205_retry(host: str, port: int) -> tuple[list, dict]:
    """The app sets innodb_lock_wait_timeout = 1 and, as the server's
    semantics with innodb_rollback_on_timeout=OFF allow, retries a statement
    that timed out (1205: only that statement was rolled back). Right after
    the app's read another session locks the user for 7 s."""
    db = fresh_db()
    seen: list = []
    try:
        c = connect(host, port, db)
        cur = c.cursor()
        cur.execute("SET SESSION innodb_lock_wait_timeout = 1")

        def q(sql):
            for _ in range(40):
                try:
                    cur.execute(sql)
                    rows = cur.fetchall()
                    seen.append(("ok", sql, rows))
                    return rows
                except pymysql.err.OperationalError as e:
                    if e.args[0] != 1205:
                        seen.append(("err", sql, e.args[0]))
                        raise
                    time.sleep(0.3)
            raise AssertionError("still timing out")

        q("BEGIN")
        ((_id, _bal, frozen),) = q(READ)
        locked = threading.Event()

        def other():
            o = connect(DIRECT_HOST, DIRECT_PORT, db)
            oc = o.cursor()
            oc.execute("SET SESSION innodb_lock_wait_timeout = 30")
            locked.set()
            oc.execute("SELECT balance FROM users WHERE id = 1 FOR UPDATE")  # direct: waits for the app
            time.sleep(7)
            o.rollback()
            o.close()

        th = threading.Thread(target=other)
        th.start()
        locked.wait()
        time.sleep(0.3)
        q("INSERT INTO freeze_logs VALUES ('f1', 1, 50)")
        q(f"UPDATE users SET frozen_balance = {frozen + 50} WHERE id = 1")
        q("COMMIT")
        th.join()
        c.close()
        return seen, tables(db)
    finally:
        drop_db(db)


def test_defer_lock_wait_timeout_at_commit_is_a_1205_whose_transaction_is_gone(via, request):
    """Freeze 50 while another session holds the user's lock for 7 s; the app
    retries a statement that got 1205 (innodb_rollback_on_timeout is OFF on
    this server: the statement, not the transaction, was rolled back).

    Direct the other session waits for the app; the freeze commits.
    Enforce mode without deferral would get 1205 on the UPDATE after its
    retries, with the transaction still open, and the app's retry of the
    UPDATE would succeed. With defer_writes the UPDATE is answered at once;
    the COMMIT block waits, thaw's statement retries run out, and
    `commit_deferred` (defer.rs:193-201) passes the server's 1205 to the app
    after `abort_transaction` rolled everything back, then `txn.end()`
    (defer.rs:204) clears even the aborted state. 1205 here claims the
    transaction is still open; the app's retried COMMIT goes to the server,
    which commits nothing and answers OK. The app believes the freeze and
    its log row committed: both are lost."""
    ref = _freeze_with_1205_retry(DIRECT_HOST, DIRECT_PORT)
    host, port = endpoint(via, request, "defer_thaw")
    got = _freeze_with_1205_retry(host, port)
    assert got == ref, f"\n direct: {ref}\n {via}: {got}"


# ================================================================= shadow mode
def test_shadow_sends_thaws_settings_query_between_the_apps_statements(via, request):
    """With every rule in shadow, statements go to the server exactly as the
    app sent them (docs/rollout.md). The general log of the session shows
    the app's statements and, through thaw, `SELECT @@SESSION.sql_mode,
    @@SESSION.character_set_client, DATABASE()` before the unlockable read and
    after each SET: `query()` runs `refresh_settings` whenever the rules
    apply (src/session/query.rs:60-62), shadow or not."""
    host, port = endpoint(via, request, "shadow_thaw")
    db = fresh_db()
    a = admin()
    cur = a.cursor()
    cur.execute("SELECT @@GLOBAL.log_output, @@GLOBAL.general_log")
    log_output, general_log = cur.fetchone()
    app_stmts = [
        "BEGIN",
        READ,
        "SET @note = 'freeze'",
        "INSERT INTO freeze_logs VALUES ('f1', 1, 50)",
        FREEZE,
        "COMMIT",
    ]
    try:
        cur.execute("SET GLOBAL log_output = 'TABLE'")
        cur.execute("SET GLOBAL general_log = 1")
        c = connect(host, port, db)
        cc = c.cursor()
        cc.execute("SELECT CONNECTION_ID()")
        (tid,) = cc.fetchone()
        for s in app_stmts:
            cc.execute(s)
            cc.fetchall()
        c.close()
        time.sleep(0.2)
        cur.execute(
            "SELECT argument FROM mysql.general_log WHERE thread_id = %s AND command_type = 'Query' ORDER BY event_time", (tid,)
        )
        logged = [r[0].decode() if isinstance(r[0], bytes) else r[0] for r in cur.fetchall()]
    finally:
        cur.execute(f"SET GLOBAL general_log = {int(general_log)}")
        cur.execute("SET GLOBAL log_output = %s", (log_output,))
        a.close()
        drop_db(db)
    after = logged[logged.index("SELECT CONNECTION_ID()") + 1:]
    assert after == app_stmts, f"the server ran other statements than the app's: {after}"


def test_shadow_row_count_after_a_set_is_the_settings_querys(via, request):
    """Log two rows, `SET @n = ...`, `SELECT ROW_COUNT()`: direct 0 (after a
    SET). Through thaw in shadow mode the SET leaves the settings stale
    (`keeps_settings`, query.rs:24-47), so the settings read runs just before
    `SELECT ROW_COUNT()` (query.rs:60-62) and the app gets that SELECT's -1.
    (The docs say the side query "changes FOUND_ROWS()/ROW_COUNT() only until
    that statement runs"; here that statement is the one that reads it.)"""
    differential(
        via, request, "shadow_thaw",
        ["BEGIN", READ, "INSERT INTO freeze_logs VALUES ('f1', 1, 50), ('f2', 1, 0)", "SET @n = 'x'", "SELECT ROW_COUNT()", "COMMIT"],
    )


def test_mixed_shadow_rule_aborts_a_transaction_after_a_declined_conditional_write(via, request):
    """users-balance in shadow, conversations enforced (one rule enforced
    while another is rolled out). The app reads alice FOR UPDATE, tries a
    conditional freeze `... WHERE id = 1 AND balance - frozen_balance >= 1100`
    that matches no row (she has 900 available), re-reads her and records the
    decline. Direct: all OK.

    Through thaw the shadowed UPDATE is sent as written, but its plan's
    `on_success` is applied although it matched no row (query.rs:109-113,
    only `out.err.is_none()` is checked), so thaw believes frozen_balance is
    1200. The re-read shows 100 for a row still in the window: `diverged`
    (src/rules/captures.rs:240-248). `answered_for_state` spares a diverged
    transaction only when *every* rule is in shadow (query.rs:154-158), so
    the app's INSERT gets thaw's 1213 and the transaction is rolled back for
    a rule that is only being observed."""
    differential(
        via, request, "mixed_thaw",
        ["BEGIN", READ, "UPDATE users SET frozen_balance = 1200 WHERE id = 1 AND balance - frozen_balance >= 1100",
         "SELECT id, balance, frozen_balance FROM users WHERE id = 1", "INSERT INTO freeze_logs VALUES ('declined', 1, 0)", "COMMIT"],
    )


def test_defer_prepared_row_count_sees_the_held_update(via, request):
    """The same through mysql-connector with `prepared=True` (COM_STMT_PREPARE
    / EXECUTE): read, freeze, log two rows, `SELECT ROW_COUNT()`, COMMIT.
    Direct ROW_COUNT() is 0 (the PREPARE of the SELECT came after the
    INSERT). Through thaw the INSERT needs no flush, the EXECUTE of
    `SELECT ROW_COUNT()` does (src/session/prepared.rs:241 ->
    `before_statement_with_deferred`), so the held UPDATE runs between the
    PREPARE and the EXECUTE and ROW_COUNT() is its 1."""
    import mysql.connector

    def go(host, port):
        db = fresh_db()
        try:
            c = mysql.connector.connect(host=host, port=port, user="root", password="", database=db, autocommit=False)
            cur = c.cursor(prepared=True)
            seen = []
            for sql, args in [
                ("SELECT id, balance, frozen_balance FROM users WHERE id = %s FOR UPDATE", (1,)),
                ("UPDATE users SET frozen_balance = %s WHERE id = %s", (150, 1)),
                ("INSERT INTO freeze_logs VALUES (%s, %s, %s), ('f2', 1, 0)", ("f1", 1, 50)),
                ("SELECT ROW_COUNT()", ()),
                ("COMMIT", ()),
            ]:
                cur.execute(sql, args)
                seen.append((sql, [tuple(r) for r in cur.fetchall()] if cur.with_rows else cur.rowcount))
            c.close()
            return seen, tables(db)
        finally:
            drop_db(db)

    ref = go(DIRECT_HOST, DIRECT_PORT)
    host, port = endpoint(via, request, "defer_thaw")
    got = go(host, port)
    assert got == ref, f"\n direct: {ref}\n {via}: {got}"
