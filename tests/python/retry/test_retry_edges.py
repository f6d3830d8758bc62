"""Edges of lock-error recovery: what must be retried (locking reads, binary
protocol), what must not (KILL QUERY, multi-statement text) and what makes a
transaction unreplayable (session-changing statements, commands other than
statements, the recording limit, `replay: false`). Also the locking-read
variant of "a replayed read returns a different value", which is
deterministic without timing.
"""

from __future__ import annotations

import time

import pymysql
import pytest

from retry import retry_support as R

PORT = 3306
LOCK_WAIT = 1


@pytest.fixture(autouse=True)
def _statement_level_server():
    assert not R.rollback_on_timeout(PORT), "the shared MariaDB must run with innodb_rollback_on_timeout=OFF"


# ------------------------------------------------------------ statement retry
@pytest.mark.parametrize("kind", R.CLIENTS)
def test_locking_read_is_retried_transparently(kind, db, make_thaw):
    """The legacy app's check: SELECT ... FOR UPDATE that meets a lock for longer than the timeout."""
    thaw = make_thaw(retry={"attempts": 5, "backoff_base_ms": 50, "backoff_cap_ms": 200, "budget_ms": 5000})
    m = R.Metrics(thaw)
    holder = R.Holder(PORT, db, 1)
    holder.release_after(1.5)
    tx = R.make_tx(kind, thaw.port, db, lock_wait_timeout=LOCK_WAIT)
    try:
        t0 = time.monotonic()
        try:
            got = tx.read_for_update(1)
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"the locking read saw {e!r} after {time.monotonic() - t0:.2f} s; metrics: {m.changes()}")
        assert got == 0
        assert tx.incr(1) == 1
        tx.commit()
    finally:
        tx.close()
        holder.close()
    assert R.values(PORT, db)[1] == 1
    assert m.delta("thaw_retries_total", code=1205, outcome="succeeded") == 1, m.changes()


def test_prepared_statement_execute_is_retried(db, make_thaw):
    thaw = make_thaw(retry={"attempts": 5, "backoff_base_ms": 50, "backoff_cap_ms": 200, "budget_ms": 5000})
    m = R.Metrics(thaw)
    holder = R.Holder(PORT, db, 1)
    holder.release_after(1.5)
    tx = R.PreparedTx(thaw.port, db, lock_wait_timeout=LOCK_WAIT)
    try:
        assert tx.incr(2) == 1  # the statement is prepared and executed once before
        assert tx.incr(1) == 1  # the same statement, re-executed: meets the lock
        tx.commit()
    finally:
        tx.close()
        holder.close()
    vals = R.values(PORT, db)
    assert (vals[1], vals[2]) == (1, 1)
    assert m.delta("thaw_retries_total", code=1205, outcome="succeeded") == 1, m.changes()


def test_kill_query_is_never_retried(db, make_thaw):
    thaw = make_thaw()
    m = R.Metrics(thaw)
    holder = R.Holder(PORT, db, 1)
    tx = R.PyMySQLTx(thaw.port, db, lock_wait_timeout=20)
    try:
        t, res = R.in_thread(tx.incr, 1)
        R.wait_lock_wait(PORT, tx.thread_id)
        t0 = time.monotonic()
        R.admin_rows(PORT, None, f"KILL QUERY {tx.thread_id}")
        R.join(t, res, 15, "the killed UPDATE")
        assert res.error is not None and R.error_code(res.error) == 1317, f"expected 1317, got {res.error!r} / {res.value!r}"
        assert res.finished - t0 < 3, f"the killed statement returned {res.finished - t0:.2f} s after KILL QUERY"
        tx.rollback()
    finally:
        tx.close()
        holder.close()
    assert R.values(PORT, db)[1] == 0
    assert m.changes() == {}, f"a killed statement must not be retried or replayed: {m.changes()}"


def test_multi_statement_text_is_not_retried(db, make_thaw):
    """1205 from the first statement of a multi-statement COM_QUERY: thaw must not re-send
    the text (later statements might already have run in other cases)."""
    thaw = make_thaw(retry={"attempts": 5, "backoff_base_ms": 50, "backoff_cap_ms": 200, "budget_ms": 5000})
    m = R.Metrics(thaw)
    holder = R.Holder(PORT, db, 1)
    holder.release_after(1.5)  # a retry would succeed: the client must still see 1205
    conn = pymysql.connect(host="127.0.0.1", port=thaw.port, user="root", password="", database=db,
                           client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS, autocommit=False,
                           init_command=f"SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT}")
    try:
        with conn.cursor() as cur:
            with pytest.raises(pymysql.err.OperationalError) as info:
                cur.execute("UPDATE acct SET v = v + 1 WHERE id = 1; UPDATE acct SET v = v + 1 WHERE id = 2")
        assert info.value.args[0] == 1205
        conn.rollback()
    finally:
        conn.close()
        holder.close()
    assert m.changes() == {}, m.changes()


# ------------------------------------------------------------------- replays
def test_ping_inside_the_transaction_does_not_prevent_replay(db, make_thaw):
    thaw = make_thaw()
    m = R.Metrics(thaw)
    v = R.PyMySQLTx(thaw.port, db)
    try:
        assert v.incr(2) == 1
        v.conn.ping(reconnect=False)
        err, rw = R.deadlock(PORT, db, v, R.heavy_winner)
        assert rw.error is None, f"the direct winner failed: {rw.error!r}"
        assert err is None, f"the victim saw {err!r}; metrics: {m.changes()}"
        v.commit()
    finally:
        v.close()
    vals = R.values(PORT, db)
    assert (vals[1], vals[2]) == (2, 2), f"rows 1, 2 = {vals[1]}, {vals[2]}"
    assert m.delta("thaw_replays_total", code=1213, outcome="succeeded") == 1, m.changes()


def _set_user_var(v: R.PyMySQLTx):
    v._exec("SET @x = 1")


def _assign_in_select(v: R.PyMySQLTx):
    v._exec("SELECT @a := v FROM acct WHERE id = 3")


def _init_db(v: R.PyMySQLTx):
    v.conn.select_db(v.conn.db.decode() if isinstance(v.conn.db, bytes) else v.conn.db)  # COM_INIT_DB


def _big_statement(v: R.PyMySQLTx):
    v._exec("SELECT v /* " + "x" * 3000 + " */ FROM acct WHERE id = 3")


UNREPLAYABLE = {
    "set_user_variable": (_set_user_var, {}),
    "assignment_in_select": (_assign_in_select, {}),
    "com_init_db": (_init_db, {}),
    "larger_than_replay_max_bytes": (_big_statement, {"replay_max_bytes": 2048}),
    "replay_disabled": (lambda v: None, {"replay": False}),
}


@pytest.mark.parametrize("case", list(UNREPLAYABLE))
def test_unreplayable_transaction_returns_1213(case, db, make_thaw):
    step, retry = UNREPLAYABLE[case]
    thaw = make_thaw(retry=retry or None)
    m = R.Metrics(thaw)
    v = R.PyMySQLTx(thaw.port, db)
    try:
        assert v.incr(2) == 1
        step(v)
        err, rw = R.deadlock(PORT, db, v, R.heavy_winner)
        assert rw.error is None, f"the direct winner failed: {rw.error!r}"
        assert err is not None and R.error_code(err) == 1213, f"expected 1213, got {err!r}; metrics: {m.changes()}"
        v.commit()  # nothing of the victim may be committed
    finally:
        v.close()
    vals = R.values(PORT, db)
    assert (vals[1], vals[2]) == (1, 1), f"rows 1, 2 = {vals[1]}, {vals[2]}: only the winner's increments"
    assert m.delta("thaw_replays_total", code=1213, outcome="succeeded") == 0, m.changes()
    if case == "replay_disabled":
        assert m.changes() == {}, m.changes()
    else:
        assert m.delta("thaw_replays_total", code=1213, outcome="refused") == 1, m.changes()


@pytest.mark.parametrize("kind", R.CLIENTS)
def test_locking_read_changed_by_the_winner_gives_1213(kind, db, make_thaw):
    """The victim read row 3 FOR UPDATE; after the victim's rollback the winner changes
    row 3 and commits. The replayed locking read waits for the winner and sees the new
    value: the replay must be refused whatever the timing."""
    thaw = make_thaw()
    m = R.Metrics(thaw)
    v = R.make_tx(kind, thaw.port, db)
    try:
        assert v.read_for_update(3) == 0
        assert v.incr(2) == 1
        err, rw = R.deadlock(PORT, db, v, R.heavy_winner, winner_rest=lambda w: w.incr(3))
        assert rw.error is None, f"the direct winner failed: {rw.error!r}"
        assert err is not None and R.error_code(err) == 1213, f"expected 1213, got {err!r}; metrics: {m.changes()}"
        v.rollback()
    finally:
        v.close()
    vals = R.values(PORT, db)
    assert (vals[1], vals[2], vals[3]) == (1, 1, 1), f"rows 1..3 = {vals[1]}, {vals[2]}, {vals[3]}"
    assert m.delta("thaw_replays_total", code=1213, outcome="succeeded") == 0, m.changes()
    assert m.delta("thaw_replays_total", code=1213, outcome="refused") >= 1, m.changes()


def test_no_retry_for_a_client_that_gave_up(db, make_thaw):
    """The client's read timeout (1.5 s) ends before thaw's retries do. Direct, this app
    gets 1205 after 1 s and nothing is written. Through thaw it gets a timeout and closes
    the connection; a re-send after that point would write behind the app's back (an
    autocommit UPDATE the app believes failed, and will redo). thaw must stop retrying
    once the client is gone."""
    thaw = make_thaw(retry={"attempts": 5, "backoff_base_ms": 50, "backoff_cap_ms": 200, "budget_ms": 5000})
    holder = R.Holder(PORT, db, 1)
    # Attempt 2 is in flight when the client leaves (1.5 s) and times out at about 2.1 s;
    # the lock goes at 2.8 s, so only a re-send after the client left could succeed.
    holder.release_after(2.8)
    conn = pymysql.connect(host="127.0.0.1", port=thaw.port, user="root", password="", database=db,
                           autocommit=True, read_timeout=1.5,
                           init_command=f"SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT}")
    try:
        with pytest.raises(pymysql.err.OperationalError) as info:
            with conn.cursor() as cur:
                cur.execute("UPDATE acct SET v = v + 1 WHERE id = 1")
        assert info.value.args[0] == 2013, f"expected the client's own read timeout, got {info.value!r}"
    finally:
        try:
            conn.close()
        except Exception:
            pass
        holder.close()
    time.sleep(1.0)  # any retry still running has had time to succeed by now
    assert R.values(PORT, db)[1] == 0, (
        "thaw kept re-sending the UPDATE after the client had closed the connection and it was "
        "committed behind the app's back:\n" + thaw.log_text()[-1500:])
