"""1213 Deadlock: the server rolled the victim's whole transaction back. thaw
replays the recorded transaction, compares a digest of every replayed
response with what the client saw, and re-sends the failed statement; any
difference returns the original 1213 (and thaw rolls the backend back).

Deadlocks are made deterministic by ordering: A (or the winner W) waits for a
row the other holds (seen in information_schema.PROCESSLIST) before the
other closes the cycle. InnoDB picks the lighter transaction as the victim,
so where the victim matters the winner first updates 20 extra rows.
"""

from __future__ import annotations

import pytest

from retry import retry_support as R

PORT = 3306
THREAD_TIMEOUT = 60


def _assert_no_error(res: R.Result, who: str, m: R.Metrics):
    assert res.error is None, f"{who} saw {res.error!r}; metrics moved: {m.changes()}"


@pytest.mark.parametrize("kind", R.CLIENTS + ("connector-prepared",))
def test_classic_deadlock_victim_is_replayed_and_commits(kind, db, make_thaw):
    thaw = make_thaw()
    m = R.Metrics(thaw)
    a = R.make_tx(kind, thaw.port, db)
    b = R.make_tx(kind, thaw.port, db)
    try:
        assert a.incr(1) == 1  # A holds row 1
        assert b.incr(2) == 1  # B holds row 2

        def a_rest():
            assert a.incr(2) == 1  # waits for B
            a.commit()

        def b_rest():
            assert b.incr(1) == 1  # closes the cycle: one of A/B is the victim
            b.commit()

        ta, ra = R.in_thread(a_rest)
        R.wait_lock_wait(PORT, a.thread_id)
        tb, rb = R.in_thread(b_rest)
        R.join(ta, ra, THREAD_TIMEOUT, "transaction A")
        R.join(tb, rb, THREAD_TIMEOUT, "transaction B")
        _assert_no_error(ra, "transaction A", m)
        _assert_no_error(rb, "transaction B", m)
    finally:
        a.close()
        b.close()

    vals = R.values(PORT, db)
    # Increments: a lost or doubly applied statement would show.
    assert (vals[1], vals[2]) == (2, 2), f"rows 1 and 2: {vals[1]}, {vals[2]}; expected 2 and 2 (each transaction once)"
    assert m.delta("thaw_replays_total", code=1213, outcome="succeeded") == 1, m.changes()
    assert m.delta("thaw_replays_total", code=1213, outcome="refused") == 0, m.changes()
    assert m.delta("thaw_replays_total", code=1213, outcome="exhausted") == 0, m.changes()


def _winner_changes_row3(w: R.Tx):
    assert w.incr_many(10, 29) == 20  # weight: the winner is never the victim
    assert w.incr(3) == 1  # the row the victim read
    assert w.incr(1) == 1


@pytest.mark.parametrize("kind", R.CLIENTS)
def test_replayed_read_differs_gives_1213(kind, db, make_thaw):
    # Backoff 250..500 ms: the winner has committed before the replay reads again.
    thaw = make_thaw(retry={"backoff_base_ms": 500, "backoff_cap_ms": 500})
    m = R.Metrics(thaw)
    v = R.make_tx(kind, thaw.port, db)
    try:
        assert v.read(3) == 0  # consistent read: the client decided on v=0
        assert v.incr(2) == 1
        err, rw = R.deadlock(PORT, db, v, _winner_changes_row3)
        assert rw.error is None, f"the direct winner failed: {rw.error!r} (it should not be the victim)"
        assert err is not None and R.error_code(err) == 1213, (
            f"the victim must get the original 1213 when a replayed read differs; got {err!r}; "
            f"metrics moved: {m.changes()}")
        if kind == "pymysql":
            # A sloppy app that commits anyway must not commit a half-replayed transaction.
            v.commit()
        else:
            v.rollback()
    finally:
        v.close()

    vals = R.values(PORT, db)
    assert (vals[1], vals[2], vals[3]) == (1, 1, 1), f"rows 1..3 = {vals[1]}, {vals[2]}, {vals[3]}: only the winner's increments may be there"
    assert all(vals[i] == 1 for i in range(10, 30))
    assert m.delta("thaw_replays_total", code=1213, outcome="refused") == 1, m.changes()
    assert m.delta("thaw_replays_total", code=1213, outcome="succeeded") == 0, m.changes()


def _winner_inserts(w: R.Tx):
    w.insert_log("winner")
    assert w.incr_many(10, 29) == 20
    assert w.incr(1) == 1


@pytest.mark.parametrize("kind", R.CLIENTS)
def test_auto_increment_insert_before_deadlock_refuses_replay(kind, db, make_thaw):
    thaw = make_thaw()
    m = R.Metrics(thaw)
    v = R.make_tx(kind, thaw.port, db)
    try:
        first_id = v.insert_log("victim")
        assert first_id and first_id > 0
        assert v.incr(2) == 1
        err, rw = R.deadlock(PORT, db, v, _winner_inserts)
        assert rw.error is None, f"the direct winner failed: {rw.error!r} (it should not be the victim)"
        assert err is not None and R.error_code(err) == 1213, (
            f"a replayed INSERT gets a new AUTO_INCREMENT id: the victim must get 1213; got {err!r}; "
            f"metrics moved: {m.changes()}")
        if kind == "pymysql":
            v.commit()  # committing after the error must not resurrect anything
        else:
            v.rollback()
    finally:
        v.close()

    assert R.log_rows(PORT, db) == ["winner"], "the log must hold only the winner's row"
    vals = R.values(PORT, db)
    assert (vals[1], vals[2]) == (1, 1), f"rows 1, 2 = {vals[1]}, {vals[2]}; expected only the winner's increments"
    assert m.delta("thaw_replays_total", code=1213, outcome="refused") == 1, m.changes()
    assert m.delta("thaw_replays_total", code=1213, outcome="succeeded") == 0, m.changes()
