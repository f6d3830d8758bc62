"""The OK thaw makes up for a held-back UPDATE, and the OK of the COMMIT it
is sent with, are the bytes MariaDB sends: affected rows (with and without
CLIENT_FOUND_ROWS), insert id, status flags, warnings, info string. So are
ROW_COUNT() and a re-read after them.

Each case runs direct, through thaw without deferral and through thaw with
it (tests/python/defer/support.py) and compares every packet the app got."""
from __future__ import annotations

import pytest

from defer.support import FOUND_ROWS, SESSION_TRACK, Counters, assert_same, defect, ok_packet, run_all, wire_app
from safety.harness import Env, std_setup

FREEZE = "UPDATE users SET frozen_balance = {new} WHERE id = 1"
FREEZE_TOUCH = "UPDATE users SET frozen_balance = {new}, updated_at = NOW() WHERE id = 1"


def legacy_freeze(*, write: str, begin: bool, client_flag: int = 0, before_write: str | None = None, amount: int = 50,
                  after_commit: str = "SELECT balance, frozen_balance FROM users WHERE id = 1"):
    """BEGIN (or autocommit=0) -> locking read -> log INSERT -> [before_write]
    -> absolute write -> COMMIT -> after_commit (a re-read) -> COMMIT."""
    def scenario(env: Env, db: str):
        app = wire_app(env, client_flag=client_flag)
        if begin:
            app.q("BEGIN")
        (row,) = app.q("SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE")
        app.q(f"INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-1', 1, {amount})")
        if before_write:
            app.q(before_write)
        app.q(write.format(new=row[2] + amount))
        app.q("COMMIT")
        app.q(after_commit)
        app.q("COMMIT")
        return "frozen"
    return scenario


@pytest.mark.parametrize("client_flag", [0, FOUND_ROWS, SESSION_TRACK, FOUND_ROWS | SESSION_TRACK],
                         ids=["plain", "found_rows", "session_track", "found_rows+session_track"])
@pytest.mark.parametrize("begin", [True, False], ids=["begin", "autocommit0"])
@pytest.mark.parametrize("write", [FREEZE, FREEZE_TOUCH], ids=["delta", "delta+now"])
def test_update_and_commit_ok_are_the_servers(endpoints, thaws, client_flag, begin, write):
    c = Counters(thaws.defer.admin_port)
    outs = run_all(legacy_freeze(write=write, begin=begin, client_flag=client_flag), std_setup(), endpoints)
    # Proof that the defer run held the write back and sent it with COMMIT.
    assert c.delta() == {"writes": 1, "flushes": 0, "committed": 1, "violations": 0}, c.delta()
    assert_same(outs)
    ok = ok_packet(next(e for e in outs["defer"].transcripts["app"][0] if e[0] == "wire" and e[1][0][:1] == b"\x00"
                        and b"Rows matched" in e[1][0])[1][0])
    assert ok["affected"] == 1 and ok["warnings"] == 0, ok


def test_row_count_after_commit(endpoints, thaws):
    """ROW_COUNT() right after COMMIT is 0 direct. The compound statement's
    affected rows are those of the UPDATEs inside it, and ROW_COUNT() after
    it reports them."""
    c = Counters(thaws.defer.admin_port)
    outs = run_all(legacy_freeze(write=FREEZE, begin=True, after_commit="SELECT ROW_COUNT()"), std_setup(), endpoints)
    assert c.delta()["committed"] == 1, c.delta()
    assert_same(outs)


@pytest.mark.parametrize("before_write", [
    # A table scan: MariaDB flags its response SERVER_QUERY_NO_INDEX_USED; the
    # UPDATE by key that follows is not flagged so.
    "SELECT * FROM freeze_logs",
    # A statement with a warning just before the write (the UPDATE has none).
    "SELECT CAST('1x' AS SIGNED)",
], ids=["after_table_scan", "after_warning"])
def test_update_ok_after_flagged_statement(endpoints, thaws, before_write):
    c = Counters(thaws.defer.admin_port)
    outs = run_all(legacy_freeze(write=FREEZE, begin=True, before_write=before_write), std_setup(), endpoints)
    assert c.delta()["writes"] == 1, c.delta()
    assert_same(outs)


def test_two_rows_one_commit(endpoints, thaws):
    """Two users frozen in one transaction: two OKs made up. The write of
    the second user sends the first one's (a write of the governed table may
    see it), so only the last write rides with COMMIT."""
    def scenario(env: Env, db: str):
        app = wire_app(env)
        app.q("BEGIN")
        rows = {uid: app.q(f"SELECT id, balance, frozen_balance FROM users WHERE id = {uid} FOR UPDATE")[0] for uid in (1, 3)}
        for uid, row in rows.items():
            app.q(f"INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-{uid}', {uid}, 40)")
            app.q(f"UPDATE users SET frozen_balance = {row[2] + 40} WHERE id = {uid}")
        app.q("COMMIT")
        return "frozen"

    c = Counters(thaws.defer.admin_port)
    outs = run_all(scenario, std_setup(), endpoints)
    assert c.delta() == {"writes": 2, "flushes": 1, "committed": 1, "violations": 0}, c.delta()
    assert_same(outs)


def test_update_ok_in_the_sessions_language(endpoints, thaws):
    """`lc_messages` translates the UPDATE's info string ("Datensätze
    gefunden: 1  Geändert: 1  Warnungen: 0" in German): thaw's OK is
    English, so the write is not held."""
    c = Counters(thaws.defer.admin_port)
    outs = run_all(legacy_freeze(write=FREEZE, begin=True, before_write="SET SESSION lc_messages = 'de_DE'"),
                   std_setup(), endpoints)
    assert c.delta()["writes"] == 0, c.delta()
    assert_same(outs)


@pytest.mark.parametrize("tracker", [
    # The server's OK says SESSION_STATE_CHANGED with the transaction state
    # (I___W___); thaw's could not, so the write is not held.
    pytest.param("session_track_transaction_info = 'STATE'", id="transaction_info"),
    pytest.param("session_track_state_change = ON", id="state_change"),
])
def test_update_ok_with_session_tracking(endpoints, thaws, tracker):
    """A client with CLIENT_SESSION_TRACK (a load balancer or router asks
    for the transaction state): the server's UPDATE OK may carry a state
    change; the made-up one must carry the same."""
    c = Counters(thaws.defer.admin_port)
    outs = run_all(legacy_freeze(write=FREEZE, begin=True, client_flag=SESSION_TRACK, before_write=f"SET SESSION {tracker}"),
                   std_setup(), endpoints)
    assert c.delta()["writes"] == (0 if "transaction_info" in tracker else 1), c.delta()
    assert_same(outs)
