"""Fixtures for the backend-TLS tests.

- ``pki``: a throwaway CA, a server certificate for 127.0.0.1 (CN and
  subjectAltName IP:127.0.0.1), an unrelated CA and a certificate for the
  wrong name, made with the openssl CLI (module tmp dir).
- ``tls_server``: a throwaway mariadbd with --ssl-cert/--ssl-key/--ssl-ca
  (and a 64M max_allowed_packet for the big-blob test).
- ``secure_only_server``: the same plus --require-secure-transport=ON.
- ``plain_server``: a throwaway mariadbd without TLS.
- ``make_thaw(config_path, backend_port)``: a ThawProc per call, stopped at
  teardown; its log is attached to the report when the test fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pymysql
import pytest

# tests/python (the shared thawproc and mariadb_instance, and this package's
# parent) must be importable in any pytest import mode. This folder is a
# package, so this file never shadows the shared top-level "conftest".
TESTS_PY = Path(__file__).resolve().parent.parent
if str(TESTS_PY) not in sys.path:
    sys.path.insert(0, str(TESTS_PY))

from tls import tls_support as T  # noqa: E402
from mariadb_instance import MariaDBInstance  # noqa: E402
from thawproc import ThawProc  # noqa: E402


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return T.make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(pki):
    with MariaDBInstance(T.server_args(pki.server_cert, pki.server_key, pki.ca) + ["--max-allowed-packet=64M"]) as db:
        yield db


@pytest.fixture(scope="module")
def secure_only_server(pki):
    # Same effect as starting with --require-secure-transport=ON: MariaDBInstance's
    # readiness probe connects in plain text, so the server would never look ready.
    # The variable is dynamic; plain-text sessions are refused from here on.
    with MariaDBInstance(T.server_args(pki.server_cert, pki.server_key, pki.ca)) as db:
        conn = pymysql.connect(host="127.0.0.1", port=db.port, user="root", password="", autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute("SET GLOBAL require_secure_transport = ON")
        finally:
            conn.close()
        yield db


@pytest.fixture(scope="module")
def wrong_name_server(pki):
    with MariaDBInstance(T.server_args(pki.wrong_name_cert, pki.wrong_name_key, pki.ca)) as db:
        yield db


@pytest.fixture(scope="module")
def plain_server():
    with MariaDBInstance([]) as db:
        yield db


@pytest.fixture
def make_thaw(request):
    procs: list[ThawProc] = []

    def start(config: Path, backend_port: int) -> ThawProc:
        t = ThawProc(backend=f"127.0.0.1:{backend_port}", config=str(config))
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
