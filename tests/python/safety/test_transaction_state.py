"""One transaction state (spec 6, 7): savepoints restore captures, an
implicit commit ends the window and bounds transaction replay, and a
violation the app catches leaves the transaction aborted until it ends."""
from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from conftest import admin_exec
from safety.deferral import DEFER
from safety.harness import (
    STD_SCHEMA, App, DbError, Env, check, exec_in, other_freeze, run_with_retry, std_books, std_setup,
)
from safety.models import FreezeLog, User

CHANGE = pytest.mark.parametrize("change", [False, True], ids=["no_change", "concurrent_change"])


@CHANGE
@pytest.mark.parametrize("end_savepoint", ["ROLLBACK TO SAVEPOINT", "RELEASE SAVEPOINT"], ids=["rollback_to", "release"])
def test_savepoint_then_absolute_write(via, subject, direct, change, end_savepoint):
    """read (100) -> SAVEPOINT -> write 150 -> ROLLBACK TO (the row is 100
    again, and so is what the app last saw) or RELEASE (150 stays) -> the app
    writes what it now believes + 30. A stale capture of 150 after ROLLBACK TO
    would make thaw's delta -20 instead of +30."""
    def scenario(env: Env, db: str):
        other = env.concurrent(other_freeze()) if change else None
        app = env.app()

        def txn():
            (row,) = app.q("SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE")
            if other is not None:
                other.fire()
            app.q("SAVEPOINT s1")
            app.q(f"UPDATE users SET frozen_balance = {row[2] + 50} WHERE id = 1")
            app.q(f"{end_savepoint} s1")
            believed = row[2] + (50 if end_savepoint.startswith("RELEASE") else 0)
            logged = 30 + (50 if end_savepoint.startswith("RELEASE") else 0)
            app.q(f"INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-1', 1, {logged})")
            app.q(f"UPDATE users SET frozen_balance = {believed + 30} WHERE id = 1")
            app.q("COMMIT")
            return "frozen"
        res = run_with_retry(txn, rec=app.rec, rollback=app.rollback)
        if other is not None:
            other.join()
        return res

    check(scenario, setup=std_setup(), via=via, subject=subject, direct=direct, concurrent=change, books=std_books)


@CHANGE
def test_savepoint_rollback_then_absolute_write_sqlalchemy(via, subject, direct, change):
    """SQLAlchemy begin_nested(): the ORM flushes a freeze inside the
    savepoint, rolls it back (the object is expired and reloaded by a plain
    SELECT), then freezes 30 with an absolute ORM write."""
    def scenario(env: Env, db: str):
        other = env.concurrent(other_freeze()) if change else None
        eng = env.sqlalchemy_engine()
        rec = env.recorder("app")

        def txn():
            with Session(eng) as s:
                u = s.scalars(select(User).where(User.id == 1).with_for_update()).one()
                rec.note("read", (u.balance, u.frozen_balance))
                if other is not None:
                    other.fire()
                sp = s.begin_nested()
                u.frozen_balance = u.frozen_balance + 50
                s.flush()
                sp.rollback()
                rec.note("after rollback to savepoint", u.frozen_balance)
                s.add(FreezeLog(request_id="app-1", user_id=1, amount=30))
                u.frozen_balance = u.frozen_balance + 30
                s.commit()
                return "frozen"
        res = run_with_retry(txn, rec=rec)
        if other is not None:
            other.join()
        return res

    check(scenario, setup=std_setup(), via=via, subject=subject, direct=direct, concurrent=True if change else False,
          books=std_books)


def test_begin_inside_transaction_then_deadlock_replay_stays_after_the_implicit_commit(via, subject, direct):
    """Unit 1 (unlocked read of user 3, a freeze of user 1, an audit row) is
    committed implicitly by the BEGIN that opens unit 2. Unit 2 then becomes
    a deadlock victim. The app retries unit 2 only (it knows unit 1 is
    committed); thaw may hide the 1213 by replaying, but only unit 2: a replay
    that re-ran unit 1 would freeze twice."""
    setup = std_setup(
        "CREATE TABLE locks (id INT PRIMARY KEY, v INT NOT NULL)",
        "INSERT INTO locks VALUES (1, 0), (2, 0)",
        "CREATE TABLE scratch (id INT PRIMARY KEY)",
        "CREATE TABLE audit (note VARCHAR(32) NOT NULL)",  # no key: a replayed insert answers the same
    )

    def scenario(env: Env, db: str):
        def heavy_crossing(app: App):
            # many rows changed: InnoDB picks the app as the deadlock victim
            app.q("INSERT INTO scratch (id) VALUES " + ", ".join(f"({i})" for i in range(1, 31)))
            app.q("UPDATE locks SET v = v + 100 WHERE id = 2")
            app.q("UPDATE locks SET v = v + 100 WHERE id = 1")
            app.q("COMMIT")
            return "done"
        other = env.concurrent(heavy_crossing)
        app = env.app()

        def unit1():
            app.q("BEGIN")
            app.q("SELECT id, balance, frozen_balance FROM users WHERE id = 3 FOR UPDATE")
            app.q("INSERT INTO audit (note) VALUES ('unit 1')")
            app.q("UPDATE users SET frozen_balance = frozen_balance + 50 WHERE id = 1")
            return "unit 1"

        def unit2():
            app.q("BEGIN")  # implicitly commits unit 1 on the first attempt
            app.q("UPDATE locks SET v = v + 1 WHERE id = 1")
            other.fire()
            app.q("UPDATE locks SET v = v + 1 WHERE id = 2")
            app.q("COMMIT")
            return "unit 2"

        r1 = run_with_retry(unit1, rec=app.rec, rollback=app.rollback)
        r2 = run_with_retry(unit2, rec=app.rec, rollback=app.rollback)
        other.join()
        return [r1, r2]

    def books(o):
        assert o.rows["<db0>.audit"] == [("unit 1",)], o.summary()
        frozen = {u[0]: u[3] for u in o.rows["<db0>.users"]}
        assert frozen == {1: 150, 2: 0, 3: 0}, o.summary()
        assert o.rows["<db0>.locks"] == [(1, 101), (2, 101)], o.summary()

    check(scenario, setup=setup, via=via, subject=subject, direct=direct, concurrent=True, books=books)
# ----------------------------------------------------------------- violation
def _violation_setup(env: Env) -> None:
    extra = []
    if env.via == "direct":
        # Direct, the database itself enforces the rule's invariant with the
        # same error code (statement-level, as a trigger does).
        extra.append(
            "CREATE TRIGGER users_invariant BEFORE UPDATE ON users FOR EACH ROW BEGIN"
            " IF NEW.frozen_balance > NEW.balance OR NEW.frozen_balance < 0 THEN"
            " SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'insufficient balance', MYSQL_ERRNO = 1644; END IF; END"
        )
    exec_in(env.db, *STD_SCHEMA, *extra)


@pytest.mark.parametrize("end", ["COMMIT", "ROLLBACK"])
def test_violation_caught_by_the_app_aborts_the_whole_transaction(via, subject, direct, end, db_name):
    """The app freezes user 1 (fine), then user 2 beyond its balance, catches
    the 1644 and carries on. Through thaw the violation rolled the whole
    transaction back: every later statement fails with 1213 saying so, COMMIT
    fails too, and nothing of the transaction (the freeze of user 1 included)
    is committed; ROLLBACK is answered OK. After that the connection works."""
    env = Env(subject, db_name)
    try:
        _violation_setup(env)
        app = env.app()
        app.q("SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE")
        app.q("INSERT INTO freeze_logs VALUES ('app-1', 1, 50)")
        app.q("UPDATE users SET frozen_balance = 150 WHERE id = 1")
        app.q("SELECT id, balance, frozen_balance FROM users WHERE id = 2 FOR UPDATE")
        app.q("INSERT INTO freeze_logs VALUES ('app-2', 2, 80)")
        e = app.try_q("UPDATE users SET frozen_balance = 80 WHERE id = 2")
        later = [
            app.try_q("INSERT INTO freeze_logs VALUES ('app-3', 3, 10)"),
            app.try_q("UPDATE users SET frozen_balance = 10 WHERE id = 3"),
            app.try_q("SELECT 1"),
        ]
        if DEFER and via == "thaw":
            # defer_writes: the write of user 2 is held, and its violation is
            # told to the first statement that makes thaw send it (the INSERT
            # of another table does not; the write of user 3 does). From there
            # on it is the case below, one statement later.
            assert not isinstance(e, DbError) and not isinstance(later[0], DbError), app.rec.attempts
            e = later.pop(1)
            later[0] = app.try_q("INSERT INTO freeze_logs VALUES ('app-4', 3, 10)")
        assert isinstance(e, DbError) and e.code == 1644 and "insufficient balance" in e.msg, app.rec.attempts
        ended = app.try_q(end)
        after = app.try_q("SELECT id, frozen_balance FROM users ORDER BY id")
        app.try_q("COMMIT")
        state = admin_exec(f"SELECT id, frozen_balance FROM `{db_name}`.users ORDER BY id")
        logs = admin_exec(f"SELECT request_id FROM `{db_name}`.freeze_logs ORDER BY 1")
        if via == "direct":
            # the reference semantics of a statement-level error: the app's
            # later statements run and COMMIT keeps them.
            assert not any(isinstance(x, DbError) for x in later), app.rec.attempts
            assert not isinstance(ended, DbError)
            if end == "COMMIT":
                assert state == ((1, 150), (2, 0), (3, 10)) and logs == (("app-1",), ("app-2",), ("app-3",))
            else:
                assert state == ((1, 100), (2, 0), (3, 0)) and logs == ()
            return
        for x in later:
            assert isinstance(x, DbError) and x.code == 1213, app.rec.attempts
            assert "rolled back" in x.msg.lower(), x.msg
        if end == "COMMIT":
            assert isinstance(ended, DbError) and ended.code == 1213, app.rec.attempts
        else:
            assert not isinstance(ended, DbError), app.rec.attempts
        assert state == ((1, 100), (2, 0), (3, 0)), state
        assert logs == (), logs
        assert not isinstance(after, DbError) and after == ((1, 100), (2, 0), (3, 0)), app.rec.attempts
    finally:
        env.close()
