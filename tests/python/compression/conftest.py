"""Fixtures for the compressed-protocol tests (issue 13).

- ``make_thaw(config_text, **ThawProc kwargs)``: a ThawProc with that YAML
  config, stopped at teardown; its log is attached to a failing report.

The differential re-run of the fidelity suite (test_fidelity.py) brings its
own per-mode thaw.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# tests/python (thawproc, the shared conftest, the fidelity package) must be
# importable in any pytest import mode.
TESTS_PY = Path(__file__).resolve().parent.parent
if str(TESTS_PY) not in sys.path:
    sys.path.insert(0, str(TESTS_PY))

from thawproc import ThawProc  # noqa: E402


@pytest.fixture
def make_thaw(request, tmp_path):
    procs: list[ThawProc] = []

    def start(config: str = "", **kw) -> ThawProc:
        path = tmp_path / f"thaw-{len(procs)}.yaml"
        path.write_text(config)
        t = ThawProc(config=str(path), **kw)
        procs.append(t)
        t.start()
        return t

    request.node._thaw_procs = procs
    yield start
    for t in procs:
        t.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for i, t in enumerate(getattr(item, "_thaw_procs", [])):
            rep.sections.append((f"thaw #{i} log (tail)", t.log_text()[-6000:] or "<empty>"))
