"""Which locking reads thaw unlocks, and what later reads tell it (spec 1, 2, 9).

- A plain re-read (keyed, IN list or JOIN) under READ COMMITTED after a
  concurrent change updates what the app "last saw": the absolute write that
  follows must be relative to the re-read, not to the first read.
- Locking reads thaw does not plan (IN lists, JOINs) keep their lock.
- A keyed locking read that finds no row keeps its gap lock (get-or-create).
- Captures of two schemas' same-named users tables never mix.
"""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from safety.harness import (
    DEADLOCK, DUP_KEY, LOCK_WAIT, Env, check, exec_in, other_freeze, run, run_with_retry, std_books,
    std_setup, wait_blocked_or_done,
)
from safety.models import FreezeLog, User

CHANGE = pytest.mark.parametrize("change", [False, True], ids=["no_change", "concurrent_change"])

REREADS = {
    "keyed": "SELECT id, balance, frozen_balance FROM users WHERE id = 1",
    "in_list": "SELECT id, balance, frozen_balance FROM users WHERE id IN (1, 3) ORDER BY id",
    "join": "SELECT u.id, u.balance, u.frozen_balance, c.message_count FROM users u JOIN conversations c ON c.id = u.id WHERE u.id = 1",
}


@pytest.mark.parametrize("reread", list(REREADS))
def test_read_committed_plain_reread_then_absolute_write(via, subject, direct, reread):
    """READ COMMITTED: unlocked read (frozen 100), a concurrent freeze of 200
    commits, the app re-reads (300 through thaw; direct it still sees 100, the
    other session waits) and writes re-read + 50. The concurrent freeze must
    not be applied twice (thaw's delta is relative to the re-read)."""
    def scenario(env: Env, db: str):
        other = env.concurrent(other_freeze())
        app = env.app()
        app.q("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")

        def txn():
            app.q("SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE")
            other.fire()
            row = app.q(REREADS[reread])[0]
            app.q("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-1', 1, 50)")
            app.q(f"UPDATE users SET frozen_balance = {row[2] + 50} WHERE id = 1")
            app.q("COMMIT")
            return "frozen"
        res = run_with_retry(txn, rec=app.rec, rollback=app.rollback)
        other.join()
        return res

    check(scenario, setup=std_setup(), via=via, subject=subject, direct=direct, concurrent=True, books=std_books)


@CHANGE
def test_in_list_locking_read_keeps_its_lock_sqlalchemy(via, subject, direct, change):
    """SQLAlchemy: select(User).where(User.id.in_([1, 3])).with_for_update(),
    then an ORM absolute write of user 1. thaw does not plan IN-list locking
    reads, so it forwards the lock: the concurrent freeze waits as direct."""
    def scenario(env: Env, db: str):
        other = env.concurrent(other_freeze()) if change else None
        eng = env.sqlalchemy_engine()
        rec = env.recorder("app")

        def txn():
            with Session(eng) as s:
                users = s.scalars(select(User).where(User.id.in_([1, 3])).order_by(User.id).with_for_update()).all()
                rec.note("read", [(u.id, u.balance, u.frozen_balance) for u in users])
                if other is not None:
                    other.fire()
                u1 = users[0]
                s.add(FreezeLog(request_id="app-1", user_id=1, amount=50))
                u1.frozen_balance = u1.frozen_balance + 50
                s.commit()
                return "frozen"
        res = run_with_retry(txn, rec=rec)
        if other is not None:
            other.join()
        return res

    check(scenario, setup=std_setup(), via=via, subject=subject, direct=direct, concurrent=change, books=std_books)


@CHANGE
def test_join_locking_read_keeps_its_lock(via, subject, direct, change):
    def scenario(env: Env, db: str):
        other = env.concurrent(other_freeze()) if change else None
        app = env.app()

        def txn():
            (row,) = app.q("SELECT u.id, u.balance, u.frozen_balance, c.message_count FROM users u"
                           " JOIN conversations c ON c.id = u.id WHERE u.id = 1 FOR UPDATE")
            if other is not None:
                other.fire()
            app.q("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-1', 1, 50)")
            app.q(f"UPDATE users SET frozen_balance = {row[2] + 50} WHERE id = 1")
            app.q(f"UPDATE conversations SET message_count = {row[3] + 1} WHERE id = 1")
            app.q("COMMIT")
            return "frozen"
        res = run_with_retry(txn, rec=app.rec, rollback=app.rollback)
        if other is not None:
            other.join()
        return res

    check(scenario, setup=std_setup(), via=via, subject=subject, direct=direct, concurrent=change, books=std_books)


@CHANGE
def test_two_schemas_same_named_users_table_captures_never_mix(via, subject, direct, change):
    """One transaction reads and writes users 1 in the default schema and in a
    second schema (qualified); every delta must be relative to its own row."""
    def setup(env: Env) -> None:
        std_setup()(env)
        other_db = env.extra_db()
        exec_in(other_db,
                "CREATE TABLE users (id BIGINT PRIMARY KEY, username VARCHAR(64), balance BIGINT NOT NULL DEFAULT 0,"
                " frozen_balance BIGINT NOT NULL DEFAULT 0, updated_at DATETIME NULL)",
                "INSERT INTO users (id, username, balance, frozen_balance) VALUES (1, 'alice-b', 70, 7)")

    def scenario(env: Env, db: str):
        db2 = env.dbs[1]
        other = env.concurrent(other_freeze()) if change else None
        app = env.app()

        def txn():
            (a,) = app.q("SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE")
            (b,) = app.q(f"SELECT id, balance, frozen_balance FROM `{db2}`.users WHERE id = 1 FOR UPDATE")
            if other is not None:
                other.fire()
            app.q(f"UPDATE `{db2}`.users SET frozen_balance = {b[2] + 50} WHERE id = 1")
            app.q("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-1', 1, 50)")
            app.q(f"UPDATE users SET frozen_balance = {a[2] + 50} WHERE id = 1")
            app.q(f"UPDATE `{db2}`.users SET balance = {b[1] - 5} WHERE id = 1")
            app.q("COMMIT")
            return "frozen"
        res = run_with_retry(txn, rec=app.rec, rollback=app.rollback)
        if other is not None:
            other.join()
        return res

    def books(o):
        std_books(o)
        assert o.rows["<db1>.users"] == [(1, "alice-b", 65, 57, None)], o.summary()

    check(scenario, setup=setup, via=via, subject=subject, direct=direct, concurrent=change, books=books)


def test_get_or_create_missing_row_from_two_sessions(via, subject, direct):
    """Both sessions read the missing user 42 FOR UPDATE, then both insert it.
    Direct, the gap locks make one of them a deadlock victim (1213); its retry
    finds the row. Through thaw a missing row must keep its gap lock: the loser
    gets 1213/1205 (then succeeds on retry), never 1062 Duplicate entry."""
    def scenario(env: Env, db: str):
        apps = {"A": env.app("A"), "B": env.app("B")}
        read = {"A": threading.Event(), "B": threading.Event()}
        results, errors = {}, {}
        threads = {}

        def txn(name: str, first: list):
            app = apps[name]
            rows = app.q("SELECT id, username FROM users WHERE id = 42 FOR UPDATE")
            if first:
                first.clear()
                read[name].set()
                if name == "A":
                    read["B"].wait(10)
                else:
                    wait_blocked_or_done(threads["A"], env.dbs)
            if rows:
                app.q("COMMIT")
                return "found"
            app.q("INSERT INTO users (id, username, balance, frozen_balance) VALUES (42, 'new', 0, 0)")
            app.q("COMMIT")
            return "created"

        def main(name: str):
            if name == "B":
                read["A"].wait(10)
            first = [True]
            try:
                results[name] = run_with_retry(lambda: txn(name, first), rec=apps[name].rec,
                                               rollback=apps[name].rollback, codes=(DEADLOCK, LOCK_WAIT))
            except Exception as e:  # noqa: BLE001 - reported by the test
                errors[name] = e
            finally:
                if first:  # never got to the read: release the other session
                    read[name].set()

        for n in ("A", "B"):
            threads[n] = threading.Thread(target=main, args=(n,), daemon=True)
        threads["A"].start()
        threads["B"].start()
        for t in threads.values():
            t.join(30)
        return {"results": sorted(results.values()), "errors": sorted(f"{k}: {v!r}" for k, v in errors.items())}

    ref = run(scenario, std_setup(), direct, label="direct (reference)")
    got = run(scenario, std_setup(), subject, label=f"{via} (subject)", capture_errors=True)
    for o in (ref, got):
        codes = {e[2] for a in o.transcripts["A"] + o.transcripts["B"] for e in a if e[0] == "err"}
        assert DUP_KEY not in codes, f"{o.label}: a session got 1062\n{o.summary()}"
        assert codes <= {DEADLOCK, LOCK_WAIT}, o.summary()
        assert o.result == {"results": ["created", "found"], "errors": []}, o.summary()
    ref_codes = [e[2] for a in ref.transcripts["A"] + ref.transcripts["B"] for e in a if e[0] == "err"]
    assert DEADLOCK in ref_codes, f"harness: direct, the two inserts did not deadlock\n{ref.summary()}"
    assert got.rows == ref.rows, f"{got.summary()}\n{ref.summary()}"
