"""Edges of the protection window (spec 2, 3, 7, 8): reads thaw cannot use
as a re-capture, statements that end the window, `LIMIT 0`, binary
prepared statements, and captured values in a multi-byte connection charset."""
from __future__ import annotations

import mysql.connector
import pytest
from pymysql.converters import escape_string

from conftest import admin_exec
from safety.harness import (
    App, Endpoint, Env, check, error_code, other_freeze, run_with_retry, std_books, std_setup,
)

CHANGE = pytest.mark.parametrize("change", [False, True], ids=["no_change", "concurrent_change"])

VIEW_RULES = """
    tables:
      - table: users
        name: users-balance
        key: id
        invariants:
          - balance - frozen_balance >= 0
          - frozen_balance >= 0
        balance_columns: [balance, frozen_balance]
        cas_columns: [username]
        last_writer_wins: [updated_at]
        views: [users_v]
        violation:
          error: {code: 1644, sqlstate: "45000", message: "insufficient balance (rule {rule}, user {key})"}
          rollback: true
"""

OPAQUE_REREADS = {
    "expression": "SELECT id, balance, frozen_balance + 0 AS frozen_balance FROM users WHERE id = 1",
    "derived_table": "SELECT t.id, t.balance, t.frozen_balance FROM (SELECT id, balance, frozen_balance FROM users WHERE id = 1) t",
    "view": "SELECT id, balance, frozen_balance FROM users_v WHERE id = 1",
    "no_key": "SELECT balance, balance, frozen_balance FROM users WHERE username = 'alice'",
}


@pytest.mark.parametrize("reread", list(OPAQUE_REREADS))
def test_reread_through_expression_derived_table_view_or_without_key(via, direct, reread, request):
    """READ COMMITTED, as test_read_committed_plain_reread_then_absolute_write,
    but the re-read shows the row in a way thaw cannot tie to a capture. It
    must not forward it as if it changed nothing: the write that follows is
    computed from it."""
    subject = direct
    if via == "thaw":
        if reread == "view":
            t = request.getfixturevalue("make_thaw")(VIEW_RULES)
            subject = Endpoint("thaw", t.host, t.port)
        else:
            subject = request.getfixturevalue("subject")

    def scenario(env: Env, db: str):
        other = env.concurrent(other_freeze())
        app = env.app()
        app.q("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")

        def txn():
            app.q("SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE")
            other.fire()
            row = app.q(OPAQUE_REREADS[reread])[0]
            app.q("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-1', 1, 50)")
            app.q(f"UPDATE users SET frozen_balance = {row[2] + 50} WHERE id = 1")
            app.q("COMMIT")
            return "frozen"
        res = run_with_retry(txn, rec=app.rec, rollback=app.rollback)
        other.join()
        return res

    setup = std_setup("CREATE VIEW users_v AS SELECT id, username, balance, frozen_balance FROM users")
    check(scenario, setup=setup, via=via, subject=subject, direct=direct, concurrent=True, books=std_books)


WINDOW_ENDERS = {
    "commit_and_chain": ["COMMIT AND CHAIN"],
    "set_autocommit_1": ["SET autocommit = 1"],
    "begin": ["BEGIN"],
    "ddl": ["CREATE TABLE scratch_ddl (id INT PRIMARY KEY)"],
    "rollback": ["ROLLBACK"],
}


@pytest.mark.parametrize("ender", list(WINDOW_ENDERS))
def test_statement_that_ends_the_window_drops_the_capture(via, subject, direct, ender):
    """Unlocked read (frozen 100), then a statement that ends the transaction
    (and the app's lock, direct). Another session then freezes 200 (it does
    not wait: nothing holds the row). The app's absolute write of 150 now has
    no capture behind it, so it is written as is, exactly as direct: thaw must
    not turn it into a delta from the dropped capture."""
    def scenario(env: Env, db: str):
        app = env.app()
        app.q("SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE")
        for sql in WINDOW_ENDERS[ender]:
            app.q(sql)
        admin_exec(f"UPDATE `{db}`.users SET frozen_balance = frozen_balance + 200 WHERE id = 1")
        app.q("UPDATE users SET frozen_balance = 150 WHERE id = 1")
        app.q("COMMIT")
        return "written"

    o = check(scenario, setup=std_setup(), via=via, subject=subject, direct=direct)
    assert [u[3] for u in o.rows["<db0>.users"] if u[0] == 1] == [150], o.summary()


@CHANGE
def test_update_limit_0_passes_untouched(via, subject, direct, change):
    """`UPDATE ... LIMIT 0` changes nothing and must not move what thaw
    believes the app saw: the next absolute write is relative to 100, not 999."""
    def scenario(env: Env, db: str):
        other = env.concurrent(other_freeze()) if change else None
        app = env.app()

        def txn():
            (row,) = app.q("SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE")
            if other is not None:
                other.fire()
            app.q("UPDATE users SET frozen_balance = 999 WHERE id = 1 LIMIT 0")
            app.q("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-1', 1, 50)")
            app.q(f"UPDATE users SET frozen_balance = {row[2] + 50} WHERE id = 1")
            app.q("COMMIT")
            return "frozen"
        res = run_with_retry(txn, rec=app.rec, rollback=app.rollback)
        if other is not None:
            other.join()
        return res

    check(scenario, setup=std_setup(), via=via, subject=subject, direct=direct, concurrent=change, books=std_books)


@CHANGE
def test_binary_prepared_statement_execute_after_unlocked_read(via, subject, direct, change):
    """mysql-connector: a text locking read, then the absolute write as
    COM_STMT_EXECUTE (binary protocol): planned with its bound values like
    the text write, so a concurrent freeze is kept (a delta), not lost."""
    def scenario(env: Env, db: str):
        other = env.concurrent(other_freeze()) if change else None
        conn = env.connector()
        rec = env.recorder("app")

        def txn():
            text = conn.cursor()
            text.execute("SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE")
            (row,) = text.fetchall()
            rec.note("read", row)
            if other is not None:
                other.fire()
            text.execute("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-1', 1, 50)")
            ps = conn.cursor(prepared=True)
            ps.execute("UPDATE users SET frozen_balance = %s WHERE id = %s", (row[2] + 50, 1))
            rec.note("updated", ps.rowcount)
            conn.commit()
            return "frozen"

        def rollback():
            try:
                conn.rollback()
            except mysql.connector.Error as e:
                rec.note("rollback failed", error_code(e))
        res = run_with_retry(txn, rec=rec, rollback=rollback)
        if other is not None:
            other.join()
        return res

    check(scenario, setup=std_setup(), via=via, subject=subject, direct=direct, concurrent=change, books=std_books)


# Names whose multi-byte encoding contains 0x5C (a backslash byte) next to a quote and a backslash:
# 乗 is 0x81 0x5C in GBK, 表 is 0x95 0x5C and ソ 0x83 0x5C in SJIS.
MB_NAMES = {"gbk": "乗'\\x乗", "sjis": "表'\\xソ"}
MB_CASES = {
    # (column charset, connection charset)
    "gbk_column": ("gbk", "utf8mb4"),
    "sjis_column": ("sjis", "utf8mb4"),
    "gbk_connection": ("gbk", "gbk"),
}


@CHANGE
@pytest.mark.parametrize("case", list(MB_CASES))
def test_multibyte_captured_username_is_a_safe_cas_literal(via, subject, direct, change, case):
    """A username stored in GBK / SJIS whose bytes contain 0x5C and a quote
    is read (unlocked), then written (CAS column) absolutely. thaw's
    `AND username = <captured>` must match the stored value exactly and can
    never end the string early (spec 8: charset-immune literals). Over a GBK
    connection thaw may instead keep the lock (it does not plan statements in
    a character set it cannot tokenize): only the outcome is prescribed there."""
    column_cs, conn_cs = MB_CASES[case]
    name = MB_NAMES[column_cs]

    def setup(env: Env) -> None:
        std_setup(f"ALTER TABLE users MODIFY username VARCHAR(64) CHARACTER SET {column_cs}",
                  f"UPDATE users SET username = '{escape_string(name)}' WHERE id = 1")(env)

    def scenario(env: Env, db: str):
        def rename(app: App):
            app.q("UPDATE users SET username = CONCAT(username, '-2') WHERE id = 1")
            app.q("COMMIT")
        other = env.concurrent(rename) if change else None
        app = env.app(charset=conn_cs)

        def txn():
            (row,) = app.q("SELECT id, username, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE")
            if other is not None:
                other.fire()
            app.q("UPDATE users SET username = %s WHERE id = 1", (row[1] + name[0],))
            app.q("COMMIT")
            return "renamed"
        res = run_with_retry(txn, rec=app.rec, rollback=app.rollback)
        if other is not None:
            other.join()
        return res

    def books(o):
        got = {u[0]: u[1] for u in o.rows["<db0>.users"]}[1]
        ok = {name + name[0]} | ({name + "-2" + name[0], name + name[0] + "-2"} if change else set())
        assert got in ok, o.summary()

    check(scenario, setup=setup, via=via, subject=subject, direct=direct, concurrent=change, books=books,
          expect_retry=change and conn_cs == "utf8mb4")
