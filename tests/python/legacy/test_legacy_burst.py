"""Same-user burst of check_and_freeze: the problem, and thaw's answer.

Direct against MariaDB the legacy flow queues on the row lock and some
requests die with 1205 (asserted: it proves the test exercises the
problem); through thaw every request succeeds.  Same for the half-migrated
two-session variant, which directly *always* ends in 1205.
"""

from __future__ import annotations

import pytest

from legacy import legacy_harness as H

pytestmark = pytest.mark.asyncio

USER = 8
BURST = 100
WORK_MS = 50
TWO_SESSION_REQUESTS = 20


def amount_for(decimal: bool):
    return H.to_money("6.16" if decimal else 616, decimal)


def db_for(request, decimal: bool) -> H.LegacyDB:
    return request.getfixturevalue("legacy_db_decimal" if decimal else "legacy_db")


async def _burst(app, db, amount):
    await H.warm_pool(app, BURST)
    ids = [H.new_request_id() for _ in range(BURST)]
    with H.Stopwatch() as sw:
        outcomes = await H.run_concurrently(
            [lambda rid=rid: app.check_and_freeze(USER, amount, rid, WORK_MS) for rid in ids]
        )
    return ids, outcomes, sw.elapsed


def _assert_books(db: H.LegacyDB, ids, outcomes):
    balance, frozen = db.user(USER)
    logs = db.logs(USER)
    ok_ids = {rid for rid, o in zip(ids, outcomes) if o.kind == "ok"}
    assert frozen == db.sum_logs(USER, "frozen"), "frozen_balance != sum of freeze logs"
    assert {r[0] for r in logs} == ok_ids, "freeze logs do not match the successful requests"
    assert all(r[3] == "frozen" for r in logs)
    assert balance - frozen >= 0 and frozen >= 0
    return balance, frozen


@pytest.mark.parametrize("decimal", [False, True], ids=["bigint", "decimal"])
@pytest.mark.parametrize("via", ["direct"])
async def test_burst_direct_hits_lock_wait_timeout(request, via, decimal, make_app):
    db = db_for(request, decimal)
    amount = amount_for(decimal)
    db.seed_users({USER: amount * BURST * 2})
    app = await make_app(db)
    ids, outcomes, elapsed = await _burst(app, db, amount)
    t = H.tally(outcomes)
    print(f"direct burst ({'decimal' if decimal else 'bigint'}): {dict(t)} in {elapsed:.2f}s")
    assert t["error:1205"] >= 1, f"no 1205 directly: the test does not exercise the problem ({dict(t)})"
    assert t["ok"] + t["error:1205"] == BURST, f"unexpected outcomes: {dict(t)} {H.error_summary(outcomes)}"
    _assert_books(db, ids, outcomes)


@pytest.mark.parametrize("decimal", [False, True], ids=["bigint", "decimal"])
@pytest.mark.parametrize("via", ["thaw"])
async def test_burst_through_thaw_all_succeed(request, via, decimal, make_app):
    db = db_for(request, decimal)
    amount = amount_for(decimal)
    initial = amount * BURST * 2
    db.seed_users({USER: initial})
    app = await make_app(db)
    async with H.invariant_monitor(db) as mon:
        ids, outcomes, elapsed = await _burst(app, db, amount)
    t = H.tally(outcomes)
    print(f"thaw burst ({'decimal' if decimal else 'bigint'}): {dict(t)} in {elapsed:.2f}s")
    assert t["ok"] == BURST, f"{dict(t)}: {H.error_summary(outcomes)}"
    balance, frozen = _assert_books(db, ids, outcomes)
    assert frozen == amount * BURST
    assert balance == initial
    assert not mon["violations"], mon["violations"][:5]


async def _two_session(app, amount):
    await H.warm_pool(app, 2 * TWO_SESSION_REQUESTS)
    ids = [H.new_request_id() for _ in range(TWO_SESSION_REQUESTS)]
    outcomes = await H.run_concurrently(
        [lambda rid=rid: app.check_and_freeze_two_session(USER, amount, rid, WORK_MS) for rid in ids]
    )
    return ids, outcomes


@pytest.mark.parametrize("via", ["direct"])
async def test_two_session_direct_always_1205(via, legacy_db, make_app):
    amount = amount_for(False)
    legacy_db.seed_users({USER: amount * TWO_SESSION_REQUESTS * 2})
    app = await make_app(legacy_db)
    ids, outcomes = await _two_session(app, amount)
    t = H.tally(outcomes)
    print(f"direct two-session: {dict(t)}")
    assert t["error:1205"] == TWO_SESSION_REQUESTS, f"{dict(t)}: {H.error_summary(outcomes)}"
    assert legacy_db.user(USER)[1] == 0
    assert legacy_db.logs(USER) == []


@pytest.mark.parametrize("via", ["thaw"])
async def test_two_session_through_thaw_all_succeed(via, legacy_db, make_app):
    amount = amount_for(False)
    initial = amount * TWO_SESSION_REQUESTS * 2
    legacy_db.seed_users({USER: initial})
    app = await make_app(legacy_db)
    ids, outcomes = await _two_session(app, amount)
    t = H.tally(outcomes)
    print(f"thaw two-session: {dict(t)}")
    assert t["ok"] == TWO_SESSION_REQUESTS, f"{dict(t)}: {H.error_summary(outcomes)}"
    balance, frozen = _assert_books(legacy_db, ids, outcomes)
    assert frozen == amount * TWO_SESSION_REQUESTS
    assert balance == initial
