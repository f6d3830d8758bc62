"""Statements thaw cannot prove safe while a row is unprotected (spec 2, 3).

Every case is the billing freeze: a keyed locking read of users 1 (which
thaw unlocks), a freeze log, then the absolute write of frozen_balance in a
shape thaw must treat as UNKNOWN. Before it is sent thaw must re-lock the row
and compare it with what the app read:

- no concurrent change: the re-lock matches, the statement runs as is, and
  everything equals direct exactly (no 1213);
- a concurrent freeze of 200 committed after the read (direct, it waits for
  the app's lock): the re-lock differs, thaw answers 1213 and rolls back; the
  app's retry reads the new value and its write then keeps the concurrent
  freeze. The final state is a serial order and the books are exact.
"""
from __future__ import annotations

import pymysql
import pytest

from safety.harness import App, Endpoint, Env, check, freeze_flow, run_with_retry, std_books, std_setup

CHANGE = pytest.mark.parametrize("change", [False, True], ids=["no_change", "concurrent_change"])


def _check(scenario, setup, via, subject, direct, change, expect_retry=True):
    return check(scenario, setup=setup, via=via, subject=subject, direct=direct, concurrent=change,
                 books=std_books, expect_retry=change and expect_retry)


# ------------------------------------------------------------------ the shapes
@CHANGE
def test_multi_statement_packet_after_unlocked_read(via, subject, direct, change):
    def write(app: App, r):
        app.q(f"UPDATE users SET frozen_balance = {r['new_frozen']} WHERE id = 1; SELECT frozen_balance FROM users WHERE id = 1")
    scenario = freeze_flow(write, change=change, conn_kw={"client_flag": pymysql.constants.CLIENT.MULTI_STATEMENTS})
    _check(scenario, std_setup(), via, subject, direct, change)


@CHANGE
@pytest.mark.parametrize("opener", ["/*!50000", "/*M!100000"], ids=["mysql_comment", "mariadb_comment"])
def test_executable_comment_after_unlocked_read(via, subject, direct, change, opener):
    # Read as a comment, this is a harmless last_writer_wins write; the server
    # executes the absolute frozen_balance write inside it.
    def write(app: App, r):
        app.q(f"UPDATE users SET {opener} frozen_balance = {r['new_frozen']}, */ updated_at = '2024-05-01 00:00:00' WHERE id = 1")
    _check(freeze_flow(write, change=change), std_setup(), via, subject, direct, change)


@CHANGE
def test_set_statement_for_after_unlocked_read(via, subject, direct, change):
    def write(app: App, r):
        app.q(f"SET STATEMENT max_statement_time = 60 FOR UPDATE users SET frozen_balance = {r['new_frozen']} WHERE id = 1")
    _check(freeze_flow(write, change=change), std_setup(), via, subject, direct, change)


@CHANGE
def test_execute_immediate_after_unlocked_read(via, subject, direct, change):
    def write(app: App, r):
        app.q(f"EXECUTE IMMEDIATE 'UPDATE users SET frozen_balance = {r['new_frozen']} WHERE id = 1'")
    _check(freeze_flow(write, change=change), std_setup(), via, subject, direct, change)


@CHANGE
def test_prepare_execute_text_after_unlocked_read(via, subject, direct, change):
    def write(app: App, r):
        app.q("PREPARE thaw_freeze FROM 'UPDATE users SET frozen_balance = ? WHERE id = ?'")
        app.q(f"SET @v = {r['new_frozen']}, @uid = 1")
        app.q("EXECUTE thaw_freeze USING @v, @uid")
        app.q("DEALLOCATE PREPARE thaw_freeze")
    _check(freeze_flow(write, change=change), std_setup(), via, subject, direct, change)


SET_FROZEN_FUNCTION = (
    "CREATE FUNCTION set_frozen_fn(uid BIGINT, v BIGINT) RETURNS INT MODIFIES SQL DATA"
    " BEGIN UPDATE users SET frozen_balance = v WHERE id = uid; RETURN ROW_COUNT(); END"
)


@CHANGE
def test_do_after_unlocked_read(via, subject, direct, change):
    def write(app: App, r):
        app.q(f"DO set_frozen_fn(1, {r['new_frozen']})")
    _check(freeze_flow(write, change=change), std_setup(SET_FROZEN_FUNCTION), via, subject, direct, change)


@CHANGE
def test_upsert_on_duplicate_key_update_after_unlocked_read(via, subject, direct, change):
    def write(app: App, r):
        app.q("INSERT INTO users (id, username, balance, frozen_balance) VALUES"
              f" (1, 'alice', {r['balance']}, {r['new_frozen']}) ON DUPLICATE KEY UPDATE frozen_balance = VALUES(frozen_balance)")
    _check(freeze_flow(write, change=change), std_setup(), via, subject, direct, change)


@CHANGE
def test_replace_after_unlocked_read(via, subject, direct, change):
    def write(app: App, r):
        app.q("REPLACE INTO users (id, username, balance, frozen_balance, updated_at) VALUES"
              f" (1, '{r['username']}', {r['balance']}, {r['new_frozen']}, NULL)")
    _check(freeze_flow(write, change=change), std_setup(), via, subject, direct, change)


@CHANGE
def test_update_not_keyed_by_literal_after_unlocked_read(via, subject, direct, change):
    def write(app: App, r):
        app.q(f"UPDATE users SET frozen_balance = {r['new_frozen']} WHERE username = '{r['username']}'")
    _check(freeze_flow(write, change=change), std_setup(), via, subject, direct, change)


@CHANGE
@pytest.mark.parametrize("where", ["id = 1 || id = -1", "id = 1 && 1 = 1"], ids=["double_pipe", "double_ampersand"])
def test_double_pipe_or_ampersand_operator_after_unlocked_read(via, subject, direct, change, where):
    # without PIPES_AS_CONCAT, || is OR; && is AND: the statement updates row 1.
    # The spec lists these as UNKNOWN; a thaw that guards them correctly meets
    # the outcome criterion too, so no 1213 is required.
    def write(app: App, r):
        app.q(f"UPDATE users SET frozen_balance = {r['new_frozen']} WHERE {where}")
    _check(freeze_flow(write, change=change), std_setup(), via, subject, direct, change, expect_retry=False)


@CHANGE
def test_insert_select_into_governed_table_after_unlocked_read(via, subject, direct, change):
    def write(app: App, r):
        app.q("INSERT INTO users (id, username, balance, frozen_balance) SELECT 4, 'dave', 0, 0")
        app.q(f"UPDATE users SET frozen_balance = {r['new_frozen']} WHERE id = 1")
    _check(freeze_flow(write, change=change), std_setup(), via, subject, direct, change)


# ------------------------------------------------------- other unknown writes
@CHANGE
def test_call_procedure_writing_users_after_unlocked_read(via, subject, direct, change):
    proc = "CREATE PROCEDURE set_frozen(IN uid BIGINT, IN v BIGINT) UPDATE users SET frozen_balance = v WHERE id = uid"

    def write(app: App, r):
        app.q(f"CALL set_frozen(1, {r['new_frozen']})")
    _check(freeze_flow(write, change=change), std_setup(proc), via, subject, direct, change)


@CHANGE
def test_non_utf8_statement_bytes_after_unlocked_read(via, subject, direct, change):
    # latin1 connection: the comment's é goes on the wire as the single byte 0xE9.
    def write(app: App, r):
        app.q(f"UPDATE users SET frozen_balance = {r['new_frozen']} /* café */ WHERE id = 1")
    scenario = freeze_flow(write, change=change, conn_kw={"charset": "latin1"})
    # thaw may treat the statement as UNKNOWN (1213 on a change) or rewrite it
    # correctly: only the outcome is prescribed.
    _check(scenario, std_setup(), via, subject, direct, change, expect_retry=False)


@CHANGE
def test_delete_of_governed_row_after_unlocked_read(via, subject, direct, change):
    """Closing an account: log the balance read, delete the row. A concurrent
    top-up must end either in the log (it came first) or match no row (it came
    after the delete); never be deleted unlogged."""
    def scenario(env: Env, db: str):
        def topup(app: App):
            app.q("UPDATE users SET balance = balance + 100 WHERE id = 3")
            app.q("COMMIT")
        other = env.concurrent(topup) if change else None
        app = env.app()

        def txn():
            (row,) = app.q("SELECT id, balance, frozen_balance FROM users WHERE id = 3 FOR UPDATE")
            if other is not None:
                other.fire()
            app.q(f"INSERT INTO closures (user_id, final_balance) VALUES (3, {row[1]})")
            app.q("DELETE FROM users WHERE id = 3")
            app.q("COMMIT")
            return "closed"
        res = run_with_retry(txn, rec=app.rec, rollback=app.rollback)
        if other is not None:
            other.join()
        return res

    def books(o):
        (closure,) = o.rows["<db0>.closures"]
        topped = 0
        if change:  # rowcount of the top-up: 0 when it came after the delete
            topped = next(e[2] for e in o.final("other") if e[0] == "ok" and e[1].startswith("UPDATE"))
        assert closure == (3, 500 + 100 * topped), o.summary()
        assert all(u[0] != 3 for u in o.rows["<db0>.users"]), o.summary()

    check(scenario, setup=std_setup("CREATE TABLE closures (user_id BIGINT PRIMARY KEY, final_balance BIGINT NOT NULL)"),
          via=via, subject=subject, direct=direct, concurrent=change, books=books, expect_retry=change)


TRIGGER_RULES = """
    tables:
      - table: users
        name: users-balance
        key: id
        invariants:
          - balance - frozen_balance >= 0
          - frozen_balance >= 0
        balance_columns: [balance, frozen_balance]
        cas_columns: [username]
        last_writer_wins: [updated_at]
        trigger_tables: [balance_events]
        violation:
          error: {code: 1644, sqlstate: "45000", message: "insufficient balance (rule {rule}, user {key})"}
          rollback: true
"""


@CHANGE
def test_write_to_trigger_table_after_unlocked_read(via, direct, change, make_thaw):
    """balance_events has a trigger that copies new_balance into users.balance
    (absolute). The rule lists it in trigger_tables; an INSERT into it after an
    unlocked read of users must not overwrite a concurrent top-up."""
    subject = direct
    if via == "thaw":
        t = make_thaw(TRIGGER_RULES)
        subject = Endpoint("thaw", t.host, t.port)

    setup = std_setup(
        "CREATE TABLE balance_events (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, new_balance BIGINT NOT NULL)",
        "CREATE TRIGGER balance_events_apply AFTER INSERT ON balance_events FOR EACH ROW"
        " UPDATE users SET balance = NEW.new_balance WHERE id = NEW.user_id",
    )

    def scenario(env: Env, db: str):
        def topup(app: App):
            app.q("UPDATE users SET balance = balance + 500 WHERE id = 1")
            app.q("COMMIT")
        other = env.concurrent(topup) if change else None
        app = env.app()

        def txn():
            (row,) = app.q("SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE")
            if other is not None:
                other.fire()
            app.q(f"INSERT INTO balance_events (id, user_id, new_balance) VALUES (1, 1, {row[1] - 100})")
            app.q("COMMIT")
            return "charged"
        res = run_with_retry(txn, rec=app.rec, rollback=app.rollback)
        if other is not None:
            other.join()
        return res

    def books(o):
        bal = {u[0]: u[2] for u in o.rows["<db0>.users"]}[1]
        assert bal == 1000 - 100 + (500 if change else 0), o.summary()

    check(scenario, setup=setup, via=via, subject=subject, direct=direct, concurrent=change, books=books,
          expect_retry=change)
