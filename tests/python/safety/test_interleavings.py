"""Seeded, bounded concurrency property test of the billing books, direct and through thaw.

Each seed generates a workload (interleave_support.generate): 3-4 connections, ~40 legacy-style
transactions in all (freeze / settle / refund / top-up / rename, with re-read and savepoint
variants), random small sleeps between statements, the app's retry loop on 1213/1205 and its
"insufficient balance" handling of 1644. After the run the books must be exact:

  * balance - frozen_balance >= 0 and frozen_balance >= 0 for every user;
  * frozen_balance == sum(amount) of the user's logs with status 'frozen';
  * balance == initial + committed top-ups - sum(amount) of the user's settled logs;
  * every transaction the app believes committed is in the database exactly once (log rows and
    their status, username rename chain), and no log exists for a freeze whose transaction failed.

The direct run (straight to MariaDB, innodb_lock_wait_timeout=2) is the reference that the
checks themselves are right; the thaw run goes through ThawProc(rules=rules/billing.yaml).

Seeds: SEEDS below, plus THAW_FUZZ_SEEDS="7,8,100-120" to run more (THAW_FUZZ_TX sets the
transactions per seed, default 40). A failure prints the seed, the workload, the outcomes and the
interleaved statement transcript.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TESTS_PY = HERE.parent
for p in (str(TESTS_PY), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import interleave_support as S  # noqa: E402
from thawproc import ThawProc  # noqa: E402

SEEDS = [11, 23, 37, 41, 58, 64]
N_TX = int(os.environ.get("THAW_FUZZ_TX", "40"))


def _extra_seeds() -> list[int]:
    out: list[int] = []
    for part in os.environ.get("THAW_FUZZ_SEEDS", "").replace(" ", "").split(","):
        if not part:
            continue
        if "-" in part[1:]:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(part))
    return out


ALL_SEEDS = SEEDS + [s for s in _extra_seeds() if s not in SEEDS]


# billing_thaw is the suite's (conftest.py): rules/billing.yaml, deferred under THAW_SAFETY_DEFER=1.


def _run_and_check(route: str, host: str, port: int, db: str, seed: int, thaw: ThawProc | None = None):
    wl = S.generate(seed, n_tx=N_TX)
    S.setup_schema(db, wl)
    log_mark = len(thaw.log_text()) if thaw is not None else 0
    res = S.run_workload(host, port, db, wl)
    print(f"[{route}] {res.summary()}")
    problems = S.check_books(db, res)
    if thaw is not None and not thaw.running():
        problems.append(f"thaw exited (rc {thaw.proc.poll() if thaw.proc else thaw.returncode})")
    if problems:
        extra = ""
        if thaw is not None:
            extra = "thaw log during this run (tail):\n" + thaw.log_text()[log_mark:][-8000:]
        pytest.fail(S.report(db, res, problems, route, extra), pytrace=False)


@pytest.mark.parametrize("seed", ALL_SEEDS)
def test_interleavings_direct(seed, db_name, direct_addr):
    """The reference: the same workloads straight to MariaDB keep the books exact."""
    _run_and_check("direct", direct_addr[0], direct_addr[1], db_name, seed)


@pytest.mark.parametrize("seed", ALL_SEEDS)
def test_interleavings_through_thaw(seed, db_name, billing_thaw):
    """Through thaw (billing rules: unlocked reads, delta + guard writes, CAS username)."""
    _run_and_check("thaw", billing_thaw.host, billing_thaw.port, db_name, seed, billing_thaw)
