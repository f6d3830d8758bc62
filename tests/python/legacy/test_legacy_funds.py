"""Insufficient funds under concurrency, through thaw.

Balance for exactly K freezes, N concurrent freezes: exactly K succeed, the
rest are InsufficientBalance (either the app's own Python check, or thaw's
guard answering 1644 / "insufficient balance", which the app maps), the
books match, and no freeze log survives a failed freeze (the log INSERT is
flushed *before* the rejected UPDATE: thaw must roll the whole transaction
back).  Run for the BIGINT schema and the DECIMAL(18,2) variant.
"""

from __future__ import annotations

import pytest

from legacy import legacy_harness as H

pytestmark = pytest.mark.asyncio

USER = 8
K = 7
N = 30
WORK_MS = 50


@pytest.mark.parametrize("decimal", [False, True], ids=["bigint", "decimal"])
@pytest.mark.parametrize("via", ["thaw"])
async def test_insufficient_funds_exactly_k_succeed(request, via, decimal, make_app):
    db: H.LegacyDB = request.getfixturevalue("legacy_db_decimal" if decimal else "legacy_db")
    amount = H.to_money("6.16" if decimal else 616, decimal)
    # something is already frozen: the app's absolute writes start from non-zero
    pre_frozen = H.to_money("3.33" if decimal else 333, decimal)
    initial = amount * K + pre_frozen
    db.seed_users({USER: initial})
    db.query("UPDATE users SET frozen_balance = %s WHERE id = %s", (pre_frozen, USER))
    app = await make_app(db)
    await H.warm_pool(app, N)

    ids = [H.new_request_id() for _ in range(N)]
    async with H.invariant_monitor(db) as mon:
        outcomes = await H.run_concurrently(
            [lambda rid=rid: app.check_and_freeze(USER, amount, rid, WORK_MS) for rid in ids]
        )
    t = H.tally(outcomes)
    by_source = {s: sum(1 for o in outcomes if o.kind == "insufficient" and o.source == s) for s in ("app", "db")}
    print(f"thaw insufficient funds ({'decimal' if decimal else 'bigint'}): {dict(t)} rejected by {by_source}")

    assert t["ok"] == K and t["insufficient"] == N - K, f"{dict(t)}: {H.error_summary(outcomes)}"
    for o in outcomes:
        if o.kind == "insufficient" and o.source == "db":
            assert "insufficient balance" in o.detail.lower(), o.detail

    balance, frozen = db.user(USER)
    ok_ids = {rid for rid, o in zip(ids, outcomes) if o.kind == "ok"}
    logs = db.logs(USER)
    assert balance == initial
    assert frozen == pre_frozen + amount * K
    assert frozen - pre_frozen == db.sum_logs(USER, "frozen"), "frozen_balance != sum of freeze logs"
    assert {r[0] for r in logs} == ok_ids, "a failed freeze left a log row (or a success has none)"
    assert balance - frozen >= 0
    assert not mon["violations"], f"balance went below frozen: {mon['violations'][:5]}"
    assert mon["samples"][0] > 0
