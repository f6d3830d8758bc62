"""Column classes (spec 4, 5, 8): UNSIGNED guards, CAS columns (named and
unnamed), and exact DECIMAL deltas with the column's own rounding."""
from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from safety.harness import (
    VIOLATION, App, DbError, Env, as_decimal, check, exec_in, run_with_retry, std_books, std_setup,
)
from safety.models import User

CHANGE = pytest.mark.parametrize("change", [False, True], ids=["no_change", "concurrent_change"])

INVARIANT_TRIGGER = (
    # Direct, the database enforces the rule's invariant with the rule's error
    # code; through thaw only thaw's guard can raise it.
    "CREATE TRIGGER users_invariant BEFORE UPDATE ON users FOR EACH ROW BEGIN"
    " IF NEW.frozen_balance > NEW.balance THEN"
    " SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'insufficient balance', MYSQL_ERRNO = 1644; END IF; END"
)


def test_unsigned_balance_columns_freeze_beyond_balance_is_the_rule_error(via, subject, direct):
    """BIGINT UNSIGNED money: the guard `balance - frozen_balance >= 0` of a
    freeze beyond the balance would fail with 1690 (out of range) in MariaDB;
    the app must get the rule's 1644, then the connection works on."""
    def setup(env: Env) -> None:
        exec_in(env.db,
                "CREATE TABLE users (id BIGINT PRIMARY KEY, username VARCHAR(64), balance BIGINT UNSIGNED NOT NULL DEFAULT 0,"
                " frozen_balance BIGINT UNSIGNED NOT NULL DEFAULT 0, updated_at DATETIME NULL)",
                "CREATE TABLE freeze_logs (request_id VARCHAR(64) PRIMARY KEY, user_id BIGINT NOT NULL, amount BIGINT NOT NULL)",
                "INSERT INTO users (id, username, balance, frozen_balance) VALUES (1, 'alice', 1000, 100), (2, 'bob', 50, 0)",
                *([INVARIANT_TRIGGER] if env.via == "direct" else []))

    def scenario(env: Env, db: str):
        app = env.app()

        def freeze(uid: int, rid: str, amount: int):
            def txn():
                (row,) = app.q(f"SELECT id, balance, frozen_balance FROM users WHERE id = {uid} FOR UPDATE")
                app.q(f"INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('{rid}', {uid}, {amount})")
                e = app.try_q(f"UPDATE users SET frozen_balance = {row[2] + amount} WHERE id = {uid}")
                if not isinstance(e, DbError):
                    # With defer_writes the violation is told at COMMIT (docs/rules.md).
                    e = app.try_q("COMMIT")
                    if not isinstance(e, DbError):
                        return "frozen"
                if e.code != VIOLATION:
                    raise e
                app.rec.note("message says insufficient balance", "insufficient balance" in e.msg)
                app.q("ROLLBACK")
                return "insufficient"
            return run_with_retry(txn, rec=app.rec, rollback=app.rollback)

        return [freeze(2, "a", 80), freeze(2, "b", 30), freeze(1, "c", -60), freeze(1, "d", 900), freeze(1, "e", 61)]

    o = check(scenario, setup=setup, via=via, subject=subject, direct=direct, books=std_books)
    assert o.result == ("insufficient", "frozen", "frozen", "frozen", "insufficient"), o.summary()


@CHANGE
def test_cas_conflict_on_username_sqlalchemy(via, subject, direct, change):
    """The ORM reads user 1 FOR UPDATE, a concurrent rename commits, the ORM
    writes username (a CAS column) absolutely: thaw's `AND username = 'alice'`
    matches nothing -> 1213; the retry reads the new name and succeeds."""
    def scenario(env: Env, db: str):
        def rename(app: App):
            app.q("UPDATE users SET username = 'alice.renamed' WHERE id = 1")
            app.q("COMMIT")
        other = env.concurrent(rename) if change else None
        eng = env.sqlalchemy_engine()
        rec = env.recorder("app")

        def txn():
            with Session(eng) as s:
                u = s.scalars(select(User).where(User.id == 1).with_for_update()).one()
                rec.note("read", u.username)
                if other is not None:
                    other.fire()
                u.username = u.username + "-verified"
                s.commit()
                return "verified"
        res = run_with_retry(txn, rec=rec)
        if other is not None:
            other.join()
        return res

    check(scenario, setup=std_setup(), via=via, subject=subject, direct=direct, concurrent=change, books=std_books,
          expect_retry=change)


DECIMAL_WRITES = ["10.005", "10.005", "20.004", "0.015", "0.014", "5.555", "'7.125'", "7.1249", "100"]


@CHANGE
def test_decimal_rounding_across_repeated_absolute_writes(via, subject, direct, change):
    """DECIMAL(18,2): absolute writes with a third decimal are rounded by the
    column. thaw's deltas must be exact and relative to the value as stored
    (10.01, not 10.005), or e.g. 20.004 would land on 20.01 instead of 20.00."""
    def setup(env: Env) -> None:
        exec_in(env.db,
                "CREATE TABLE users (id BIGINT PRIMARY KEY, username VARCHAR(64), balance DECIMAL(18,2) NOT NULL DEFAULT 0,"
                " frozen_balance DECIMAL(18,2) NOT NULL DEFAULT 0, updated_at DATETIME NULL)",
                "INSERT INTO users (id, username, balance, frozen_balance) VALUES (1, 'alice', 1000.00, 100.00)")

    def scenario(env: Env, db: str):
        def bump(app: App):
            app.q("UPDATE users SET frozen_balance = frozen_balance + 1.00 WHERE id = 1")
            app.q("COMMIT")
        other = env.concurrent(bump) if change else None
        app = env.app()

        def txn():
            app.q("SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE")
            if other is not None:
                other.fire()
            for v in DECIMAL_WRITES:
                app.q(f"UPDATE users SET frozen_balance = {v} WHERE id = 1")
            app.q("COMMIT")
            return "written"
        res = run_with_retry(txn, rec=app.rec, rollback=app.rollback)
        if other is not None:
            other.join()
        return res

    def books(o):
        (row,) = o.rows["<db0>.users"]
        # the last write is 100: 100.00, plus the concurrent 1.00 if it came after
        assert as_decimal(row[3]) in ({as_decimal("100.00"), as_decimal("101.00")} if change else {as_decimal("100.00")}), o.summary()

    check(scenario, setup=setup, via=via, subject=subject, direct=direct, concurrent=change, books=books)


def test_last_charged_marker_column_two_workers_exactly_one_charges(via, subject, direct):
    """users.charged_month is not named by the shipped rule, so it is CAS. Two
    workers run the monthly charge for user 1: read FOR UPDATE, skip when
    charged_month is this month, else log a charge and write balance and the
    marker. Exactly one of them may charge."""
    def setup(env: Env) -> None:
        exec_in(env.db,
                "CREATE TABLE users (id BIGINT PRIMARY KEY, username VARCHAR(64), balance BIGINT NOT NULL DEFAULT 0,"
                " frozen_balance BIGINT NOT NULL DEFAULT 0, updated_at DATETIME NULL, charged_month VARCHAR(7) NULL)",
                "CREATE TABLE charges (worker VARCHAR(16) PRIMARY KEY, user_id BIGINT NOT NULL, amount BIGINT NOT NULL)",
                "INSERT INTO users (id, username, balance, frozen_balance) VALUES (1, 'alice', 1000, 100)")

    def worker(name: str, hook=None):
        def fn(app: App):
            def txn():
                (row,) = app.q("SELECT id, balance, frozen_balance, charged_month FROM users WHERE id = 1 FOR UPDATE")
                if hook is not None:
                    hook()
                if row[3] == "2024-05":
                    app.q("COMMIT")
                    return "skipped"
                app.q(f"INSERT INTO charges (worker, user_id, amount) VALUES ('{name}', 1, 30)")
                app.q(f"UPDATE users SET balance = {row[1] - 30}, charged_month = '2024-05' WHERE id = 1")
                app.q("COMMIT")
                return "charged"
            return run_with_retry(txn, rec=app.rec, rollback=app.rollback)
        return fn

    def scenario(env: Env, db: str):
        other = env.concurrent(worker("w2"), through=True)
        res = worker("w1", hook=other.fire)(env.app())
        other.join()
        return res

    def books(o):
        charges = o.rows["<db0>.charges"]
        (user,) = o.rows["<db0>.users"]
        assert len(charges) == 1 and user[2] == 970 and user[5] == "2024-05", o.summary()
        results = sorted([o.result, o.final("other")[-1][1]])
        assert results == ["charged", "skipped"], o.summary()

    check(scenario, setup=setup, via=via, subject=subject, direct=direct, concurrent=True, books=books)
