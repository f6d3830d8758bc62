"""COMMIT with held-back writes: what the app learns when the write cannot
be made, and that nothing of the transaction is committed then.

The documented difference (docs/rules.md, `defer_writes`): a guard that
fails (a violation, or 1213 for a row that vanished) is reported as the
answer to the COMMIT (or to the first statement that made thaw send the
write) instead of to the UPDATE, with the transaction rolled back. Nothing
else may differ: the error packet is the same bytes, the rows are the same,
and the connection works on the same way.

A concurrent change between the app's read and its write needs an unlocked
read, so these cases compare thaw without deferral (``plain``) and with it
(``defer``); direct, the other session would wait for the app's lock."""
from __future__ import annotations

import pymysql
import pytest

from conftest import admin_connect
from defer.conftest import BILLING
from defer.support import Counters, comparable, defect, run_all, wire_app
from safety.deferral import with_defer_writes
from safety.harness import DEADLOCK, VIOLATION, DbError, Endpoint, Env, exec_in, run, std_setup

READ_USER = "SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE"


def concurrently(env: Env, sql: str) -> None:
    """Another application commits ``sql`` (direct, autocommit)."""
    conn = admin_connect(database=env.db)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def freeze_after_change(change: str, *, amount: int = 200, rollback_after_commit: bool = False):
    """read (1000 / 100) -> ``change`` commits elsewhere -> log -> absolute
    write -> COMMIT. An error at the write: the app rolls back. An error at
    COMMIT: the transaction is over; some apps roll back all the same. Then
    the connection is used again."""
    def scenario(env: Env, db: str):
        app = wire_app(env)
        app.q("BEGIN")
        (row,) = app.q(READ_USER)
        concurrently(env, change)
        app.q(f"INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-1', 1, {amount})")
        e = app.try_q(f"UPDATE users SET frozen_balance = {row[2] + amount} WHERE id = 1")
        if isinstance(e, DbError):
            app.q("ROLLBACK")
        else:
            e = app.try_q("COMMIT")
            if isinstance(e, DbError) and rollback_after_commit:
                app.q("ROLLBACK")
        app.rec.note("after the transaction", True)
        # The connection works on: a read, and a new transaction that commits.
        app.q("SELECT request_id FROM freeze_logs")
        app.q("BEGIN")
        app.q("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('after', 2, 0)")
        app.q("COMMIT")
        return getattr(e, "code", "committed")
    return scenario


def moved_to_commit(plain_attempt: list, defer_attempt: list, code: int) -> None:
    """The defer transcript is the plain one with the error moved from the
    UPDATE to the COMMIT: the same statements before it, the UPDATE answered
    with the server's OK for a one-row change, the very ERR packet plain gave
    the UPDATE as the COMMIT's answer; after the transaction, the same."""
    def split(a):
        end = a.index(("note", "after the transaction", True))
        return a[:end], a[end:]

    def stmts(a):
        return [e for e in a if e[0] in ("ok", "err")]

    def wires(a):
        return [e[1] for e in a if e[0] == "wire"]

    (p_txn, p_after), (d_txn, d_after) = split(plain_attempt), split(defer_attempt)
    assert p_after == d_after, (plain_attempt, defer_attempt)
    ps, ds = stmts(p_txn), stmts(d_txn)
    upd = next(i for i, e in enumerate(ps) if e[1].startswith("UPDATE users"))
    assert ps[upd][0] == "err" and ps[upd][2] == code, plain_attempt
    assert ds[:upd] == ps[:upd] and wires(d_txn)[:upd] == wires(p_txn)[:upd], (plain_attempt, defer_attempt)
    assert ds[upd][0] == "ok" and wires(d_txn)[upd] == (b"\x00\x01\x00\x01\x00\x00\x00(Rows matched: 1  Changed: 1  Warnings: 0",)
    assert (ds[upd + 1][0], ds[upd + 1][1], ds[upd + 1][2]) == ("err", "COMMIT", code), defer_attempt
    assert wires(d_txn)[upd + 1] == wires(p_txn)[upd], "the error packet differs"


def check_moved(endpoints, thaws, scenario, setup, code: int):
    c = Counters(thaws.defer.admin_port)
    outs = run_all(scenario, setup, endpoints, names=("plain", "defer"))
    d = c.delta()
    want = {"writes": 1, "flushes": 0, "committed": 0, "violations": 1 if code == VIOLATION else 0}
    assert d == want, d
    plain, defer = outs["plain"], outs["defer"]
    assert plain.result == defer.result == code, (plain.summary(), defer.summary())
    # Nothing of the failed transaction is committed (its log row included).
    assert comparable(plain)[0] == comparable(defer)[0], (plain.summary(), defer.summary())
    assert "app-1" not in {r[0] for r in defer.rows["<db0>.freeze_logs"]}, defer.summary()
    moved_to_commit(plain.transcripts["app"][0], defer.transcripts["app"][0], code)
    return outs


@pytest.mark.parametrize("rollback_after_commit", [False, True], ids=["no_rollback", "app_rolls_back"])
def test_insufficient_funds_at_commit(endpoints, thaws, rollback_after_commit):
    """Another freeze of 850 commits between the app's read and its write:
    the app's +200 would overdraw. Without deferral the UPDATE gets 1644;
    with it the COMMIT does, and the log INSERT is rolled back with it."""
    scenario = freeze_after_change("UPDATE users SET frozen_balance = frozen_balance + 850 WHERE id = 1",
                                   rollback_after_commit=rollback_after_commit)
    check_moved(endpoints, thaws, scenario, std_setup(), VIOLATION)


def test_unsigned_guard_out_of_range_at_commit_is_the_rule_error(endpoints, thaws):
    """BIGINT UNSIGNED money: the failing guard overflows (1690) instead of
    matching no row; without deferral thaw answers the rule's 1644
    (docs/safety-model.md section 6), so with deferral the COMMIT must too."""
    setup = std_setup("ALTER TABLE users MODIFY balance BIGINT UNSIGNED NOT NULL DEFAULT 0,"
                      " MODIFY frozen_balance BIGINT UNSIGNED NOT NULL DEFAULT 0")
    scenario = freeze_after_change("UPDATE users SET frozen_balance = frozen_balance + 850 WHERE id = 1")
    check_moved(endpoints, thaws, scenario, setup, VIOLATION)


def test_row_gone_at_commit_is_a_deadlock(endpoints, thaws):
    """The lost race a held write can have: its row was deleted (a deferred
    write carries no CAS condition: a write of a CAS column is never held,
    see test_cas_column_write_is_not_held). Without deferral the UPDATE gets
    thaw's 1213, with it the COMMIT."""
    scenario = freeze_after_change("DELETE FROM users WHERE id = 1")
    outs = check_moved(endpoints, thaws, scenario, std_setup(), DEADLOCK)
    assert outs["defer"].messages["app"][0][1].startswith("thaw: "), outs["defer"].messages


def test_cas_column_write_is_not_held(endpoints, thaws):
    """A write of username (CAS) may lose its race: it is sent at once, and
    the app learns of the race at the UPDATE, as without deferral."""
    def scenario(env: Env, db: str):
        app = wire_app(env)
        app.q("BEGIN")
        app.q("SELECT id, username, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE")
        concurrently(env, "UPDATE users SET username = 'alice.renamed' WHERE id = 1")
        e = app.try_q("UPDATE users SET username = 'alice-verified', frozen_balance = 150 WHERE id = 1")
        app.try_q("ROLLBACK")
        return getattr(e, "code", "ok")

    c = Counters(thaws.defer.admin_port)
    outs = run_all(scenario, std_setup(), endpoints, names=("plain", "defer"))
    assert c.delta()["writes"] == 0, c.delta()
    assert outs["plain"].result == DEADLOCK and comparable(outs["plain"]) == comparable(outs["defer"])


# ------------------------------------------- what a held write may not change
def test_rollback_false_rule_keeps_the_transaction(make_thaw):
    """`violation: {rollback: false}`: the app is told at the UPDATE and its
    transaction goes on (it logs the refusal and commits that). A write held
    to COMMIT cannot keep that promise, so it must not be held."""
    no_rollback = BILLING.replace("      rollback: true", "      rollback: false")
    assert no_rollback != BILLING
    eps = {"plain": make_thaw(no_rollback), "defer": make_thaw(with_defer_writes(no_rollback))}

    def scenario(env: Env, db: str):
        app = wire_app(env)
        app.q("BEGIN")
        (row,) = app.q(READ_USER)
        concurrently(env, "UPDATE users SET frozen_balance = frozen_balance + 850 WHERE id = 1")
        app.q("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-1', 1, 200)")
        e = app.try_q(f"UPDATE users SET frozen_balance = {row[2] + 200} WHERE id = 1")
        if isinstance(e, DbError):
            app.q("UPDATE freeze_logs SET amount = 0 WHERE request_id = 'app-1'")
        app.try_q("COMMIT")
        return getattr(e, "code", "ok")

    outs = {n: run(scenario, std_setup(), Endpoint(n, t.host, t.port), label=n) for n, t in eps.items()}
    assert outs["plain"].result == VIOLATION, outs["plain"].summary()
    assert comparable(outs["defer"]) == comparable(outs["plain"]), outs["defer"].summary()


def test_read_only_transaction_write_fails_at_the_update(endpoints, thaws):
    """START TRANSACTION READ ONLY: the server refuses the UPDATE (1792).
    Held back, the app would be told OK and get 1792 at COMMIT.

    (Direct, MariaDB refuses the locking read itself with 1792; through
    thaw it is sent without its lock clause and succeeds, deferral or not:
    so this compares plain with defer.)"""
    def scenario(env: Env, db: str):
        app = wire_app(env)
        app.q("START TRANSACTION READ ONLY")
        (row,) = app.q(READ_USER)
        e = app.try_q(f"UPDATE users SET frozen_balance = {row[2] + 50} WHERE id = 1")
        app.try_q("COMMIT")
        return getattr(e, "code", "ok")

    outs = run_all(scenario, std_setup(), endpoints, names=("plain", "defer"))
    assert outs["plain"].result == 1792, outs["plain"].summary()
    assert comparable(outs["defer"]) == comparable(outs["plain"]), f"{outs['defer'].summary()}\n\n{outs['plain'].summary()}"


@pytest.mark.parametrize("how", ["COMMIT RELEASE", "completion_type"])
def test_commit_release_closes_the_connection(endpoints, thaws, how):
    """COMMIT RELEASE (or completion_type=2) ends the session after the
    commit: the server closes the connection. The compound statement's own
    COMMIT does not."""
    def scenario(env: Env, db: str):
        app = wire_app(env)
        if how == "completion_type":
            app.q("SET SESSION completion_type = 2")
        app.q("BEGIN")
        (row,) = app.q(READ_USER)
        app.q(f"UPDATE users SET frozen_balance = {row[2] + 50} WHERE id = 1")
        app.try_q("COMMIT RELEASE" if how == "COMMIT RELEASE" else "COMMIT")
        try:
            app.conn.ping(reconnect=False)
            return "connection open"
        except pymysql.err.MySQLError as e:
            return f"connection closed ({type(e).__name__})"

    outs = run_all(scenario, std_setup(), endpoints)
    assert outs["direct"].result.startswith("connection closed"), outs["direct"].summary()
    for n in ("plain", "defer"):
        assert comparable(outs[n]) == comparable(outs["direct"]), f"{n}\n{outs[n].summary()}"


# ------------------------------------------------ server-side observers
AUDIT = [
    "CREATE TABLE users_audit (id INT AUTO_INCREMENT PRIMARY KEY, user_id BIGINT, frozen BIGINT)",
    "CREATE TRIGGER users_audited AFTER UPDATE ON users FOR EACH ROW"
    " INSERT INTO users_audit (user_id, frozen) VALUES (NEW.id, NEW.frozen_balance)",
]


def test_trigger_on_the_governed_table_is_seen(endpoints, thaws):
    """An AFTER UPDATE trigger on users writes an audit table. Direct the
    app reads its audit row right after each UPDATE; a held write has not
    fired the trigger yet. (The first read of another table is validated,
    which sends the held write; the second is not.)"""
    def scenario(env: Env, db: str):
        app = wire_app(env)
        app.q("BEGIN")
        (row,) = app.q(READ_USER)
        app.q(f"UPDATE users SET frozen_balance = {row[2] + 50} WHERE id = 1")
        app.q("SELECT user_id, frozen FROM users_audit")
        app.q(f"UPDATE users SET frozen_balance = {row[2] + 70} WHERE id = 1")
        app.q("SELECT user_id, frozen FROM users_audit")
        app.q("COMMIT")
        return "done"

    outs = run_all(scenario, std_setup(*AUDIT), endpoints)
    for n in ("plain", "defer"):
        assert comparable(outs[n]) == comparable(outs["direct"]), f"{n}\n{outs[n].summary()}"


def test_stored_function_reading_the_row_is_seen(endpoints, thaws):
    """`SELECT frozen_of(1)`: a stored function reads users; the statement
    names no table, so nothing in it says it may see the held write."""
    def setup(env: Env) -> None:
        std_setup()(env)
        exec_in(env.db, "CREATE FUNCTION frozen_of(u BIGINT) RETURNS BIGINT READS SQL DATA"
                        " RETURN (SELECT frozen_balance FROM users WHERE id = u)")

    def scenario(env: Env, db: str):
        app = wire_app(env)
        app.q("BEGIN")
        (row,) = app.q(READ_USER)
        app.q(f"UPDATE users SET frozen_balance = {row[2] + 50} WHERE id = 1")
        app.q("SELECT frozen_of(1)")
        app.q(f"UPDATE users SET frozen_balance = {row[2] + 70} WHERE id = 1")
        app.q("SELECT frozen_of(1)")
        app.q("COMMIT")
        return "done"

    outs = run_all(scenario, setup, endpoints)
    for n in ("plain", "defer"):
        assert comparable(outs[n]) == comparable(outs["direct"]), f"{n}\n{outs[n].summary()}"
