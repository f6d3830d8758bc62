"""What the server tells about the *last* statement (ROW_COUNT(), warnings)
after a held-back write: the last statement the app sent must be the one
described, whether or not thaw sends the held write before the question.

Direct, `SHOW WARNINGS` after an `INSERT IGNORE` that hit a duplicate key
shows the 1062 warning, and ROW_COUNT() after a two-row INSERT is 2 (drivers
ask both on their own: mysql-connector's get_warnings runs SHOW WARNINGS
after every statement with warnings)."""
from __future__ import annotations

import pytest

from defer.support import Counters, assert_same, defect, run_all, wire_app
from safety.harness import Env, std_setup

READ_USER = "SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE"


def write_then(statement: str, question: str):
    """read -> absolute write (held) -> ``statement`` -> ``question`` -> COMMIT."""
    def scenario(env: Env, db: str):
        app = wire_app(env)
        app.q("BEGIN")
        app.q("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('dup', 1, 0)")
        (row,) = app.q(READ_USER)
        app.q(f"UPDATE users SET frozen_balance = {row[2] + 50} WHERE id = 1")
        app.q(statement)
        app.q(question)
        app.q("COMMIT")
        return "done"
    return scenario




@pytest.mark.parametrize("statement,question", [
    pytest.param("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('a', 1, 20), ('b', 1, 30)",
                 "SELECT ROW_COUNT()"),
    pytest.param("INSERT IGNORE INTO freeze_logs (request_id, user_id, amount) VALUES ('dup', 1, 50)",
                 "SHOW WARNINGS"),
    pytest.param("INSERT IGNORE INTO freeze_logs (request_id, user_id, amount) VALUES ('dup', 1, 50)",
                 "SHOW COUNT(*) WARNINGS"),
    ("INSERT IGNORE INTO freeze_logs (request_id, user_id, amount) VALUES ('dup', 1, 50)", "SELECT @@warning_count"),
], ids=["row_count_after_insert", "show_warnings_after_insert_ignore", "count_warnings", "warning_count_variable"])
def test_diagnostics_describe_the_last_statement(endpoints, thaws, statement, question):
    c = Counters(thaws.defer.admin_port)
    outs = run_all(write_then(statement, question), std_setup(), endpoints)
    assert c.delta()["writes"] == 1, c.delta()
    assert_same(outs)


@pytest.mark.parametrize("question", ["SELECT ROW_COUNT()", "SHOW WARNINGS",
                                      "SELECT @@warning_count"])
def test_diagnostics_right_after_the_held_write(endpoints, thaws, question):
    """Asked right after the held write, the answer is about the write: the
    server must have run it (a warning of the statement before it must not
    show)."""
    def scenario(env: Env, db: str):
        app = wire_app(env)
        app.q("BEGIN")
        (row,) = app.q(READ_USER)
        app.q("INSERT IGNORE INTO freeze_logs (request_id, user_id, amount) VALUES ('x', 1, 50), ('x', 1, 50)")
        app.q(f"UPDATE users SET frozen_balance = {row[2] + 50} WHERE id = 1")
        app.q(question)
        app.q("COMMIT")
        return "done"

    c = Counters(thaws.defer.admin_port)
    outs = run_all(scenario, std_setup(), endpoints)
    assert c.delta()["writes"] == 1, c.delta()
    assert_same(outs)
