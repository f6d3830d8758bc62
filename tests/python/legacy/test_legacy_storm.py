"""Mixed freeze / settle / refund storm over several users, through thaw.

Every request ends as success or InsufficientBalance (freezes only), nothing
else; afterwards, per user: balance - frozen_balance >= 0,
frozen_balance >= 0, frozen_balance == sum of 'frozen' logs,
balance == initial - sum of settled actuals, and every log row has the
status its request's history says.

Through thaw only: directly, the legacy lock order (settle/refund lock the
log row then the user; freeze locks the user then inserts a log) makes
MariaDB report deadlocks (1213) in this storm.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from legacy import legacy_harness as H

pytestmark = pytest.mark.asyncio

USERS = [101, 102, 103, 104, 105]
INITIAL = 6000
OPERATIONS = 200
CONCURRENCY = 50
WORK_MS = 20
SEED = 20241123


@pytest.mark.parametrize("via", ["thaw"])
async def test_mixed_storm_keeps_the_books(via, legacy_db, make_app):
    """CONCURRENCY workers issue exactly OPERATIONS operations: a settle or
    refund of a request frozen earlier (when one is pending, ~45%), else a
    freeze of a random amount for a random user."""
    rng = random.Random(SEED)
    legacy_db.seed_users({u: INITIAL for u in USERS})
    app = await make_app(legacy_db)
    await H.warm_pool(app, CONCURRENCY)

    issued = 0
    pending: list[tuple] = []  # frozen requests not yet settled/refunded
    results: list[tuple] = []  # (op, (uid, amount, actual, rid), outcome)

    async def worker():
        nonlocal issued
        while issued < OPERATIONS:
            issued += 1
            if pending and rng.random() < 0.45:
                uid, amount, rid = pending.pop(rng.randrange(len(pending)))
                if rng.random() < 0.55:
                    actual = rng.randint(0, amount)
                    o = await H.outcome_of(app.settle(rid, actual))
                    results.append(("settle", (uid, amount, actual, rid), o))
                else:
                    o = await H.outcome_of(app.refund(rid))
                    results.append(("refund", (uid, amount, None, rid), o))
            else:
                uid, amount, rid = rng.choice(USERS), rng.randint(100, 1000), H.new_request_id()
                o = await H.outcome_of(app.check_and_freeze(uid, amount, rid, WORK_MS))
                results.append(("freeze", (uid, amount, None, rid), o))
                if o.kind == "ok":
                    pending.append((uid, amount, rid))

    async with H.invariant_monitor(legacy_db) as mon:
        with H.Stopwatch() as sw:
            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    freezes = [r for r in results if r[0] == "freeze"]
    followups = [r for r in results if r[0] != "freeze"]
    ft = H.tally([r[2] for r in freezes])
    st = H.tally([r[2] for r in followups])
    print(f"storm: {len(results)} ops in {sw.elapsed:.2f}s; freezes {dict(ft)}; settle/refund {dict(st)}")

    # every outcome accounted for
    bad = [
        (op, c[3], o.detail)
        for op, c, o in results
        if not (o.kind == "ok" or (op == "freeze" and o.kind == "insufficient"))
    ]
    assert not bad, f"{len(bad)} unexpected outcomes, e.g. {bad[:5]}"
    assert len(results) == OPERATIONS
    assert followups, "no settle/refund ran: not a useful storm"
    assert ft["insufficient"] > 0, "storm never ran out of funds: not a useful storm"

    # per-request expected final status
    expect_status = {}
    settled_actual = {u: 0 for u in USERS}
    for op, c, o in results:
        uid, amount, actual, rid = c
        if o.kind != "ok":
            continue
        if op == "freeze":
            expect_status.setdefault(rid, "frozen")
        elif op == "settle":
            expect_status[rid] = "settled"
            settled_actual[uid] += actual
        elif op == "refund":
            expect_status[rid] = "refunded"
    logs = {r[0]: (r[1], r[2], r[3]) for r in legacy_db.logs()}
    assert set(logs) == set(expect_status), "log rows do not match the successful freezes"
    for rid, st_ in expect_status.items():
        assert logs[rid][2] == st_, f"request {rid}: log status {logs[rid][2]}, expected {st_}"

    for u in USERS:
        balance, frozen = legacy_db.user(u)
        assert balance - frozen >= 0, (u, balance, frozen)
        assert frozen >= 0, (u, frozen)
        assert frozen == legacy_db.sum_logs(u, "frozen"), (u, frozen, legacy_db.sum_logs(u, "frozen"))
        assert balance == INITIAL - settled_actual[u], (u, balance, INITIAL - settled_actual[u])
    assert not mon["violations"], f"invariant broken mid-run: {mon['violations'][:5]}"
