"""Fixtures for the issue 9 proof tests (prepared statements get the same
rewrite as text).

- ``prepared_thaw``: a module-scoped ThawProc whose rules folder holds the
  shipped rules/billing.yaml and ``prep_typed.yaml`` (TYPED_RULES: the
  all-types table of the fidelity tests, governed so that its prepared
  locking reads and UPDATEs take the rewritten path).
- ``via``: "direct" (MariaDB itself: checks the scenario) or "thaw".
- ``endpoint``: (host, port) for ``via``.
- ``fresh_db``: a database of the test's own, dropped afterwards.
- ``make_thaw(yaml)``: a ThawProc with its own rules file.
On failure the tail of every thaw log the test used is attached.
"""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

import pytest

TESTS_PY = Path(__file__).resolve().parent.parent
if str(TESTS_PY) not in sys.path:
    sys.path.insert(0, str(TESTS_PY))

from conftest import DIRECT_HOST, DIRECT_PORT, admin_exec, unique_name  # noqa: E402
from thawproc import REPO_ROOT, ThawProc  # noqa: E402

BILLING_RULES = REPO_ROOT / "rules" / "billing.yaml"
# Every column not named is compare-and-set: thaw captures the row of a
# prepared locking read and CAS-guards a prepared UPDATE of it.
TYPED_RULES = """\
tables:
  - table: prep_typed
    key: id
    unlock: true
"""


def _remember(request, proc):
    request.node.__dict__.setdefault("_prepared_thaws", []).append(proc)


@pytest.fixture(scope="module")
def prepared_thaw(tmp_path_factory):
    rules = tmp_path_factory.mktemp("prepared-rules")
    shutil.copy(BILLING_RULES, rules / "billing.yaml")
    (rules / "prep_typed.yaml").write_text(TYPED_RULES)
    with ThawProc(rules=str(rules)) as t:
        yield t


@pytest.fixture(params=["direct", "thaw"])
def via(request):
    return request.param


@pytest.fixture
def endpoint(via, request):
    if via == "direct":
        return (DIRECT_HOST, DIRECT_PORT)
    t = request.getfixturevalue("prepared_thaw")
    _remember(request, t)
    return (t.host, t.port)


@pytest.fixture
def fresh_db():
    name = unique_name("thaw_prep_")
    admin_exec(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
    yield name
    admin_exec(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def make_thaw(tmp_path, request):
    procs = []

    def start(rules_yaml: str, **kw) -> ThawProc:
        path = tmp_path / f"rules-{len(procs)}.yaml"
        path.write_text(textwrap.dedent(rules_yaml))
        t = ThawProc(rules=str(path), **kw)
        procs.append(t)
        t.start()
        _remember(request, t)
        return t

    yield start
    for t in procs:
        t.cleanup()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for i, t in enumerate(item.__dict__.get("_prepared_thaws", [])):
            rep.sections.append((f"thaw #{i} log (tail)", t.log_text()[-6000:] or "<empty>"))
