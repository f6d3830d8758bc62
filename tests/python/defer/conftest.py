"""Fixtures for the `defer_writes` differential tests.

- ``thaws``: two module-scoped thaws on the shipped billing rules, ``plain``
  (as shipped) and ``defer`` (``defer_writes: true`` on both tables).
- ``endpoints``: {"direct", "plain", "defer"} -> safety.harness.Endpoint.
- ``make_thaw(yaml_text)``: a thaw with its own rules file, for cases that
  need another rule (stopped at teardown).
On failure the tail of every thaw log is attached to the report.
"""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

TESTS_PY = Path(__file__).resolve().parent.parent
if str(TESTS_PY) not in sys.path:
    sys.path.insert(0, str(TESTS_PY))

from conftest import DIRECT_HOST, DIRECT_PORT  # noqa: E402
from safety.deferral import with_defer_writes  # noqa: E402
from safety.harness import Endpoint  # noqa: E402
from thawproc import REPO_ROOT, ThawProc  # noqa: E402

BILLING = (REPO_ROOT / "rules" / "billing.yaml").read_text()


@dataclass
class Thaws:
    plain: ThawProc
    defer: ThawProc


@pytest.fixture(scope="module")
def thaws(tmp_path_factory):
    d = tmp_path_factory.mktemp("defer-rules")
    (d / "plain.yaml").write_text(BILLING)
    (d / "defer.yaml").write_text(with_defer_writes(BILLING))
    with ThawProc(rules=str(d / "plain.yaml")) as plain, ThawProc(rules=str(d / "defer.yaml")) as defer:
        yield Thaws(plain, defer)


@pytest.fixture
def endpoints(thaws, request):
    request.node.__dict__["_defer_thaws"] = [thaws.plain, thaws.defer]
    return {
        "direct": Endpoint("direct", DIRECT_HOST, DIRECT_PORT),
        "plain": Endpoint("plain", thaws.plain.host, thaws.plain.port),
        "defer": Endpoint("defer", thaws.defer.host, thaws.defer.port),
    }


@pytest.fixture
def make_thaw(tmp_path, request):
    procs = []

    def start(rules_yaml: str) -> ThawProc:
        path = tmp_path / f"rules-{len(procs)}.yaml"
        path.write_text(textwrap.dedent(rules_yaml))
        t = ThawProc(rules=str(path))
        procs.append(t)
        t.start()
        request.node.__dict__.setdefault("_defer_thaws", []).append(t)
        return t

    yield start
    for t in procs:
        t.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for i, t in enumerate(item.__dict__.get("_defer_thaws", [])):
            rep.sections.append((f"thaw #{i} log (tail)", t.log_text()[-6000:] or "<empty>"))
