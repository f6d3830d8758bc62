"""Lock errors on the compound statement a COMMIT with held writes becomes:
a lock wait timeout is retried as a statement (only the statement was
rolled back), a deadlock replays the transaction from its recording; the
app gets the answer an undisturbed run gets, and the books are right.

The other session runs direct and takes the locks it needs by hand, with
its own per-session innodb_lock_wait_timeout; no GLOBAL is changed.
Whether thaw really met the lock error is read from its metrics: a case in
which the choreography missed (no 1205, no deadlock) fails, it does not
pass on an undisturbed run."""
from __future__ import annotations

import threading
import time

import pymysql

from conftest import admin_connect
from defer.support import Counters, comparable, metric, wire_app
from safety.harness import Endpoint, Env, run, std_setup, wait_blocked_or_done

READ_USER = "SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE"


def other_session(env: Env, timeout: int = 10):
    conn = admin_connect(database=env.db)
    with conn.cursor() as cur:
        cur.execute(f"SET SESSION innodb_lock_wait_timeout = {timeout}")
        cur.execute("SET autocommit = 0")
    env._closers.append(conn.close)
    return conn


def app_freeze(env: Env, *, lock_wait: int, in_txn=None, uids=(1,)):
    """The legacy freeze of ``uids`` (50 each); ``in_txn()`` runs before COMMIT.
    (Of several, only the last write is held: a read or write of the
    governed table sends the held one first.)"""
    app = wire_app(env)
    app.q(f"SET SESSION innodb_lock_wait_timeout = {lock_wait}")
    app.q("BEGIN")
    for uid in uids:
        (row,) = app.q(f"SELECT id, balance, frozen_balance FROM users WHERE id = {uid} FOR UPDATE")
        app.q(f"UPDATE users SET frozen_balance = {row[2] + 50} WHERE id = {uid}")
    app.q(f"INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('dl-1', {uids[0]}, 50)")
    if in_txn is not None:
        in_txn()
    e = app.try_q("COMMIT")
    return getattr(e, "code", "committed")


def undisturbed(thaws, **kw):
    ep = Endpoint("defer", thaws.defer.host, thaws.defer.port)
    return run(lambda env, db: app_freeze(env, lock_wait=kw.get("lock_wait", 1), uids=kw.get("uids", (1,))),
               std_setup(), ep, label="undisturbed")


def test_lock_wait_at_commit_is_retried(thaws):
    """Another session holds user 1's row lock across the app's COMMIT for
    1.5 s; the app's lock wait timeout is 1 s. The compound statement times
    out once (1205, statement rolled back), thaw re-sends it, and it commits."""
    ep = Endpoint("defer", thaws.defer.host, thaws.defer.port)

    def scenario(env: Env, db: str):
        other = other_session(env)

        def hold_lock():
            with other.cursor() as cur:
                cur.execute("SELECT * FROM users WHERE id = 1 FOR UPDATE")
            threading.Timer(1.5, other.commit).start()

        return app_freeze(env, lock_wait=1, in_txn=hold_lock)

    before = metric(thaws.defer.admin_port, "thaw_retries_total", code="1205", outcome="succeeded")
    c = Counters(thaws.defer.admin_port)
    got = run(scenario, std_setup(), ep, label="lock wait")
    after = metric(thaws.defer.admin_port, "thaw_retries_total", code="1205", outcome="succeeded")
    assert after - before == 1, f"no 1205 was retried ({before} -> {after}): the choreography missed\n{got.summary()}"
    assert c.delta()["committed"] == 1, c.delta()
    ref = undisturbed(thaws)
    assert got.result == "committed" and comparable(got) == comparable(ref), f"{got.summary()}\n\n{ref.summary()}"


def test_deadlock_at_commit_is_replayed(thaws):
    """A deadlock between the app's COMMIT and another session:

    app (thaw, held write of user 1):  ... INSERT log 'dl-1' (locks that row)
    other (direct):  BEGIN; 200 ballast rows (so the app is the lighter
                     transaction and InnoDB's victim); user 1 FOR UPDATE;
                     then waits for the app's 'dl-1' row
    app:             COMMIT -> the compound statement's UPDATE waits for the
                     other's user 1 lock -> deadlock, the app's transaction
                     is rolled back.

    thaw replays the recording (the locking read as the app wrote it, the
    INSERT) and sends the compound statement again: the app's COMMIT is
    answered OK, and the books are those of an undisturbed run plus the
    other session's ballast."""
    ep = Endpoint("defer", thaws.defer.host, thaws.defer.port)
    seen = {}

    def scenario(env: Env, db: str):
        other = other_session(env)
        with other.cursor() as cur:
            cur.execute("CREATE TABLE ballast (id INT PRIMARY KEY)")
            cur.execute("BEGIN")
            cur.execute("INSERT INTO ballast SELECT seq FROM seq_1_to_200")
            cur.execute("SELECT * FROM users WHERE id = 1 FOR UPDATE")

        def other_waits_then_commits():
            try:
                with other.cursor() as cur:
                    cur.execute("SELECT * FROM freeze_logs WHERE request_id = 'dl-1' FOR UPDATE")
                other.commit()
                seen["other"] = "committed"
            except pymysql.err.MySQLError as e:
                seen["other"] = e.args[0]

        t = threading.Thread(target=other_waits_then_commits, daemon=True)

        def start_other():
            t.start()
            seen["blocked"] = wait_blocked_or_done(t, [db])

        res = app_freeze(env, lock_wait=10, in_txn=start_other)
        t.join(20)
        return res

    before = metric(thaws.defer.admin_port, "thaw_replays_total", code="1213", outcome="succeeded")
    got = run(scenario, std_setup(), ep, label="deadlock")
    after = metric(thaws.defer.admin_port, "thaw_replays_total", code="1213", outcome="succeeded")
    assert seen.get("blocked") == "blocked" and seen.get("other") == "committed", (seen, got.summary())
    assert after - before == 1, f"no deadlock was replayed ({before} -> {after}), other: {seen}\n{got.summary()}"
    ref = undisturbed(thaws, lock_wait=10)
    want_rows = dict(comparable(ref)[0])
    want_rows["<db0>.ballast"] = [(i,) for i in sorted(range(1, 201), key=lambda i: repr((i,)))]
    assert got.result == "committed", got.summary()
    assert comparable(got)[1:] == comparable(ref)[1:], f"{got.summary()}\n\n{ref.summary()}"
    assert comparable(got)[0] == want_rows, got.summary()
