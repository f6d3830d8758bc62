"""A statement prepared before a rules reload is planned with the rules in
force when it executes (docs/operations.md: a session takes the new
generation between transactions), not with those of its COM_STMT_PREPARE.

Two sessions prepare the legacy read and write (mysql-connector
``cursor(prepared=True)``, which keeps a statement while its SQL does not
change), the rules change (SIGHUP), then the same prepared statements run
the interleaved freeze: A and B read user 8 FOR UPDATE, A writes +100 and
commits, B writes its absolute +200. The app retries 1213.

- rule_added: users was not governed at PREPARE time. After the reload B's
  read runs unlocked and its write is planned as a delta (no 1213).
- rule_removed: users was governed at PREPARE time. After the reload the
  read keeps its lock: B waits for A, exactly as direct.
Direct runs the same interleaving once, as the reference.

test_idle_session_takes_the_new_rules_at_its_next_transaction: not about
prepared statements. A session idle while the rules reload must start its
next transaction under the new rules (docs/operations.md, Reload).
"""

from __future__ import annotations

import signal
import threading

import mysql.connector
import pytest

from legacy import legacy_harness as H
from ops.helpers import atomic_write, wait_for
from prepared import support as S
from thawproc import REPO_ROOT

BILLING = (REPO_ROOT / "rules" / "billing.yaml").read_text()
NOT_USERS = "tables:\n  - table: not_users\n    key: id\n"
READ = "SELECT id, balance, frozen_balance FROM users WHERE id = ? FOR UPDATE"
WRITE = "UPDATE users SET balance = ?, frozen_balance = ? WHERE id = ?"
INITIAL = 10000


class App:
    """One session with its two prepared statements."""

    def __init__(self, endpoint, db):
        self.conn = S.connect(endpoint, db)
        self.sel = self.conn.cursor(prepared=True)
        self.upd = self.conn.cursor(prepared=True)
        self.codes: list[int] = []
        # prepare both (and run them once, writing what is there) before any reload
        self.read()
        self.upd.execute(WRITE, (INITIAL, 0, S.USER))
        self.conn.commit()

    def read(self):
        self.sel.execute(READ, (S.USER,))
        return self.sel.fetchone()

    def freeze(self, amount, seen=None):
        """Write from ``seen`` (already read in this transaction), retrying a
        1213 with a fresh transaction, as apps do."""
        for n in range(5):
            try:
                if seen is None:
                    self.conn.start_transaction()
                    seen = self.read()
                self.upd.execute(WRITE, (seen[1], seen[2] + amount, S.USER))
                self.conn.commit()
                return
            except mysql.connector.Error as e:
                self.conn.rollback()
                self.codes.append(e.errno)
                seen = None
                if e.errno != 1213 or n == 4:
                    raise


def _interleave(a: App, b: App) -> dict:
    a.conn.start_transaction()
    a_seen = a.read()
    b_seen = {}

    def b_read():
        b.conn.start_transaction()
        b_seen["row"] = b.read()

    reader = threading.Thread(target=b_read, daemon=True)
    reader.start()
    reader.join(0.5)
    blocked = reader.is_alive()
    a.freeze(100, a_seen)
    reader.join(10)
    assert "row" in b_seen, "B's read never returned"
    b.freeze(200, b_seen["row"])
    return {"blocked": blocked, "b_read": b_seen["row"]}


@pytest.mark.parametrize("direction", ["rule_added", "rule_removed"])
def test_prepared_before_reload_uses_the_new_rules(via, direction, make_thaw):
    db = H.create_legacy_db(decimal=False)
    try:
        db.seed_users({S.USER: INITIAL})
        if via == "direct":
            from conftest import DIRECT_HOST, DIRECT_PORT

            endpoint = (DIRECT_HOST, DIRECT_PORT)
        else:
            t = make_thaw(NOT_USERS if direction == "rule_added" else BILLING)
            endpoint = (t.host, t.port)
        a, b = App(endpoint, db.name), App(endpoint, db.name)
        if via == "thaw":
            atomic_write(t.rules, BILLING if direction == "rule_added" else NOT_USERS)
            t.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "generation=2" in t.log_text(), timeout=10, what="the rules reload")
            # One command each after the reload: thaw swaps the generation
            # before it waits for a command, so an idle session's next
            # transaction would still start under the old rules (that lag is
            # test_idle_session_takes_the_new_rules_at_its_next_transaction).
            a.conn.ping()
            b.conn.ping()
        r = _interleave(a, b)
        a.conn.close()
        b.conn.close()
        print(f"{via} {direction}: {r}, A codes {a.codes}, B codes {b.codes}")

        assert db.user(S.USER) == (INITIAL, 300), "a freeze was lost or doubled"
        assert a.codes == []
        if via == "direct" or direction == "rule_removed":
            assert r["blocked"] and r["b_read"][2] == 100, "B did not wait for A's lock"
            assert b.codes == []
        else:
            assert not r["blocked"], "the statement prepared before the reload was not unlocked by the new rule"
            assert r["b_read"][2] == 0
            assert b.codes == [], "B's prepared write was refused instead of planned"
    finally:
        H.drop_legacy_db(db)


def test_idle_session_takes_the_new_rules_at_its_next_transaction(make_thaw):
    """Text protocol. users becomes governed while both sessions are idle;
    their next transaction's keyed FOR UPDATE must run unlocked: B must not
    wait for A's lock."""
    import pymysql

    db = H.create_legacy_db(decimal=False)
    try:
        db.seed_users({S.USER: INITIAL})
        t = make_thaw(NOT_USERS)
        a, b = (pymysql.connect(host=t.host, port=t.port, user="root", password="", database=db.name) for _ in range(2))
        with b.cursor() as cur:
            cur.execute(f"SET SESSION innodb_lock_wait_timeout = {S.LOCK_WAIT_TIMEOUT}")
        atomic_write(t.rules, BILLING)
        t.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "generation=2" in t.log_text(), timeout=10, what="the rules reload")
        sql = "SELECT id, balance, frozen_balance FROM users WHERE id = 8 FOR UPDATE"
        with a.cursor() as ca, b.cursor() as cb:
            ca.execute("BEGIN")
            ca.execute(sql)
            cb.execute("BEGIN")
            try:
                cb.execute(sql)
                outcome = "read"
            except pymysql.err.OperationalError as e:
                outcome = f"error {e.args[0]}"
        a.close()
        b.close()
        assert outcome == "read", f"B's read after the reload: {outcome} (it ran under the rules before the reload)"
    finally:
        H.drop_legacy_db(db)
