"""Adversarial cases: sequences an ordinary or confused app sends whose
outcome through thaw differs from direct (money, invariants, a transaction
half committed, or a 1213 that no retry can pass).

Each case runs direct (the reference) and through thaw with the shipped
rules/billing.yaml and compares, as the rest of the safety suite does."""
from __future__ import annotations

import pytest

from safety.harness import (
    DEADLOCK, App, Endpoint, Env, check, other_freeze, run_with_retry, std_books, std_setup,
)

USER_ROW = "SELECT id, username, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE"


# ------------------------------------------------ re-reads that show a change
@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "READ COMMITTED"])
def test_reread_shows_concurrent_change_app_keeps_its_own_value(via, subject, direct, isolation):
    """Freeze 50, re-read the row (an audit SELECT by key, which thaw lets
    through and takes as the new last-seen value), then freeze 10 more computed
    from the app's own in-memory value (100 + 50 + 10).

    Direct the concurrent freeze of 200 waits for the app's lock: 360.
    Through thaw the re-read shows 350 (REPEATABLE READ: the app's delta on top
    of the concurrent freeze; READ COMMITTED: the committed freeze), thaw files
    it as last seen, and the second write becomes frozen - 190 (RR) / the first
    one frozen - 150 (RC): the concurrent freeze of 200 is wiped out."""
    def scenario(env: Env, db: str):
        other = env.concurrent(other_freeze())
        app = env.app()
        app.q(f"SET SESSION TRANSACTION ISOLATION LEVEL {isolation}")

        def txn():
            (row,) = app.q(USER_ROW)
            other.fire()
            frozen = row[3]
            if isolation == "READ COMMITTED":
                app.q("SELECT id, frozen_balance FROM users WHERE id = 1")  # e.g. an audit/echo read
            app.q("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-1', 1, 50)")
            frozen += 50
            app.q(f"UPDATE users SET frozen_balance = {frozen} WHERE id = 1")
            app.q("SELECT id, frozen_balance FROM users WHERE id = 1")  # echo read after the write
            app.q("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-2', 1, 10)")
            frozen += 10
            app.q(f"UPDATE users SET frozen_balance = {frozen} WHERE id = 1")
            app.q("COMMIT")
            return "frozen"
        res = run_with_retry(txn, rec=app.rec, rollback=app.rollback)
        other.join()
        return res

    check(scenario, setup=std_setup(), via=via, subject=subject, direct=direct, concurrent=True, books=std_books)


# ------------------------------------------- captures that never match again
def _single_session(body):
    def scenario(env: Env, db: str):
        app = env.app()

        def txn():
            body(app)
            app.q("COMMIT")
            return "done"
        return run_with_retry(txn, rec=app.rec, rollback=app.rollback)
    return scenario


def test_last_writer_wins_write_then_unknown_statement(via, subject, direct):
    """ORM-style: SELECT all columns FOR UPDATE, UPDATE balance columns and
    updated_at (last_writer_wins), then a statement thaw must validate (here a
    total over the table). thaw never updates the captured updated_at, so the
    re-lock always differs: 1213 on every attempt, with no concurrent change."""
    def body(app: App):
        app.q("SELECT id, username, balance, frozen_balance, updated_at FROM users WHERE id = 1 FOR UPDATE")
        app.q("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-1', 1, 50)")
        app.q("UPDATE users SET frozen_balance = 150, updated_at = '2024-05-01 00:00:00' WHERE id = 1")
        app.q("SELECT SUM(frozen_balance) FROM users")
    check(_single_session(body), setup=std_setup(), via=via, subject=subject, direct=direct, books=std_books)


def test_integer_balance_written_as_decimal_text_then_unknown_statement(via, subject, direct):
    """The app computes with Decimal and pymysql renders Decimal('150.00') as
    150.00 into the BIGINT column. The server stores 150; thaw files "150.00"
    as the last-seen value, and every re-lock compares "150" with it: 1213
    forever."""
    def body(app: App):
        app.q(USER_ROW)
        app.q("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-1', 1, 50)")
        app.q("UPDATE users SET frozen_balance = 150.00 WHERE id = 1")
        app.q("SELECT SUM(frozen_balance) FROM users")
    check(_single_session(body), setup=std_setup(), via=via, subject=subject, direct=direct, books=std_books)


def test_integer_balance_written_with_fraction_twice(via, subject, direct):
    """A float amount into a BIGINT balance: the server rounds 150.5 to 151;
    thaw files 150.5. The next absolute write (200) becomes frozen + 49.5 =
    200.5, stored 201: one unit of frozen money out of nowhere."""
    def body(app: App):
        app.q(USER_ROW)
        app.q("UPDATE users SET frozen_balance = 150.5 WHERE id = 1")
        app.q("UPDATE users SET frozen_balance = 200 WHERE id = 1")
    check(_single_session(body), setup=std_setup(), via=via, subject=subject, direct=direct)


@pytest.mark.parametrize("before", ["nothing", "a_write"])
def test_savepoint_rollback_of_a_row_first_read_inside_it(via, subject, direct, before):
    """Django nested atomic(): the inner block (a savepoint) reads the user
    FOR UPDATE and freezes 50, then fails and is rolled back to the savepoint;
    the outer block then freezes 10 (110).

    - nothing before the SAVEPOINT (Django: SET autocommit=0 then the nested
      atomic's SAVEPOINT): the server reports no transaction yet, thaw ends
      its transaction state and forgets the savepoint; ROLLBACK TO then leaves
      the capture at 150 and the outer write becomes frozen - 40 = 60.
    - a write before it: thaw keeps the rolled-back 150 as what the app saw,
      the row holds 100, and the re-lock before the outer write differs on
      every attempt (1213 forever)."""
    def body(app: App):
        if before == "a_write":
            app.q("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-0', 2, 0)")
        app.q("SAVEPOINT s1")
        app.q(USER_ROW)
        app.q("UPDATE users SET frozen_balance = 150 WHERE id = 1")
        app.q("ROLLBACK TO SAVEPOINT s1")
        app.q("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-1', 1, 10)")
        app.q("UPDATE users SET frozen_balance = 110 WHERE id = 1")
    check(_single_session(body), setup=std_setup(), via=via, subject=subject, direct=direct, books=std_books)


# ---------------------------------------------------- the aborted transaction
def test_deadlock_retry_that_begins_again_without_rollback(via, subject, direct):
    """After a 1213 the server has already rolled the transaction back, so a
    common retry loop just starts over with BEGIN. Direct there is no 1213 at
    all here (the other session waits). Through thaw the validation refuses
    the first attempt, and then every BEGIN of every retry is answered 1213
    ("this transaction was rolled back") because no ROLLBACK came: the app
    can never complete."""
    def scenario(env: Env, db: str):
        other = env.concurrent(other_freeze())
        app = env.app()

        def txn():
            app.q("BEGIN")
            (row,) = app.q(USER_ROW)
            other.fire()
            app.q("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-1', 1, 50)")
            # keyed by username: thaw cannot plan it, so it validates first
            app.q(f"UPDATE users SET frozen_balance = {row[3] + 50} WHERE username = 'alice'")
            app.q("COMMIT")
            return "frozen"
        res = run_with_retry(txn, rec=app.rec, rollback=None)
        other.join()
        return res

    check(scenario, setup=std_setup(), via=via, subject=subject, direct=direct, concurrent=True, books=std_books)


# ------------------------------------------- what the row lock also protected
def test_idempotent_charge_checked_under_the_user_lock(via, subject, direct):
    """The canonical use of SELECT ... FOR UPDATE: serialize a business
    operation on the user. Monthly fee: lock the user, check the charges table
    (no unique key: the lock is what makes it once-only), insert the charge,
    write the balance. A second worker runs the same job at the same time.

    Direct the worker waits for the app's lock, then sees the charge and skips:
    one charge. Through thaw the app's lock is gone: the worker charges, the
    app (REPEATABLE READ snapshot from its first read) still sees no charge and
    charges again; its absolute balance write becomes a delta: charged twice."""
    charges = "CREATE TABLE charges (id INT AUTO_INCREMENT PRIMARY KEY, user_id BIGINT NOT NULL, month CHAR(7) NOT NULL)"

    def charge(app: App, fire=None):
        (row,) = app.q("SELECT id, username, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE")
        if fire is not None:
            fire()
        ((n,),) = app.q("SELECT COUNT(*) FROM charges WHERE user_id = 1 AND month = '2024-05'")
        if n:
            app.q("COMMIT")
            return "already charged"
        app.q("INSERT INTO charges (user_id, month) VALUES (1, '2024-05')")
        app.q(f"UPDATE users SET balance = {row[2] - 30} WHERE id = 1")
        app.q("COMMIT")
        return "charged"

    def scenario(env: Env, db: str):
        other = env.concurrent(lambda o: charge(o))
        app = env.app()
        res = run_with_retry(lambda: charge(app, other.fire), rec=app.rec, rollback=app.rollback)
        other.join()
        return res

    def books(o):
        users = {u[0]: u for u in o.rows["<db0>.users"]}
        n = len(o.rows["<db0>.charges"])
        assert n == 1, f"{o.label}: {n} charges for one month\n{o.summary()}"
        assert users[1][2] == 1000 - 30 * n, o.summary()

    check(scenario, setup=std_setup(charges), via=via, subject=subject, direct=direct, concurrent=True, books=books)


# The shipped billing rules say `unlock_try_locks: true` for users (the
# legacy app uses SKIP LOCKED with a plain-read fallback: a contention
# escape). A rule without it must keep a try-lock's meaning.
CLAIM_RULES = """
    tables:
      - table: users
        key: id
        invariants: [balance - frozen_balance >= 0, frozen_balance >= 0]
        balance_columns: [balance, frozen_balance]
        last_writer_wins: [updated_at]
"""


@pytest.mark.parametrize("clause", ["FOR UPDATE SKIP LOCKED", "FOR UPDATE NOWAIT"])
def test_skip_locked_or_nowait_read_is_unlocked(via, direct, clause, request):
    """A billing worker claims a user with SKIP LOCKED / NOWAIT: if another
    worker holds the user, it moves on. Direct it gets no row (SKIP LOCKED) or
    an immediate lock error (NOWAIT) and does not charge. thaw removes the
    whole clause, the read returns the row, and the worker charges a user that
    the other worker is charging at the same moment: two freezes."""
    import threading

    subject = direct
    if via == "thaw":
        t = request.getfixturevalue("make_thaw")(CLAIM_RULES)
        subject = Endpoint("thaw", t.host, t.port)

    from safety.harness import error_code

    def scenario(env: Env, db: str):
        holder = env(direct=True)
        locked = threading.Event()

        def hold():
            cur = holder.cursor()
            cur.execute("SELECT id FROM users WHERE id = 1 FOR UPDATE")
            locked.set()
            import time
            time.sleep(1.0)
            cur.execute("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('other-1', 1, 50)")
            cur.execute("UPDATE users SET frozen_balance = frozen_balance + 50 WHERE id = 1")
            holder.commit()
        t = threading.Thread(target=hold, daemon=True)
        t.start()
        locked.wait(5)
        app = env.app()
        try:
            rows = app.q(f"SELECT id, username, balance, frozen_balance FROM users WHERE id = 1 {clause}")
        except Exception as e:  # noqa: BLE001 - NOWAIT: the lock is busy, move on
            app.rollback()
            t.join(10)
            return ("busy", error_code(e))
        if not rows:
            app.q("COMMIT")
            t.join(10)
            return "skipped"
        (row,) = rows
        app.q("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-1', 1, 50)")
        app.q(f"UPDATE users SET frozen_balance = {row[3] + 50} WHERE id = 1")
        app.q("COMMIT")
        t.join(10)
        return "frozen"

    check(scenario, setup=std_setup(), via=via, subject=subject, direct=direct, books=std_books)


def test_xa_transaction_refused_validation_is_never_rolled_back(via, subject, direct):
    """An XA branch (XA START ... XA END, XA PREPARE, XA COMMIT). When
    validation fails thaw sends a plain ROLLBACK, which the server refuses in
    an ACTIVE XA branch (1399): the branch stays open with its writes and the
    re-lock's row lock, while the app is told it was rolled back. The app's
    XA-correct cleanup (XA END, XA ROLLBACK) is then answered 1213 by the
    aborted state, and so is XA START of every retry: the app never completes.
    Direct the other session simply waits for the app's lock."""
    def scenario(env: Env, db: str):
        other = env.concurrent(other_freeze())
        app = env.app()
        xid = "'thaw-xa-1'"

        def cleanup():
            app.try_q(f"XA END {xid}")
            app.try_q(f"XA ROLLBACK {xid}")

        def txn():
            app.q(f"XA START {xid}")
            (row,) = app.q(USER_ROW)
            other.fire()
            app.q("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-1', 1, 50)")
            app.q(f"UPDATE users SET frozen_balance = {row[3] + 50} WHERE username = 'alice'")
            app.q(f"XA END {xid}")
            app.q(f"XA PREPARE {xid}")
            app.q(f"XA COMMIT {xid}")
            return "frozen"
        app.conn.autocommit(True)
        res = run_with_retry(txn, rec=app.rec, rollback=cleanup)
        other.join()
        return res

    check(scenario, setup=std_setup(), via=via, subject=subject, direct=direct, concurrent=True, books=std_books)
