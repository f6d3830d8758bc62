"""SQL-level prepared statements (text ``PREPARE`` / ``EXECUTE ... USING`` /
``EXECUTE IMMEDIATE``) after an unlocked read: through thaw the absolute
write must be planned (a delta) or validated (re-lock, 1213 when the row
changed), never let through stale.

Two sessions freeze for the same user, interleaved: A and B both read the
row with a text ``FOR UPDATE`` (direct, B waits for A's lock; through thaw
both read unlocked), A writes 100 and commits, then B writes its absolute
value computed from what it read (+200). The app retries 1213. The books
must say 300, twice logged, every time.
"""

from __future__ import annotations

import threading

import pymysql
import pytest

from legacy import legacy_harness as H
from prepared import support as S

INITIAL = 10000
READ = "SELECT id, balance, frozen_balance FROM users WHERE id = 8 FOR UPDATE"
SQL = "UPDATE users SET balance = ?, frozen_balance = ? WHERE id = ?"


def _connect(endpoint, db):
    host, port = endpoint
    c = pymysql.connect(host=host, port=port, user="root", password="", database=db, autocommit=False)
    with c.cursor() as cur:
        cur.execute(f"SET SESSION innodb_lock_wait_timeout = {S.LOCK_WAIT_TIMEOUT}")
    return c


def _write(cur, style, balance, frozen):
    """The absolute write, the SQL-level prepared way."""
    if style == "prepare_in_txn":
        cur.execute(f"PREPARE s FROM '{SQL}'")
        cur.execute("SET @b = %s, @f = %s, @id = 8", (balance, frozen))
        cur.execute("EXECUTE s USING @b, @f, @id")
    elif style == "prepared_before_txn":  # PREPARE s ran before BEGIN
        cur.execute("EXECUTE s USING %s, %s, 8", (balance, frozen))
    else:
        cur.execute(f"EXECUTE IMMEDIATE '{SQL}' USING %s, %s, 8", (balance, frozen))


def _freeze(conn, style, amount, rid, seen=None):
    """One attempt; ``seen`` is the row already read in this transaction."""
    with conn.cursor() as cur:
        if seen is None:
            cur.execute("BEGIN")
            cur.execute(READ)
            seen = cur.fetchone()
        _, balance, frozen = seen
        _write(cur, style, balance, frozen + amount)
        cur.execute(
            "INSERT INTO compute_freeze_logs (request_id, user_id, amount, status) VALUES (%s, 8, %s, 'frozen')",
            (rid, amount),
        )
    conn.commit()


def _with_retry(conn, attempt, codes):
    """The app's deadlock retry: the whole transaction again (5 tries)."""
    for n in range(5):
        try:
            return attempt(n)
        except pymysql.err.MySQLError as e:
            conn.rollback()
            codes.append(e.args[0])
            if e.args[0] != 1213 or n == 4:
                raise


@pytest.mark.parametrize("style", ["prepare_in_txn", "prepared_before_txn", "execute_immediate"])
def test_stale_sql_level_prepared_write_is_never_lost(via, endpoint, style):
    db = H.create_legacy_db(decimal=False)
    try:
        db.seed_users({S.USER: INITIAL})
        a, b = _connect(endpoint, db.name), _connect(endpoint, db.name)
        if style == "prepared_before_txn":
            for c in (a, b):
                with c.cursor() as cur:
                    cur.execute(f"PREPARE s FROM '{SQL}'")
        a_codes, b_codes, b_seen = [], [], {}
        with a.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute(READ)
            a_row = cur.fetchone()

        def b_read():
            with b.cursor() as cur:
                cur.execute("BEGIN")
                cur.execute(READ)
                b_seen["row"] = cur.fetchone()

        reader = threading.Thread(target=b_read, daemon=True)
        reader.start()
        reader.join(0.5)
        b_blocked = reader.is_alive()
        _with_retry(a, lambda n: _freeze(a, style, 100, "req-a", a_row if n == 0 else None), a_codes)
        reader.join(10)
        assert not reader.is_alive() and "row" in b_seen, "B's read never returned"
        _with_retry(b, lambda n: _freeze(b, style, 200, "req-b", b_seen["row"] if n == 0 else None), b_codes)
        a.close()
        b.close()

        balance, frozen = db.user(S.USER)
        print(f"{via} {style}: B blocked={b_blocked}, B read {b_seen['row']}, A codes {a_codes}, B codes {b_codes}")
        assert (balance, frozen) == (INITIAL, 300), f"a freeze was lost or doubled: frozen_balance {frozen}"
        assert sorted(r[0] for r in db.logs(S.USER)) == ["req-a", "req-b"]
        assert a_codes == []
        if via == "direct":
            assert b_blocked and b_seen["row"][2] == 100 and b_codes == []
        else:
            # unlocked, B read the row before A's write; thaw then either
            # planned B's write (no error) or refused it once (1213).
            assert not b_blocked and b_seen["row"][2] == 0
            assert b_codes in ([], [1213]), b_codes
    finally:
        H.drop_legacy_db(db)
