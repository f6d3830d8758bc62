"""Fixtures for the differential safety suite.

- ``via``: parametrizes a test over "direct" (MariaDB itself: checks the
  scenario and the harness) and "thaw" (the binary in $THAW_BIN).
- ``subject``: the Endpoint for ``via``; for "thaw" it is ``billing_thaw``,
  a module-scoped ThawProc with the shipped rules/billing.yaml.
- ``direct``: the Endpoint of MariaDB (the reference runs).
- ``make_thaw(yaml_text)``: a ThawProc with its own rules file (stopped at
  teardown), for cases that need another rule.
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
from safety.harness import Endpoint  # noqa: E402
from thawproc import REPO_ROOT, ThawProc  # noqa: E402

BILLING_RULES = REPO_ROOT / "rules" / "billing.yaml"


@pytest.fixture(scope="module")
def billing_thaw():
    with ThawProc(rules=str(BILLING_RULES)) as t:
        yield t


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
        path = tmp_path / f"rules-{len(procs)}.yaml"
        path.write_text(textwrap.dedent(rules_yaml))
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
