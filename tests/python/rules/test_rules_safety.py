"""Rules edge cases that decide whether money is lost, through thaw against
the real MariaDB: writes thaw cannot guard after it removed a lock, rows that
do not exist, updates that change nothing, pass-through violations, and SQL
modes that change how literals are read."""
from __future__ import annotations

import os
import textwrap

import mysql.connector
import pymysql
import pytest

from conftest import admin_exec
from thawproc import REPO_ROOT, ThawProc

BILLING_RULES = str(REPO_ROOT / "rules" / "billing.yaml")

SCHEMA = (
    "CREATE TABLE users (id BIGINT PRIMARY KEY, username VARCHAR(64), balance BIGINT NOT NULL DEFAULT 0,"
    " frozen_balance BIGINT NOT NULL DEFAULT 0, updated_at DATETIME NULL)"
)


@pytest.fixture
def users(db_name):
    admin_exec(f"USE {db_name}", SCHEMA, "INSERT INTO users (id, username, balance, frozen_balance) VALUES (1, 'a', 1000, 100), (2, 'b', 50, 0)")
    return db_name


@pytest.fixture(scope="module")
def billing_thaw():
    with ThawProc(rules=BILLING_RULES) as t:
        yield t


def connect(t, db, **kw):
    return pymysql.connect(host=t.host, port=t.port, user="root", database=db, autocommit=False, **kw)


def balances(db, uid):
    return admin_exec(f"SELECT balance, frozen_balance FROM {db}.users WHERE id = {uid}")[0]


def test_unkeyed_write_after_unlocked_read_is_validated_then_sent(billing_thaw, users):
    c = connect(billing_thaw, users)
    cur = c.cursor()
    cur.execute("SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE")
    assert cur.fetchall() == ((1, 1000, 100),)
    # IN (...) keys are out of scope: thaw re-locks the row, finds it as the app
    # saw it, and sends the write: exactly the locked flow.
    assert cur.execute("UPDATE users SET frozen_balance = 900 WHERE id IN (1)") == 1
    c.commit()
    assert balances(users, 1) == (1000, 900)
    c.close()


def test_unkeyed_write_after_a_concurrent_change_is_a_retryable_deadlock(billing_thaw, users):
    c = connect(billing_thaw, users)
    cur = c.cursor()
    cur.execute("INSERT INTO users (id, balance) VALUES (10, 5)")  # must not survive the rollback
    cur.execute("SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE")
    assert cur.fetchall() == ((1, 1000, 100),)
    admin_exec(f"UPDATE {users}.users SET frozen_balance = frozen_balance + 7 WHERE id = 1")
    with pytest.raises(pymysql.err.OperationalError) as e:
        cur.execute("UPDATE users SET frozen_balance = 900 WHERE id IN (1)")
    assert e.value.args[0] == 1213
    assert balances(users, 1) == (1000, 107)
    assert admin_exec(f"SELECT COUNT(*) FROM {users}.users WHERE id = 10")[0][0] == 0
    # The transaction is aborted until the app rolls back ...
    with pytest.raises(pymysql.err.OperationalError) as e:
        cur.execute("SELECT 1")
    assert e.value.args[0] == 1213 and "rolled back" in e.value.args[1]
    c.rollback()
    # ... and the retried transaction, seeing fresh data, passes.
    cur.execute("SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE")
    assert cur.fetchall() == ((1, 1000, 107),)
    cur.execute("UPDATE users SET frozen_balance = 900 WHERE id IN (1)")
    c.commit()
    assert balances(users, 1) == (1000, 900)
    c.close()


def test_prepared_write_after_unlocked_read_is_a_delta(billing_thaw, users):
    """A prepared absolute write after an unlocked text read is planned with
    its bound values, as the text write is: a concurrent +7 is kept."""
    c = mysql.connector.connect(host=billing_thaw.host, port=billing_thaw.port, user="root", database=users, autocommit=False, use_pure=True)
    text = c.cursor()
    text.execute("SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE")
    assert text.fetchall() == [(1, 1000, 100)]
    admin_exec(f"UPDATE {users}.users SET frozen_balance = frozen_balance + 7 WHERE id = 1")
    ps = c.cursor(prepared=True)
    ps.execute("UPDATE users SET frozen_balance = %s WHERE id = %s", (950, 1))
    assert ps.rowcount == 1
    c.commit()
    assert balances(users, 1) == (1000, 957)
    c.close()


def test_missing_row_is_an_ordinary_zero_row_update(billing_thaw, users):
    c = connect(billing_thaw, users)
    cur = c.cursor()
    assert cur.execute("UPDATE users SET frozen_balance = frozen_balance + 1 WHERE id = 999") == 0
    c.commit()
    c.close()


def test_update_that_changes_nothing_is_not_a_violation(billing_thaw, users):
    c = connect(billing_thaw, users)  # pymysql without CLIENT_FOUND_ROWS: rows matched come from the info text
    cur = c.cursor()
    cur.execute("SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE")
    cur.fetchall()
    assert cur.execute("UPDATE users SET frozen_balance = 100 WHERE id = 1") == 0  # changed 0, matched 1
    c.commit()
    assert balances(users, 1) == (1000, 100)
    c.close()


def test_violation_rolls_back_earlier_writes_of_the_transaction(billing_thaw, users):
    c = connect(billing_thaw, users)
    cur = c.cursor()
    cur.execute("SELECT id, balance, frozen_balance FROM users WHERE id = 2 FOR UPDATE")
    cur.fetchall()
    cur.execute("INSERT INTO users (id, balance) VALUES (11, 1)")
    with pytest.raises(pymysql.err.OperationalError) as e:
        cur.execute("UPDATE users SET frozen_balance = 60 WHERE id = 2")
    assert e.value.args[0] == 1644
    assert "insufficient balance" in e.value.args[1]
    assert admin_exec(f"SELECT COUNT(*) FROM {users}.users WHERE id = 11")[0][0] == 0
    assert balances(users, 2) == (50, 0)
    c.close()


def test_pass_through_rule_returns_the_zero_row_result(tmp_path, users):
    rules = tmp_path / "rules.yaml"
    rules.write_text(textwrap.dedent("""
        tables:
          - table: users
            key: id
            invariants: [balance - frozen_balance >= 0]
            balance_columns: [balance, frozen_balance]
            violation:
              pass_through: true
    """))
    with ThawProc(rules=str(rules)) as t:
        c = connect(t, users, client_flag=pymysql.constants.CLIENT.FOUND_ROWS)
        cur = c.cursor()
        assert cur.execute("UPDATE users SET frozen_balance = frozen_balance + 60 WHERE id = 2") == 0
        cur.execute("INSERT INTO users (id, balance) VALUES (12, 1)")
        c.commit()  # nothing was rolled back behind the app's back
        assert admin_exec(f"SELECT COUNT(*) FROM {users}.users WHERE id = 12")[0][0] == 1
        assert balances(users, 2) == (50, 0)
        c.close()


def test_no_backslash_escapes_mode_is_honoured(billing_thaw, users):
    c = connect(billing_thaw, users)
    cur = c.cursor()
    cur.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')")
    # In this mode '\\' is two characters and the quote after it closes the string.
    cur.execute("SELECT id, balance, frozen_balance, username FROM users WHERE id = 1 AND username <> 'x\\' FOR UPDATE")
    assert cur.fetchall() == ((1, 1000, 100, "a"),)
    # The lock is gone (a held lock would make this fail with 1205) ...
    admin_exec("SET SESSION innodb_lock_wait_timeout = 1", f"UPDATE {users}.users SET frozen_balance = frozen_balance + 200 WHERE id = 1")
    # ... and the absolute write became a delta of +200 on top of the concurrent one.
    cur.execute("UPDATE users SET frozen_balance = 300, username = 'q\\' WHERE id = 1")
    c.commit()
    assert admin_exec(f"SELECT frozen_balance, username FROM {users}.users WHERE id = 1")[0] == (500, "q\\")
    c.close()


def test_delta_keeps_a_concurrent_freeze(billing_thaw, users):
    """The core promise: an absolute write after an unlocked read becomes a
    delta, so a freeze committed in between by someone else survives."""
    c = connect(billing_thaw, users)
    cur = c.cursor()
    cur.execute("SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE")
    assert cur.fetchall() == ((1, 1000, 100),)
    admin_exec(f"UPDATE {users}.users SET frozen_balance = frozen_balance + 200 WHERE id = 1")
    cur.execute("UPDATE users SET frozen_balance = 150 WHERE id = 1")  # app believes 100 -> 150
    cur.execute("UPDATE users SET frozen_balance = 170 WHERE id = 1")  # relative to what it now believes
    c.commit()
    assert balances(users, 1) == (1000, 370)
    c.close()


def test_upsert_after_unlocked_read_is_validated(billing_thaw, users):
    c = connect(billing_thaw, users)
    cur = c.cursor()
    cur.execute("SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE")
    cur.fetchall()
    admin_exec(f"UPDATE {users}.users SET frozen_balance = frozen_balance + 7 WHERE id = 1")
    with pytest.raises(pymysql.err.OperationalError) as e:
        cur.execute("INSERT INTO users (id, frozen_balance) VALUES (1, 900) ON DUPLICATE KEY UPDATE frozen_balance = 900")
    assert e.value.args[0] == 1213
    c.rollback()
    assert balances(users, 1) == (1000, 107)
    # Nothing changed since the read: the upsert runs under the re-taken lock.
    cur.execute("SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE")
    cur.fetchall()
    cur.execute("INSERT INTO users (id, frozen_balance) VALUES (1, 900) ON DUPLICATE KEY UPDATE frozen_balance = 900")
    c.commit()
    assert balances(users, 1) == (1000, 900)
    c.close()
