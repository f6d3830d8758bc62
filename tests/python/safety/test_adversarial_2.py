"""Adversarial cases, second review: sequences an ordinary or confused app
sends whose outcome through thaw differs from direct (money, invariants, a
transaction half committed, or a 1213 that no retry can pass).

Each case runs direct (the reference) and through thaw with the shipped
rules/billing.yaml and compares, as the rest of the safety suite does."""
from __future__ import annotations

import time

from safety.harness import App, Env, check, run_with_retry, std_books, std_setup

USER_ROW = "SELECT id, username, balance, frozen_balance FROM users WHERE id = {uid} FOR UPDATE"
CHARGES = "CREATE TABLE charges (id INT AUTO_INCREMENT PRIMARY KEY, who VARCHAR(16) NOT NULL, user_id BIGINT NOT NULL, amount BIGINT NOT NULL)"
JOBS = ["CREATE TABLE jobs (id INT PRIMARY KEY, n INT NOT NULL)", "INSERT INTO jobs VALUES (1, 0)"]


def rowcount(app: App) -> int:
    """Rows matched/affected by the app's last statement (as pymysql reports it)."""
    return app.rec.attempts[-1][-1][2]


# ------------------------------------------ the app's own WHERE condition
def test_guarded_update_with_the_apps_own_condition_reports_zero_rows(via, subject, direct):
    """A charge written defensively: the app read the user FOR UPDATE, checked
    the available balance in Python and writes its absolute balance with the
    same check in SQL (`AND balance - frozen_balance >= 50`). A concurrent
    charge of 880 (its own conditional UPDATE) runs meanwhile.

    Direct the concurrent charge waits for the app's lock and is then declined
    (or, first, the app sees too little and declines). Through thaw the
    concurrent charge commits; the app's delta UPDATE matches no row because
    the app's own condition is now false, and thaw's exists check (the app's
    WHERE, which includes that condition) finds "no row" and passes
    `0 rows` to the app instead of the violation/1213. The app commits its
    charge record without the debit: 50 charged that were never taken."""
    def other(o: App):
        o.q("UPDATE users SET balance = balance - 880 WHERE id = 1 AND balance - frozen_balance >= 880")
        if rowcount(o) == 0:
            o.q("ROLLBACK")
            return "declined"
        o.q("INSERT INTO charges (who, user_id, amount) VALUES ('other', 1, 880)")
        o.q("COMMIT")
        return "charged"

    def scenario(env: Env, db: str):
        oth = env.concurrent(other)
        app = env.app()

        def txn():
            (row,) = app.q(USER_ROW.format(uid=1))
            oth.fire()
            _id, _name, bal, frozen = row
            if bal - frozen < 50:
                app.q("ROLLBACK")
                return "insufficient"
            app.q("INSERT INTO charges (who, user_id, amount) VALUES ('app', 1, 50)")
            app.q(f"UPDATE users SET balance = {bal - 50} WHERE id = 1 AND balance - frozen_balance >= 50")
            app.q("COMMIT")
            return "charged"
        res = run_with_retry(txn, rec=app.rec, rollback=app.rollback)
        oth.join()
        return res

    def books(o):
        users = {u[0]: u for u in o.rows["<db0>.users"]}
        charged = sum(c[3] for c in o.rows["<db0>.charges"] if c[2] == 1)
        assert users[1][2] == 1000 - charged, f"{o.label}: balance {users[1][2]}, charged {charged}\n{o.summary()}"
        assert users[1][2] - users[1][3] >= 0, o.summary()

    check(scenario, setup=std_setup(CHARGES), via=via, subject=subject, direct=direct, concurrent=True, books=books)


# ------------------------------------------------- a row deleted meanwhile
def test_guarded_update_of_a_row_deleted_meanwhile_commits_an_orphan_freeze(via, subject, direct):
    """Freeze 50 for carol while an admin closes her account (deletes the user
    and her freeze logs). Direct the closure waits for the app's lock and then
    removes the freeze with the account (or runs first and the app finds no
    user). Through thaw the closure commits between the app's read and its
    write; the UPDATE matches no row, the exists check finds none and thaw
    passes `0 rows` on, although the app was shown the row: the app commits a
    freeze log of 50 for a user that no longer exists."""
    def close_account(o: App):
        o.q("DELETE FROM freeze_logs WHERE user_id = 3")
        o.q("DELETE FROM users WHERE id = 3")
        o.q("COMMIT")
        return "closed"

    def scenario(env: Env, db: str):
        oth = env.concurrent(close_account)
        app = env.app()

        def txn():
            rows = app.q(USER_ROW.format(uid=3))
            oth.fire()
            if not rows:
                app.q("ROLLBACK")
                return "no such user"
            (row,) = rows
            app.q("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-1', 3, 50)")
            app.q(f"UPDATE users SET frozen_balance = {row[3] + 50} WHERE id = 3")
            app.q("COMMIT")
            return "frozen"
        res = run_with_retry(txn, rec=app.rec, rollback=app.rollback)
        oth.join()
        return res

    def books(o):
        std_books(o)
        users = {u[0] for u in o.rows["<db0>.users"]}
        orphans = [r for r in o.rows["<db0>.freeze_logs"] if r[1] not in users]
        assert not orphans, f"{o.label}: freeze logs of a user that does not exist: {orphans}\n{o.summary()}"

    check(scenario, setup=std_setup(), via=via, subject=subject, direct=direct, concurrent=True, books=books)


# ------------------------------------------- replay after a real deadlock
def test_deadlock_replay_reruns_a_validated_absolute_write_without_its_lock(via, subject, direct):
    """The app reads the user FOR UPDATE and writes an absolute frozen balance
    thaw cannot key (by username: validated first, so thaw re-locks the row
    and forwards it). A concurrent freeze holds a jobs row and waits for the
    user; the app then bumps that jobs row: a real deadlock, the app (the
    lighter transaction) is the victim.

    Direct the app gets 1213, retries, reads the committed freeze and writes
    350. Through thaw the 1213 is hidden and the transaction is replayed: the
    replayed read is the unlocked one (a snapshot: the other session's +200 is
    not committed yet, so the digest matches), and the replayed absolute write
    then waits for the other session and overwrites its committed +200 with
    150. thaw's re-lock is not part of the replay. 200 frozen lost."""
    def other(o: App):
        o.q("UPDATE jobs SET n = n + 1 WHERE id = 1")
        o.q("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('other-1', 1, 200)")
        o.q("UPDATE users SET frozen_balance = frozen_balance + 200 WHERE id = 1")  # waits for the app's lock
        time.sleep(0.6)  # some work before the commit
        o.q("COMMIT")
        return "frozen"

    def scenario(env: Env, db: str):
        oth = env.concurrent(other)
        app = env.app()

        def txn():
            (row,) = app.q(USER_ROW.format(uid=1))
            app.q(f"UPDATE users SET frozen_balance = {row[3] + 50} WHERE username = 'alice'")
            oth.fire()
            app.q("UPDATE jobs SET n = n + 1 WHERE id = 1")
            app.q("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-1', 1, 50)")
            app.q("COMMIT")
            return "frozen"
        res = run_with_retry(txn, rec=app.rec, rollback=app.rollback)
        oth.join()
        return res

    check(scenario, setup=std_setup(*JOBS), via=via, subject=subject, direct=direct, concurrent=True, books=std_books)
