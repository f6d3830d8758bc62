"""A statement too large to plan is streamed, and for the safety model it is
an unknown statement: inside the protection window (after an unlocked read)
the window is re-locked and validated before it is sent."""

from __future__ import annotations

import pymysql
import pytest

from conftest import DB_USER, admin_connect
from thawproc import REPO_ROOT, ThawProc

from .memsupport import MIB, metric

PAD = " /*" + "p" * (2 * MIB) + "*/"  # over limits.connection_buffer_bytes (1 MiB)


@pytest.fixture
def billing(db_name):
    with ThawProc(rules=str(REPO_ROOT / "rules" / "billing.yaml")) as t:
        a = admin_connect(database=db_name)
        with a.cursor() as cur:
            cur.execute("CREATE TABLE users (id INT PRIMARY KEY, username VARCHAR(64), balance BIGINT NOT NULL,"
                        " frozen_balance BIGINT NOT NULL, updated_at DATETIME)")
            cur.execute("INSERT INTO users VALUES (1, 'ann', 1000, 0, NULL)")
        a.close()
        yield t, db_name


def validations(t, outcome):
    return metric(t.admin_port, "thaw_validations_total", f'outcome="{outcome}"')


def app(t, db):
    return pymysql.connect(host=t.host, port=t.port, user=DB_USER, password="", database=db, autocommit=False)


def test_large_statement_in_the_window_is_validated_first(billing):
    t, db = billing
    c = app(t, db)
    cur = c.cursor()
    cur.execute("SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE")
    assert cur.fetchall() == ((1, 1000, 0),)
    equal = validations(t, "equal")
    cur.execute("SELECT COUNT(*) FROM users" + PAD)
    assert cur.fetchall() == ((1,),)
    assert validations(t, "equal") == equal + 1
    c.rollback()
    c.close()


def test_large_statement_after_a_concurrent_change_rolls_back_with_1213(billing):
    t, db = billing
    c = app(t, db)
    cur = c.cursor()
    cur.execute("SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE")
    cur.fetchall()
    # thaw removed the lock: another session can change the row meanwhile.
    other = admin_connect(database=db)
    with other.cursor() as o:
        o.execute("UPDATE users SET balance = balance - 10 WHERE id = 1")
    other.close()
    changed = validations(t, "changed")
    with pytest.raises(pymysql.err.OperationalError) as e:
        cur.execute("UPDATE users SET frozen_balance = 5 WHERE id = 1" + PAD)
    assert e.value.args[0] == 1213
    assert validations(t, "changed") == changed + 1
    # The transaction was rolled back: nothing of it survives, the session works.
    c.rollback()
    cur.execute("SELECT balance, frozen_balance FROM users WHERE id = 1")
    assert cur.fetchall() == ((990, 0),)
    c.close()


def test_large_write_in_the_window_goes_through_when_rows_are_unchanged(billing):
    t, db = billing
    c = app(t, db)
    cur = c.cursor()
    cur.execute("SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE")
    cur.fetchall()
    cur.execute("UPDATE users SET balance = 900 WHERE id = 1" + PAD)
    assert cur.rowcount == 1
    c.commit()
    cur.execute("SELECT balance FROM users WHERE id = 1")
    assert cur.fetchall() == ((900,),)
    c.close()
