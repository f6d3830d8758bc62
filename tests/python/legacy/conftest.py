"""Fixtures for the legacy-app end-to-end tests.

- ``lock_wait_timeout``: innodb_lock_wait_timeout lowered GLOBALLY to 2 s for
  the test and restored afterwards.  Engines (and thaw's backend
  connections) are created after it, so their sessions start with 2 s.
- ``legacy_db`` / ``legacy_db_decimal``: a fresh database
  ``thaw_legacy_<uuid8>`` with the legacy schema, dropped afterwards.
- ``endpoint``: (host, port) the app connects to, for ``via`` = "direct"
  (MariaDB) or "thaw" (``legacy_thaw``: a ThawProc per test running the
  shipped rules/billing.yaml).
- ``make_app``: builds LegacyBillingApp instances on an endpoint, disposed at
  teardown.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import pytest_asyncio

# tests/python (the shared thawproc, and this package's parent) must be
# importable in any pytest import mode.  This folder is a package
# ("legacy"), so this file is "legacy.conftest" and never shadows the shared
# top-level "conftest" module other tests import helpers from.
TESTS_PY = Path(__file__).resolve().parent.parent
if str(TESTS_PY) not in sys.path:
    sys.path.insert(0, str(TESTS_PY))

from legacy import legacy_harness as H  # noqa: E402

TEST_LOCK_WAIT_TIMEOUT = 2


@pytest.fixture
def lock_wait_timeout():
    (row,) = H.admin_query(None, "SELECT @@GLOBAL.innodb_lock_wait_timeout")
    previous = int(row[0])
    H.admin_query(None, f"SET GLOBAL innodb_lock_wait_timeout = {TEST_LOCK_WAIT_TIMEOUT}")
    try:
        yield TEST_LOCK_WAIT_TIMEOUT
    finally:
        H.admin_query(None, f"SET GLOBAL innodb_lock_wait_timeout = {previous}")


@pytest.fixture
def legacy_db():
    db = H.create_legacy_db(decimal=False)
    try:
        yield db
    finally:
        H.drop_legacy_db(db)


@pytest.fixture
def legacy_db_decimal():
    db = H.create_legacy_db(decimal=True)
    try:
        yield db
    finally:
        H.drop_legacy_db(db)


@pytest.fixture
def legacy_thaw(request, lock_wait_timeout):
    """thaw with the shipped rules, in front of the local MariaDB (one per test:
    its backend connections start after the lock-wait-timeout change)."""
    from thawproc import ThawProc  # shared helper: tests/python/thawproc.py

    assert H.RULES.is_file(), f"shipped rules file missing: {H.RULES}"
    proc = ThawProc(rules=str(H.RULES), backend=f"{H.MARIADB_HOST}:{H.MARIADB_PORT}")
    try:
        proc.start()
        request.node.legacy_thaw_proc = proc  # for the failure report below
        yield proc
    finally:
        rc = proc.stop()
        if rc not in (0, None):
            print(f"[legacy thaw exited with {rc}]")
        proc.cleanup()


@pytest.fixture
def endpoint(request, via, lock_wait_timeout):
    if via == "direct":
        return (H.MARIADB_HOST, H.MARIADB_PORT)
    if via == "thaw":
        proc = request.getfixturevalue("legacy_thaw")
        return (proc.host, proc.port)
    raise ValueError(via)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the tail of this test's thaw log to the report."""
    outcome = yield
    rep = outcome.get_result()
    proc = getattr(item, "legacy_thaw_proc", None)
    if rep.failed and proc is not None:
        rep.sections.append(("legacy thaw log (tail)", proc.log_text()[-8000:] or "<empty>"))


@pytest_asyncio.fixture
async def make_app(endpoint):
    apps = []

    async def factory(db: H.LegacyDB, *, pool_size: int | None = 110):
        host, port = endpoint
        engine = H.legacy_app.make_engine(host, port, db.name, pool_size=pool_size)
        app = H.legacy_app.LegacyBillingApp(engine, decimal=db.decimal)
        apps.append(app)
        # the session must see the lowered timeout (new connection after the change)
        from sqlalchemy import text

        async with engine.connect() as c:
            v = (await c.execute(text("SELECT @@SESSION.innodb_lock_wait_timeout"))).scalar_one()
        assert int(v) == TEST_LOCK_WAIT_TIMEOUT, f"session innodb_lock_wait_timeout={v}"
        return app

    try:
        yield factory
    finally:
        for app in apps:
            await app.dispose()
