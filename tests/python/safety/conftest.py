"""Fixtures for the differential safety suite.

- ``via``: parametrizes a test over "direct" (MariaDB itself: checks the
  scenario and the harness) and "thaw" (the binary in $THAW_BIN).
- ``subject``: the Endpoint for ``via``; for "thaw" it is ``billing_thaw``,
  a module-scoped ThawProc with the shipped rules/billing.yaml (with
  ``defer_writes: true`` on every table when THAW_SAFETY_DEFER=1, see
  ``safety.deferral``).
- ``direct``: the Endpoint of MariaDB (the reference runs).
- ``make_thaw(yaml_text)``: a ThawProc with its own rules file (stopped at
  teardown), for cases that need another rule (deferred too under
  THAW_SAFETY_DEFER=1).
On failure the tail of every thaw log the test used is attached to the report.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

# tests/python (shared conftest helpers, thawproc) must be importable; this
# folder is a package, so this file never shadows the top-level "conftest".
TESTS_PY = Path(__file__).resolve().parent.parent
if str(TESTS_PY) not in sys.path:
    sys.path.insert(0, str(TESTS_PY))

from conftest import DIRECT_HOST, DIRECT_PORT  # noqa: E402
from safety.deferral import DEFER, metric_total, with_defer_writes  # noqa: E402
from safety.harness import Endpoint  # noqa: E402
from thawproc import REPO_ROOT, ThawProc  # noqa: E402

BILLING_RULES = REPO_ROOT / "rules" / "billing.yaml"
# Under THAW_SAFETY_DEFER=1: what the billing thaws deferred, summed over the
# modules. A deferred run in which nothing was held back proved nothing.
_DEFERRED = {"writes": 0.0, "committed": 0.0}


def rules_file(path: Path, yaml_text: str) -> Path:
    """Write the rules a case runs under (deferred under THAW_SAFETY_DEFER=1)."""
    path.write_text(with_defer_writes(yaml_text) if DEFER else yaml_text)
    return path


@pytest.fixture(scope="module")
def billing_thaw(tmp_path_factory):
    rules = rules_file(tmp_path_factory.mktemp("billing") / "billing.yaml", BILLING_RULES.read_text())
    with ThawProc(rules=str(rules)) as t:
        yield t
        if DEFER:
            _DEFERRED["writes"] += metric_total(t.admin_port, "thaw_deferred_writes_total")
            _DEFERRED["committed"] += metric_total(t.admin_port, "thaw_deferred_committed_total")


@pytest.fixture(params=["direct", "thaw"])
def via(request):
    return request.param


@pytest.fixture
def direct():
    return Endpoint("direct", DIRECT_HOST, DIRECT_PORT)


def _remember(request, proc):
    request.node.__dict__.setdefault("_safety_thaws", []).append(proc)


@pytest.fixture
def subject(via, request, direct):
    if via == "direct":
        return direct
    t = request.getfixturevalue("billing_thaw")
    _remember(request, t)
    return Endpoint("thaw", t.host, t.port)


@pytest.fixture
def make_thaw(tmp_path, request):
    procs = []

    def start(rules_yaml: str) -> ThawProc:
        path = rules_file(tmp_path / f"rules-{len(procs)}.yaml", textwrap.dedent(rules_yaml))
        t = ThawProc(rules=str(path))
        procs.append(t)
        t.start()
        _remember(request, t)
        return t

    yield start
    for t in procs:
        t.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for i, t in enumerate(item.__dict__.get("_safety_thaws", [])):
            rep.sections.append((f"thaw #{i} log (tail)", t.log_text()[-6000:] or "<empty>"))


def pytest_sessionfinish(session, exitstatus):
    if not DEFER or session.testscollected == 0 or exitstatus != 0:
        return
    if _DEFERRED["writes"] == 0 or _DEFERRED["committed"] == 0:
        print(f"\nTHAW_SAFETY_DEFER=1 but the billing thaws deferred {_DEFERRED}: the run proved nothing")
        session.exitstatus = 1
    else:
        print(f"\n[safety, defer_writes] billing thaws held back {_DEFERRED['writes']:.0f} writes,"
              f" committed {_DEFERRED['committed']:.0f} with their COMMIT")
