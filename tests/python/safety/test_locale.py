"""A session whose `lc_messages` is not English.

MariaDB translates the info string of an UPDATE's OK ("Rows matched: 0
Changed: 0  Warnings: 0" is "Datensätze gefunden: 0  Geändert: 0
Warnungen: 0" under de_DE). Without CLIENT_FOUND_ROWS the affected rows
count only changed rows, and thaw reads rows *matched* from that string
(session/query.rs `rows_matched`) to tell a guard that failed from an
UPDATE that changed nothing. This case needs thaw: the overdraft happens
only once the lock is gone (direct, the other session would wait)."""
from __future__ import annotations

import pytest

from conftest import admin_connect
from safety.harness import VIOLATION, DbError, Env, std_setup
from safety.harness import run as run_case


def overdraft(env: Env, db: str):
    """The app reads alice (1000 / 100), a withdrawal of 500 commits
    elsewhere, the app freezes 750 from what it read: the guard must fail
    (500 - 850 < 0) and the app must be told, at the UPDATE (or, with
    defer_writes, at COMMIT); nothing of its transaction may commit."""
    app = env.app()
    app.q(f"SET SESSION lc_messages = '{env.lang}'")
    (row,) = app.q("SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE")
    other = admin_connect(database=db)
    other.cursor().execute("UPDATE users SET balance = balance - 500 WHERE id = 1")
    other.close()
    app.q("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-1', 1, 750)")
    e = app.try_q(f"UPDATE users SET frozen_balance = {row[2] + 750} WHERE id = 1")
    if not isinstance(e, DbError):
        e = app.try_q("COMMIT")
    app.try_q("ROLLBACK")
    return e.code if isinstance(e, DbError) else "committed"


@pytest.mark.parametrize("lang", ["en_US", "de_DE", "ja_JP"])
def test_failed_guard_is_a_violation_in_any_language(billing_thaw, lang):
    from safety.harness import Endpoint

    def scenario(env: Env, db: str):
        env.lang = lang
        return overdraft(env, db)

    o = run_case(scenario, std_setup(), Endpoint("thaw", billing_thaw.host, billing_thaw.port), label=f"thaw, {lang}")
    users = {u[0]: u for u in o.rows["<db0>.users"]}
    assert o.rows["<db0>.freeze_logs"] == [], f"the freeze log committed without its freeze\n{o.summary()}"
    assert users[1][2:4] == (500, 100), o.summary()
    assert o.result == VIOLATION, o.summary()
