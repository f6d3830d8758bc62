"""Shared pytest fixtures for thaw's Python tests.

Fixtures:
  thaw         session-scoped ThawProc with no rules (empty rules dir)
  direct_addr  (host, port) of MariaDB itself
  thaw_addr    (host, port) of the session thaw
  db_name      a fresh database `thaw_t_<unique>` for one test, dropped after

All tests share one MariaDB: use unique database/user names and restore any
GLOBAL variable you change (see `global_var`). MariaDB must be running: a test
that needs it fails loudly when it is absent, it is never skipped.
"""

from __future__ import annotations

import os
import sys
import uuid
from contextlib import contextmanager

import pymysql
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from thawproc import ThawProc  # noqa: E402

DIRECT_HOST = os.environ.get("THAW_TEST_DB_HOST", "127.0.0.1")
DIRECT_PORT = int(os.environ.get("THAW_TEST_DB_PORT", "3306"))
DB_USER = "root"
DB_PASSWORD = ""


def admin_connect(**kw) -> pymysql.connections.Connection:
    """A root connection straight to MariaDB (for setup/teardown, never compared)."""
    try:
        return pymysql.connect(
            host=DIRECT_HOST, port=DIRECT_PORT, user=DB_USER, password=DB_PASSWORD,
            autocommit=True, connect_timeout=5, read_timeout=120, write_timeout=120, **kw,
        )
    except pymysql.err.OperationalError as e:
        raise RuntimeError(
            f"MariaDB is not reachable at {DIRECT_HOST}:{DIRECT_PORT} as root ({e}); "
            "start it (scripts/test.sh does) before running the tests"
        ) from e


def admin_exec(*sqls: str):
    conn = admin_connect()
    try:
        with conn.cursor() as cur:
            for sql in sqls:
                cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def unique_name(prefix: str = "thaw_t_") -> str:
    return prefix + uuid.uuid4().hex[:12]


@contextmanager
def global_var(name: str, value):
    """Set a GLOBAL server variable for the duration of a block, then restore it."""
    conn = admin_connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT @@GLOBAL.{name}")
            (old,) = cur.fetchone()
            cur.execute(f"SET GLOBAL {name} = %s", (value,))
        yield old
    finally:
        try:
            with conn.cursor() as cur:
                cur.execute(f"SET GLOBAL {name} = %s", (old,))
        finally:
            conn.close()


@pytest.fixture(scope="session", autouse=True)
def _mariadb_is_up():
    """Fail every test (loudly) if MariaDB does not answer."""
    rows = admin_exec("SELECT VERSION()")
    assert rows and "MariaDB" in rows[0][0], f"unexpected server at {DIRECT_HOST}:{DIRECT_PORT}: {rows}"


@pytest.fixture(scope="session")
def thaw():
    proc = ThawProc()
    proc.start()
    yield proc
    rc = proc.stop()
    print(f"\n[thaw session proc exited with {rc}]")


@pytest.fixture(scope="session")
def direct_addr():
    return (DIRECT_HOST, DIRECT_PORT)


@pytest.fixture(scope="session")
def thaw_addr(thaw):
    return (thaw.host, thaw.port)


@pytest.fixture
def db_name():
    name = unique_name()
    admin_exec(f"CREATE DATABASE `{name}`")
    yield name
    admin_exec(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the tail of the session thaw's log to the report."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and "thaw" in getattr(item, "fixturenames", ()):
        proc = item.funcargs.get("thaw") if hasattr(item, "funcargs") else None
        if isinstance(proc, ThawProc):
            tail = proc.log_text()[-8000:]
            rep.sections.append(("thaw log (tail)", tail or "<empty>"))
