"""Fixtures for the operations tests. Each test starts its own thaw so that
counters start from a known state and signals reach only that process."""
from __future__ import annotations

import pytest

from thawproc import ThawProc


@pytest.fixture
def start_thaw(request):
    """start_thaw(**ThawProc kwargs) -> a started ThawProc, stopped and removed after the test.

    On failure the log of every thaw the test started is attached to the report.
    """
    procs: list[ThawProc] = []
    request.node._ops_thaws = procs

    def start(**kw) -> ThawProc:
        t = ThawProc(**kw)
        procs.append(t)
        t.start()
        return t

    yield start
    for t in procs:
        t.cleanup()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for i, t in enumerate(getattr(item, "_ops_thaws", ())):
            rep.sections.append((f"thaw #{i} log (tail)", t.log_text()[-6000:] or "<empty>"))
