"""What may observe a held-back write sends it first (`flush_cause`), and
what cannot does not: the app sees what it sees direct and without
deferral, packet for packet, and the counters show whether the write was
held and why it was sent (a case that expects a flush and sees none, or
the reverse, proves nothing)."""
from __future__ import annotations

import pytest

from defer.support import Counters, assert_same, flushes_by_cause, run_all, wire_app
from safety.harness import Env, std_setup

READ_USER = "SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE"


def freeze_then(*after: str, amount: int = 50, end: str = "COMMIT", autocommit: bool = False, begin: bool = True):
    """read -> log -> absolute write of user 1 -> each of ``after`` (text, or
    a function of the row read) -> end -> re-read. Statements may fail: the
    error is part of the transcript."""
    def scenario(env: Env, db: str):
        app = wire_app(env, autocommit=autocommit)
        if begin:
            app.q("BEGIN")
        (row,) = app.q(READ_USER)
        app.q(f"INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-1', 1, {amount})")
        app.q(f"UPDATE users SET frozen_balance = {row[2] + amount} WHERE id = 1")
        for sql in after:
            app.try_q(sql(row) if callable(sql) else sql)
        app.try_q(end)
        app.q("SELECT id, balance, frozen_balance FROM users ORDER BY id")
        app.q("COMMIT")
        return "done"
    return scenario


def differential(endpoints, thaws, scenario, setup=None):
    """Run on the three endpoints, compare; return the defer thaw's counter deltas."""
    c = Counters(thaws.defer.admin_port)
    causes = flushes_by_cause(thaws.defer.admin_port)
    outs = run_all(scenario, setup or std_setup(), endpoints)
    after = flushes_by_cause(thaws.defer.admin_port)
    assert_same(outs)
    d = c.delta()
    d["causes"] = {k: v - causes.get(k, 0) for k, v in after.items() if v - causes.get(k, 0)}
    return d


# --------------------------------------------------------- reads of the row
@pytest.mark.parametrize("read", [
    "SELECT balance, frozen_balance FROM users WHERE id = 1",
    "SELECT * FROM users",
    "SELECT SUM(frozen_balance) FROM users",
    "SELECT u.frozen_balance, l.amount FROM users u JOIN freeze_logs l ON l.user_id = u.id",
    "SELECT frozen_balance FROM users WHERE id = 1 FOR UPDATE",
    "SELECT ROW_COUNT()",
    "SELECT 1 FROM freeze_logs WHERE user_id IN (SELECT id FROM users WHERE frozen_balance > 100)",
], ids=["by_key", "scan", "aggregate", "join", "locking", "row_count", "subquery"])
def test_read_after_write_sees_it(endpoints, thaws, read):
    d = differential(endpoints, thaws, freeze_then(read))
    assert d["writes"] == 1 and d["flushes"] == 1 and d["committed"] == 0, d


def test_insert_into_another_table_does_not_send_it(endpoints, thaws):
    """A plain-values INSERT into a table no rule governs or links cannot see
    the row: the write stays held to COMMIT (the legacy flow's log INSERT)."""
    d = differential(endpoints, thaws, freeze_then("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-2', 1, 0)"))
    assert d == {"writes": 1, "flushes": 0, "committed": 1, "violations": 0, "causes": {}}, d


def test_read_of_another_table_is_validated_once(endpoints, thaws):
    """A read of any table sends the held write first (a view or a function
    may show the row); the first one is then validated as any read of
    another table inside the window (docs/safety-model.md section 2)."""
    d = differential(endpoints, thaws, freeze_then(
        "SELECT * FROM freeze_logs",
        lambda row: f"UPDATE users SET frozen_balance = {row[2] + 80} WHERE id = 1",
        "SELECT * FROM freeze_logs",
    ))
    assert d["writes"] == 2 and d["committed"] == 0 and d["causes"] == {"read": 2}, d


# ------------------------------------------------------------ savepoints
def test_savepoint_sends_held_writes_and_rollback_to_undoes_them(endpoints, thaws):
    """write (held) -> SAVEPOINT (sends it) -> second write (held) ->
    ROLLBACK TO (sends it, then undoes it) -> COMMIT: the first freeze stays."""
    d = differential(endpoints, thaws, freeze_then(
        "SAVEPOINT s1",
        lambda row: f"UPDATE users SET frozen_balance = {row[2] + 80} WHERE id = 1",
        "ROLLBACK TO SAVEPOINT s1",
        "SELECT frozen_balance FROM users WHERE id = 1",
    ))
    assert d["writes"] == 2 and d["causes"] == {"savepoint": 2}, d


def test_write_after_savepoint_rolled_back_to(endpoints, thaws):
    """SAVEPOINT before the write: ROLLBACK TO must undo the held write."""
    def scenario(env: Env, db: str):
        app = wire_app(env)
        app.q("BEGIN")
        (row,) = app.q(READ_USER)
        app.q("SAVEPOINT s1")
        app.q(f"UPDATE users SET frozen_balance = {row[2] + 50} WHERE id = 1")
        app.q("ROLLBACK TO SAVEPOINT s1")
        app.q(f"UPDATE users SET frozen_balance = {row[2] + 20} WHERE id = 1")
        app.q("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-1', 1, 20)")
        app.q("COMMIT")
        app.q("SELECT id, frozen_balance FROM users ORDER BY id")
        return "done"

    d = differential(endpoints, thaws, scenario)
    assert d["writes"] == 2 and d["committed"] == 1 and d["causes"] == {"savepoint": 1}, d


# -------------------------------------------------------------- rollback
@pytest.mark.parametrize("end", ["ROLLBACK", "ROLLBACK AND CHAIN", "ROLLBACK WORK"])
def test_rollback_drops_held_writes_unsent(endpoints, thaws, end):
    d = differential(endpoints, thaws, freeze_then(end=end))
    # Never sent: not flushed, not committed.
    assert d == {"writes": 1, "flushes": 0, "committed": 0, "violations": 0, "causes": {}}, d


# -------------------------------------------------- second write of a row
def test_second_write_of_the_same_row(endpoints, thaws):
    """The app writes user 1 twice from its one read (absolute values): the
    second is a delta on top of the first, so the first goes out before it."""
    d = differential(endpoints, thaws, freeze_then(lambda row: f"UPDATE users SET frozen_balance = {row[2] + 80} WHERE id = 1"))
    assert d["writes"] == 2 and d["committed"] == 1 and d["causes"] == {"write": 1}, d


def test_write_of_another_governed_row_sends_the_held_one(endpoints, thaws):
    """Another user's write also sends the held one first (a write of the
    governed table may observe it through a trigger); both end up right."""
    def scenario(env: Env, db: str):
        app = wire_app(env)
        app.q("BEGIN")
        r1 = app.q(READ_USER)[0]
        r3 = app.q("SELECT id, balance, frozen_balance FROM users WHERE id = 3 FOR UPDATE")[0]
        app.q(f"UPDATE users SET frozen_balance = {r1[2] + 10} WHERE id = 1")
        app.q(f"UPDATE users SET frozen_balance = {r3[2] + 30} WHERE id = 3")
        app.q("COMMIT")
        return "done"

    d = differential(endpoints, thaws, scenario)
    assert d["writes"] == 2 and d["committed"] == 1 and d["causes"] == {"write": 1}, d


# -------------------------------------------------------------- autocommit
def test_autocommit_statements_are_not_deferred(endpoints, thaws):
    """autocommit=1 and no BEGIN: every statement is its own transaction,
    nothing is captured and nothing is held."""
    d = differential(endpoints, thaws, freeze_then(autocommit=True, begin=False, end="SELECT 1"))
    assert d == {"writes": 0, "flushes": 0, "committed": 0, "violations": 0, "causes": {}}, d


def test_autocommit_with_begin_is_deferred(endpoints, thaws):
    """The positive control of the case above: BEGIN on an autocommit
    connection opens a transaction, and the write is held to its COMMIT."""
    d = differential(endpoints, thaws, freeze_then(autocommit=True, begin=True))
    assert d == {"writes": 1, "flushes": 0, "committed": 1, "violations": 0, "causes": {}}, d


# -------------------------------------------------- implicit and chained ends
@pytest.mark.parametrize("end", ["COMMIT AND CHAIN", "BEGIN", "SET autocommit = 1", "CREATE TABLE t_ddl (x INT)"],
                         ids=["commit_and_chain", "begin", "autocommit_on", "ddl"])
def test_other_ends_of_the_transaction_send_the_write_first(endpoints, thaws, end):
    d = differential(endpoints, thaws, freeze_then(end=end))
    assert d["writes"] == 1 and d["flushes"] == 1 and d["committed"] == 0, d


def test_flush_in_the_sessions_language(endpoints, thaws):
    """lc_messages=de_DE: the flushed write's OK says "Datensätze gefunden:
    1 ..."; thaw must still read it as one row matched (it took an unreadable
    count for a failed guard and answered the read with the violation).
    The made-up OK's own text is test_ok_packets.py's case; here the
    statements' outcomes and the rows are compared."""
    def scenario(env: Env, db: str):
        app = wire_app(env)
        app.q("SET SESSION lc_messages = 'de_DE'")
        app.q("BEGIN")
        (row,) = app.q(READ_USER)
        app.q(f"UPDATE users SET frozen_balance = {row[2] + 50} WHERE id = 1")
        app.try_q("SELECT balance, frozen_balance FROM users WHERE id = 1")
        app.try_q("COMMIT")
        app.q("SELECT id, balance, frozen_balance FROM users ORDER BY id")
        return "done"

    c = Counters(thaws.defer.admin_port)
    outs = run_all(scenario, std_setup(), endpoints)
    # thaw's made-up OK is English: under de_DE the write is not held.
    assert c.delta()["writes"] == 0 and c.delta()["violations"] == 0, c.delta()
    for o in outs.values():
        o.transcripts = {n: [[e for e in a if e[0] != "wire"] for a in att] for n, att in o.transcripts.items()}
    assert_same(outs)
