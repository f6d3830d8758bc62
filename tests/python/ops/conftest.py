"""Fixtures for the operations tests. Each test starts its own thaw so that
counters start from a known state and signals reach only that process."""
from __future__ import annotations

import pytest

from ops.helpers import http_get, wait_for
from thawproc import ThawProc


def admin_up(t: ThawProc) -> None:
    """ThawProc.start() returns once the MySQL port listens; the admin port
    is bound a moment later."""
    def answers():
        try:
            return http_get(t.admin_port, "/livez", timeout=1)[0] == 200
        except OSError:
            return False
    wait_for(answers, timeout=10, what=f"thaw's admin port {t.admin_port} to answer /livez")


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
        admin_up(t)
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
