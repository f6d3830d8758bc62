"""Conversation stats: NOWAIT lock, absolute counters.

The rule for conversations is "unlock, last-writer-wins": through thaw the
NOWAIT lock is dropped, so concurrent increments never fail with a lock
error (they CAN lose increments, by design: only success is asserted).
Sequential increments on one connection must count exactly.
"""

from __future__ import annotations

import pytest

from legacy import legacy_harness as H

pytestmark = pytest.mark.asyncio

CONV = 77
N = 50
LOCK_ERRORS = {1205, 3572}


@pytest.mark.parametrize("via", ["direct"])
async def test_conversation_nowait_direct_shows_lock_errors(via, legacy_db, make_app):
    legacy_db.seed_conversation(CONV)
    app = await make_app(legacy_db)
    await H.warm_pool(app, N)
    outcomes = await H.run_concurrently([lambda: app.record_message(CONV, 10) for _ in range(N)])
    t = H.tally(outcomes)
    print(f"direct conversation nowait: {dict(t)}")
    assert any(o.code in LOCK_ERRORS for o in outcomes), f"no lock error directly: {dict(t)}"
    assert all(o.kind == "ok" or o.code in LOCK_ERRORS for o in outcomes), H.error_summary(outcomes)


@pytest.mark.parametrize("via", ["thaw"])
async def test_conversation_concurrent_increments_through_thaw(via, legacy_db, make_app):
    legacy_db.seed_conversation(CONV)
    app = await make_app(legacy_db)
    await H.warm_pool(app, N)
    outcomes = await H.run_concurrently([lambda: app.record_message(CONV, 10) for _ in range(N)])
    t = H.tally(outcomes)
    (row,) = legacy_db.query("SELECT message_count, total_tokens FROM conversations WHERE id = %s", (CONV,))
    print(f"thaw conversation nowait: {dict(t)}; final message_count={row[0]} total_tokens={row[1]}")
    assert not [o for o in outcomes if o.code in LOCK_ERRORS], f"lock errors through thaw: {dict(t)}"
    assert t["ok"] == N, f"{dict(t)}: {H.error_summary(outcomes)}"


@pytest.mark.parametrize("via", ["direct", "thaw"])
async def test_conversation_sequential_increments_count_exactly(via, legacy_db, make_app):
    legacy_db.seed_conversation(CONV)
    app = await make_app(legacy_db, pool_size=1)
    for i in range(10):
        await app.record_message(CONV, i + 1)
    (row,) = legacy_db.query("SELECT message_count, total_tokens FROM conversations WHERE id = %s", (CONV,))
    assert tuple(row) == (10, 55)
