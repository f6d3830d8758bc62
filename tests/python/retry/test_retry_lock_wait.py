"""1205 Lock wait timeout, statement level (innodb_rollback_on_timeout=OFF,
the shared MariaDB's setting): thaw re-sends the statement after a capped,
jittered backoff and the client only sees the final answer.

Every connection under test sets its own SESSION innodb_lock_wait_timeout, so
other suites changing the GLOBAL value do not matter.
"""

from __future__ import annotations

import time

import pytest

from retry import retry_support as R

PORT = 3306
LOCK_WAIT = 1  # SESSION innodb_lock_wait_timeout of the client connections, seconds


@pytest.fixture(autouse=True)
def _statement_level_server():
    assert not R.rollback_on_timeout(PORT), (
        "the shared MariaDB runs with innodb_rollback_on_timeout=ON; these tests need OFF "
        "(the ON case is tests/python/retry/test_retry_rollback_on_timeout.py)")


def run_update(kind: str, port: int, db: str, row_id: int = 1):
    """The client script: one UPDATE (first statement of an implicit transaction) and COMMIT.
    Returns (elapsed seconds, exception or None)."""
    tx = R.make_tx(kind, port, db, lock_wait_timeout=LOCK_WAIT)
    try:
        t0 = time.monotonic()
        try:
            n = tx.incr(row_id)
            tx.commit()
            assert n == 1, f"UPDATE matched {n} rows"
            return time.monotonic() - t0, None
        except Exception as e:  # noqa: BLE001
            elapsed = time.monotonic() - t0
            tx.rollback()
            return elapsed, e
    finally:
        tx.close()


@pytest.mark.parametrize("kind", R.CLIENTS + ("connector-prepared",))
def test_lock_released_after_timeout_is_retried_transparently(kind, db, make_thaw):
    thaw = make_thaw(retry={"attempts": 5, "backoff_base_ms": 50, "backoff_cap_ms": 200, "budget_ms": 5000})

    # Direct, the script dies with 1205: the lock outlives the 1 s wait.
    holder = R.Holder(PORT, db, 1)
    holder.release_after(1.5)
    try:
        elapsed, err = run_update(kind, PORT, db)
    finally:
        holder.close()
    assert err is not None and R.error_code(err) == 1205, f"direct: expected 1205, got {err!r} after {elapsed:.2f} s"
    assert R.values(PORT, db)[1] == 0

    # Through thaw, the same script succeeds once the lock is gone.
    m = R.Metrics(thaw)
    holder = R.Holder(PORT, db, 1)
    holder.release_after(1.5)
    try:
        elapsed, err = run_update(kind, thaw.port, db)
    finally:
        holder.close()
    assert err is None, f"through thaw the client saw {err!r} after {elapsed:.2f} s; metrics moved: {m.changes()}"
    assert elapsed >= LOCK_WAIT, f"the UPDATE returned after {elapsed:.2f} s: it never waited for the lock"
    assert elapsed < 5, f"the UPDATE took {elapsed:.2f} s although the lock was released after 1.5 s"
    assert R.values(PORT, db)[1] == 1, "the retried UPDATE must apply exactly once"
    assert m.delta("thaw_retries_total", code=1205, outcome="succeeded") == 1, m.changes()
    assert m.delta("thaw_retries_total", code=1205, outcome="exhausted") == 0, m.changes()
    assert m.delta("thaw_replays_total", code=1205, outcome="succeeded") == 0, m.changes()


@pytest.mark.parametrize("kind", R.CLIENTS)
def test_lock_never_released_gives_1205_after_the_configured_attempts(kind, db, make_thaw):
    attempts, budget_ms = 3, 5000
    thaw = make_thaw(retry={"attempts": attempts, "backoff_base_ms": 50, "backoff_cap_ms": 200, "budget_ms": budget_ms})
    m = R.Metrics(thaw)
    holder = R.Holder(PORT, db, 1)
    tx = R.make_tx(kind, thaw.port, db, lock_wait_timeout=LOCK_WAIT)
    try:
        # An earlier statement of the same transaction: with rollback_on_timeout=OFF
        # the server keeps it after a 1205, and thaw must not throw it away either.
        assert tx.incr(2) == 1
        t0 = time.monotonic()
        with pytest.raises(Exception) as info:
            tx.incr(1)
        elapsed = time.monotonic() - t0
        assert R.error_code(info.value) == 1205, f"expected 1205, got {info.value!r}"
        tx.commit()
    finally:
        tx.close()
        holder.close()

    # `attempts` re-sends after the first failure: attempts + 1 lock waits of 1 s,
    # plus backoffs bounded by the budget.
    low = (attempts + 1) * LOCK_WAIT * 0.95
    high = (attempts + 1) * LOCK_WAIT + budget_ms / 1000 + 2.0
    assert low <= elapsed <= high, f"1205 after {elapsed:.2f} s, expected between {low:.2f} and {high:.2f} s"
    assert m.delta("thaw_retries_total", code=1205, outcome="exhausted") == 1, m.changes()
    assert m.delta("thaw_retries_total", code=1205, outcome="succeeded") == 0, m.changes()
    retried = thaw.log_text().count("lock error: retrying")
    assert retried == attempts, f"thaw logged {retried} retries, configured attempts: {attempts}"
    vals = R.values(PORT, db)
    assert vals[1] == 0, "the timed-out UPDATE must not have applied"
    assert vals[2] == 1, "the transaction's earlier statement survives a statement-level 1205 exactly once"
