"""/readyz follows the backend: 503 while it is down, 200 once it is back.
The backend is a throwaway MariaDBInstance; the machine's main server is not touched."""
from __future__ import annotations

import pymysql
import pytest

from mariadb_instance import MariaDBInstance
from ops.helpers import http_get, wait_for


@pytest.fixture(scope="module")
def backend():
    with MariaDBInstance() as db:
        conn = pymysql.connect(host="127.0.0.1", port=db.port, user="root", password="", autocommit=True)
        with conn.cursor() as cur:
            cur.execute("CREATE USER 'thaw_probe'@'127.0.0.1' IDENTIFIED BY 'probe-secret'")
        conn.close()
        yield db


def readyz(t):
    return http_get(t.admin_port, "/readyz")


def flip_and_back(t, db):
    assert wait_for(lambda: readyz(t)[0] == 200, what="/readyz 200 with the backend up")
    db.stop()
    status, body = wait_for(lambda: (r := readyz(t))[0] == 503 and r, what="/readyz 503 with the backend stopped")
    assert body.startswith("not ready: "), body
    assert http_get(t.admin_port, "/livez") == (200, "ok\n"), "liveness must not follow the backend"
    db.start()
    assert wait_for(lambda: readyz(t) == (200, "ready\n"), timeout=30, what="/readyz 200 after the backend restarted")
    # and thaw relays again
    conn = pymysql.connect(host=t.host, port=t.port, user="root", password="", connect_timeout=5)
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    conn.close()
    return body


def test_readyz_follows_backend_tcp_greeting(start_thaw, backend):
    t = start_thaw(backend=f"127.0.0.1:{backend.port}")
    body = flip_and_back(t, backend)
    assert "refused" in body.lower() or "timed out" in body, body


def test_readyz_follows_backend_with_probe_credentials(start_thaw, backend, tmp_path):
    cfg = tmp_path / "thaw.yaml"
    cfg.write_text("probe:\n  user: thaw_probe\n  password: probe-secret\n")
    t = start_thaw(backend=f"127.0.0.1:{backend.port}", config=str(cfg))
    flip_and_back(t, backend)


def test_readyz_probe_with_wrong_password_is_not_ready(start_thaw, backend, tmp_path):
    """With probe credentials readiness really logs in: a bad password is 503."""
    cfg = tmp_path / "thaw.yaml"
    cfg.write_text("probe:\n  user: thaw_probe\n  password: wrong\n")
    t = start_thaw(backend=f"127.0.0.1:{backend.port}", config=str(cfg))
    status, body = readyz(t)
    assert status == 503, body
    assert "denied" in body.lower(), body
