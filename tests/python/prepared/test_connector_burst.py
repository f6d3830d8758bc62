"""The seed app's check-then-freeze flow over mysql-connector-python
``cursor(prepared=True)``: a same-user burst and the insufficient-funds case.

Direct, the prepared ``SELECT ... FOR UPDATE`` serialises the burst on the
row lock and some requests die with 1205 (asserted: the test exercises the
problem). Through thaw (issue 9) the prepared read runs unlocked and the
prepared absolute UPDATE becomes a guarded delta: every request succeeds,
nobody overdraws, the books are exact. Run for BIGINT and DECIMAL(18,2).
"""

from __future__ import annotations

import pytest

from legacy import legacy_harness as H
from prepared import support as S

BURST = 100
K, N = 7, 30


def _burst(endpoint, db, amount, n):
    conns = [S.connect(endpoint, db.name) for _ in range(n)]
    overlap = S.Overlap()
    ids = [S.request_id() for _ in range(n)]
    try:
        outcomes = S.run_threads([lambda c=c, rid=rid: S.check_and_freeze(c, amount, rid, overlap) for c, rid in zip(conns, ids)])
    finally:
        for c in conns:
            c.close()
    return ids, outcomes, overlap.max


def _assert_books(db, ids, outcomes, pre_frozen=0):
    balance, frozen = db.user(S.USER)
    ok_ids = {rid for rid, o in zip(ids, outcomes) if isinstance(o, S.Outcome) and o.kind == "ok"}
    assert frozen - pre_frozen == db.sum_logs(S.USER, "frozen"), "frozen_balance != sum of freeze logs"
    assert {r[0] for r in db.logs(S.USER)} == ok_ids, "freeze logs do not match the successful requests"
    assert balance - frozen >= 0 and frozen >= 0
    return balance, frozen


def _assert_overlap(via, most):
    if via == "direct":
        assert most == 1, "direct, the row lock serialises read..write"
    else:
        assert most > 1, f"the prepared FOR UPDATE still serialised the burst (overlap {most}): it was not unlocked"


@pytest.fixture
def legacy_db(request):
    db = H.create_legacy_db(decimal=request.param == "decimal")
    yield db
    H.drop_legacy_db(db)


@pytest.mark.parametrize("legacy_db", ["bigint", "decimal"], indirect=True)
def test_burst(via, endpoint, legacy_db):
    amount = S.money("6.16" if legacy_db.decimal else 616, legacy_db.decimal)
    initial = amount * BURST * 2
    legacy_db.seed_users({S.USER: initial})
    ids, outcomes, most = _burst(endpoint, legacy_db, amount, BURST)
    t = S.tally(outcomes)
    print(f"{via} burst: {t}, overlap {most}")
    _assert_overlap(via, most)
    if via == "direct":
        assert t.get("error:1205", 0) >= 1, f"no 1205 direct: the burst does not queue ({t})"
        assert t.get("ok", 0) + t.get("error:1205", 0) == BURST, f"{t} {S.errors(outcomes)}"
        _assert_books(legacy_db, ids, outcomes)
    else:
        assert t == {"ok": BURST}, f"{t} {S.errors(outcomes)}"
        balance, frozen = _assert_books(legacy_db, ids, outcomes)
        assert (balance, frozen) == (initial, amount * BURST)


@pytest.mark.parametrize("legacy_db", ["bigint", "decimal"], indirect=True)
def test_insufficient_funds_exactly_k_succeed(via, endpoint, legacy_db):
    dec = legacy_db.decimal
    amount = S.money("6.16" if dec else 616, dec)
    pre_frozen = S.money("3.33" if dec else 333, dec)  # the absolute writes start from non-zero
    initial = amount * K + pre_frozen
    legacy_db.seed_users({S.USER: initial})
    legacy_db.query("UPDATE users SET frozen_balance = %s WHERE id = %s", (pre_frozen, S.USER))
    ids, outcomes, most = _burst(endpoint, legacy_db, amount, N)
    t = S.tally(outcomes)
    sources = [o.source for o in outcomes if isinstance(o, S.Outcome) and o.kind == "insufficient"]
    print(f"{via} funds: {t}, rejected by app={sources.count('app')} db={sources.count('db')}, overlap {most}")
    _assert_overlap(via, most)
    for o in outcomes:
        if isinstance(o, S.Outcome) and o.source == "db":
            assert "insufficient balance" in o.detail.lower(), o.detail
    balance, frozen = _assert_books(legacy_db, ids, outcomes, pre_frozen)
    if via == "direct":
        assert t.get("ok", 0) + t.get("insufficient", 0) + t.get("error:1205", 0) == N, f"{t} {S.errors(outcomes)}"
        assert t.get("ok", 0) <= K
    else:
        assert t == {"ok": K, "insufficient": N - K}, f"{t} {S.errors(outcomes)}"
        assert (balance, frozen) == (initial, pre_frozen + amount * K)
