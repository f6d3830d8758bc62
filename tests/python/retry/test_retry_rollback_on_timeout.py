"""1205 with innodb_rollback_on_timeout=ON: the server rolled the whole
transaction back, so a lone statement retry would lose the transaction's
earlier statements. thaw must take the replay path instead.

Runs against a throwaway mariadbd started with --innodb-rollback-on-timeout=ON
(the variable is read-only at runtime) and a thaw pointed at it.
"""

from __future__ import annotations

import time

import pytest

from retry import retry_support as R
from mariadb_instance import MariaDBInstance

LOCK_WAIT = 1


@pytest.fixture(scope="module")
def rot_server():
    with MariaDBInstance(["--innodb-rollback-on-timeout=ON"]) as inst:
        assert R.rollback_on_timeout(inst.port), "the instance did not start with innodb_rollback_on_timeout=ON"
        yield inst


@pytest.fixture
def rot_db(rot_server):
    name = R.create_db(rot_server.port)
    yield name
    R.drop_db(rot_server.port, name)


def script(tx: R.Tx):
    """Earlier statement, then the one that meets the lock, then COMMIT."""
    assert tx.incr(2) == 1
    assert tx.incr(1) == 1
    tx.commit()


@pytest.mark.parametrize("kind", R.CLIENTS)
def test_1205_with_rollback_on_timeout_replays_the_transaction(kind, rot_server, rot_db, make_thaw):
    port = rot_server.port
    thaw = make_thaw(retry={"attempts": 5, "backoff_base_ms": 50, "backoff_cap_ms": 200, "budget_ms": 5000},
                     backend=f"127.0.0.1:{port}")

    # Direct control: the server really rolls the whole transaction back.
    holder = R.Holder(port, rot_db, 1)
    holder.release_after(1.5)
    tx = R.make_tx(kind, port, rot_db, lock_wait_timeout=LOCK_WAIT)
    try:
        with pytest.raises(Exception) as info:
            script(tx)
        assert R.error_code(info.value) == 1205, f"direct: expected 1205, got {info.value!r}"
        tx.rollback()
    finally:
        tx.close()
        holder.close()
    assert R.values(port, rot_db)[2] == 0, "direct: the earlier UPDATE should be rolled back with the transaction"

    # Through thaw: the transaction is replayed, the earlier statement survives exactly once.
    m = R.Metrics(thaw)
    holder = R.Holder(port, rot_db, 1)
    holder.release_after(1.5)
    tx = R.make_tx(kind, thaw.port, rot_db, lock_wait_timeout=LOCK_WAIT)
    t0 = time.monotonic()
    try:
        script(tx)
        err = None
    except Exception as e:  # noqa: BLE001
        err = e
    finally:
        elapsed = time.monotonic() - t0
        tx.close()
        holder.close()
    assert err is None, f"through thaw the client saw {err!r} after {elapsed:.2f} s; metrics moved: {m.changes()}"
    vals = R.values(port, rot_db)
    assert vals[2] == 1, f"the earlier UPDATE must survive exactly once after commit, row 2 = {vals[2]}"
    assert vals[1] == 1, f"the UPDATE that met the lock must apply once, row 1 = {vals[1]}"
    assert m.delta("thaw_replays_total", code=1205, outcome="succeeded") == 1, m.changes()
    assert m.delta("thaw_retries_total", code=1205, outcome="succeeded") == 0, (
        "a statement-level retry is wrong when the server rolled the transaction back", m.changes())


def test_1205_with_rollback_on_timeout_exhausted_leaves_nothing(rot_server, rot_db, make_thaw):
    """Lock never released: replays run out, the client gets 1205 and nothing of the
    transaction survives even if the app commits afterwards."""
    port = rot_server.port
    attempts = 2
    thaw = make_thaw(retry={"attempts": attempts, "backoff_base_ms": 50, "backoff_cap_ms": 200, "budget_ms": 5000},
                     backend=f"127.0.0.1:{port}")
    m = R.Metrics(thaw)
    holder = R.Holder(port, rot_db, 1)
    tx = R.PyMySQLTx(thaw.port, rot_db, lock_wait_timeout=LOCK_WAIT)
    try:
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
    assert (attempts + 1) * LOCK_WAIT * 0.95 <= elapsed <= (attempts + 1) * LOCK_WAIT + 5 + 2, f"{elapsed:.2f} s"
    assert m.delta("thaw_replays_total", code=1205, outcome="exhausted") == 1, m.changes()
    vals = R.values(port, rot_db)
    assert (vals[1], vals[2]) == (0, 0), f"rows 1, 2 = {vals[1]}, {vals[2]}: nothing of the failed transaction may survive"
