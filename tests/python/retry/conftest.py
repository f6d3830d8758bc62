"""Fixtures for the lock-error retry/replay tests.

- ``db``: a fresh database with tables ``acct`` (id, v) and ``log`` (AUTO_INCREMENT)
  on the shared MariaDB (127.0.0.1:3306), dropped afterwards.
- ``make_thaw(retry={...}, backend=...)``: a ThawProc per call with a config
  file holding that ``retry:`` section; stopped at teardown, and its log is
  attached to the report when the test fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# tests/python (the shared thawproc and mariadb_instance, and this package's
# parent) must be importable in any pytest import mode. This folder is a
# package, so this file never shadows the shared top-level "conftest".
TESTS_PY = Path(__file__).resolve().parent.parent
if str(TESTS_PY) not in sys.path:
    sys.path.insert(0, str(TESTS_PY))

from retry import retry_support as R  # noqa: E402
from thawproc import ThawProc  # noqa: E402

SHARED_PORT = 3306


@pytest.fixture
def db():
    name = R.create_db(SHARED_PORT)
    yield name
    R.drop_db(SHARED_PORT, name)


@pytest.fixture
def make_thaw(tmp_path, request):
    procs: list[ThawProc] = []

    def start(retry: dict | None = None, backend: str = f"127.0.0.1:{SHARED_PORT}", extra: str = "") -> ThawProc:
        cfg = R.write_config(tmp_path / f"thaw-{len(procs)}.yaml", retry, extra)
        t = ThawProc(backend=backend, config=str(cfg))
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
