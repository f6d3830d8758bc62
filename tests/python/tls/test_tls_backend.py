"""Backend TLS: the app speaks plain text to thaw on loopback, thaw speaks TLS
to the server (backend_tls: mode disabled | preferred | required, ca_file,
verify_identity (on by default with a ca_file), server_name).

Every case runs against a throwaway mariadbd (MariaDBInstance) with
certificates made here by the openssl CLI.

Not exercised here: caching_sha2_password full authentication over a TLS
backend leg. With a plain-text client leg the client asks for the server's
RSA key (`02`), which the TLS server would take for a wrong password, so
thaw refuses it with a clear ERR (1045, documented). MariaDB has no
caching_sha2_password plugin (its accounts use mysql_native_password or
ed25519), so that exchange cannot happen against this server; it needs a
MySQL 8 backend.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import time
import uuid

import urllib.request

import pymysql
import pytest
from pymysql.constants import CLIENT

from tls import tls_support as T

CONNECT_KW = dict(user="root", password="", connect_timeout=5, read_timeout=30, write_timeout=30)
# An error must come well before this (a hang would hit the read timeout).
ERROR_WITHIN = 10.0


def thaw_connect(thaw, **kw) -> pymysql.connections.Connection:
    """pymysql with its defaults (it would upgrade to TLS if thaw offered it)."""
    return pymysql.connect(host=thaw.host, port=thaw.port, **CONNECT_KW, **kw)


def status(conn, name: str) -> str:
    with conn.cursor() as cur:
        cur.execute("SHOW SESSION STATUS LIKE %s", (name,))
        rows = cur.fetchall()
    return rows[0][1] if rows else ""


def assert_plain_client_leg(conn):
    assert not isinstance(conn._sock, ssl.SSLSocket), "the client leg to thaw must be plain text"
    assert not conn.server_capabilities & CLIENT.SSL, "thaw must not offer TLS to the app"


def connect_error(thaw, **kw) -> tuple[BaseException, float]:
    t0 = time.monotonic()
    try:
        conn = thaw_connect(thaw, **kw)
    except pymysql.err.MySQLError as e:
        return e, time.monotonic() - t0
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
    except pymysql.err.MySQLError as e:
        return e, time.monotonic() - t0
    finally:
        conn.close()
    pytest.fail("the connection through thaw succeeded; expected an error")


# ------------------------------------------------------------------ working TLS
def test_required_verified_tls_backend_relays_plain_client(pki, tls_server, make_thaw, tmp_path):
    cfg = T.tls_config(tmp_path / "thaw.yaml", "required", ca_file=pki.ca, verify_identity=True)
    thaw = make_thaw(cfg, tls_server.port)

    # Control: a plain direct session shows an empty Ssl_cipher on this server.
    direct = pymysql.connect(host="127.0.0.1", port=tls_server.port, ssl_disabled=True, **CONNECT_KW)
    try:
        assert status(direct, "Ssl_cipher") == ""
    finally:
        direct.close()

    conn = thaw_connect(thaw)
    try:
        assert_plain_client_leg(conn)
        cipher = status(conn, "Ssl_cipher")
        assert cipher, "Ssl_cipher is empty through thaw: the backend leg is not TLS"
        assert status(conn, "Ssl_version").startswith("TLSv1."), status(conn, "Ssl_version")
        db = "thaw_tls_" + uuid.uuid4().hex[:8]
        with conn.cursor() as cur:
            cur.execute("SELECT 1 + 1, 'héllo', NULL")
            assert cur.fetchall() == ((2, "héllo", None),)
            cur.execute(f"CREATE DATABASE {db}")
            cur.execute(f"USE {db}")
            cur.execute("CREATE TABLE b (id INT PRIMARY KEY, data LONGBLOB) ENGINE=InnoDB")
            blob = os.urandom(5 * 1024 * 1024)
            cur.execute("INSERT INTO b VALUES (1, %s)", (blob,))
            assert cur.rowcount == 1
            conn.commit()
            cur.execute("SELECT LENGTH(data), SHA2(data, 256) FROM b WHERE id = 1")
            assert cur.fetchall() == ((len(blob), hashlib.sha256(blob).hexdigest()),)
            cur.execute("SELECT data FROM b WHERE id = 1")
            (back,) = cur.fetchone()
            assert back == blob, "the 5 MiB blob did not round-trip byte for byte"
            cur.execute(f"DROP DATABASE {db}")
    finally:
        conn.close()


def test_big_blob_over_tls_spans_several_packets(pki, tls_server, make_thaw, tmp_path):
    """17 MiB: the query and the row are each split into several 16 MiB protocol packets."""
    cfg = T.tls_config(tmp_path / "thaw.yaml", "required", ca_file=pki.ca, verify_identity=True)
    thaw = make_thaw(cfg, tls_server.port)
    conn = thaw_connect(thaw, max_allowed_packet=64 * 1024 * 1024)
    db = "thaw_tls_" + uuid.uuid4().hex[:8]
    try:
        assert status(conn, "Ssl_cipher")
        blob = os.urandom(17 * 1024 * 1024)
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {db}")
            cur.execute(f"CREATE TABLE {db}.b (id INT PRIMARY KEY, data LONGBLOB) ENGINE=InnoDB")
            cur.execute(f"INSERT INTO {db}.b VALUES (1, %s)", (blob,))
            conn.commit()
            cur.execute(f"SELECT data FROM {db}.b WHERE id = 1")
            (back,) = cur.fetchone()
            assert len(back) == len(blob) and back == blob
            cur.execute(f"DROP DATABASE {db}")
    finally:
        conn.close()


def test_secure_transport_server_accepts_thaw_tls_leg(pki, secure_only_server, make_thaw, tmp_path):
    # Control: the server refuses a plain-text session.
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(host="127.0.0.1", port=secure_only_server.port, ssl_disabled=True, **CONNECT_KW)

    cfg = T.tls_config(tmp_path / "thaw.yaml", "required", ca_file=pki.ca, verify_identity=True)
    thaw = make_thaw(cfg, secure_only_server.port)
    conn = thaw_connect(thaw)
    try:
        assert_plain_client_leg(conn)
        assert status(conn, "Ssl_cipher")
        with conn.cursor() as cur:
            cur.execute("SELECT @@require_secure_transport, CURRENT_USER()")
            assert cur.fetchall() == ((1, "root@127.0.0.1"),)
    finally:
        conn.close()


def test_secure_transport_server_refuses_thaw_without_tls(secure_only_server, make_thaw, tmp_path):
    cfg = T.tls_config(tmp_path / "thaw.yaml", "disabled")
    thaw = make_thaw(cfg, secure_only_server.port)
    err, took = connect_error(thaw)
    assert isinstance(err, pymysql.err.OperationalError), repr(err)
    assert took < ERROR_WITHIN, f"the refusal took {took:.1f} s"
    assert thaw.running()


def test_preferred_uses_tls_when_offered(tls_server, make_thaw, tmp_path):
    cfg = T.tls_config(tmp_path / "thaw.yaml", "preferred")
    thaw = make_thaw(cfg, tls_server.port)
    conn = thaw_connect(thaw)
    try:
        assert status(conn, "Ssl_cipher")
    finally:
        conn.close()


def test_required_without_ca_file_encrypts(tls_server, make_thaw, tmp_path):
    """No ca_file: encryption without authentication (documented, like `mysql --ssl`)."""
    cfg = T.tls_config(tmp_path / "thaw.yaml", "required")
    thaw = make_thaw(cfg, tls_server.port)
    conn = thaw_connect(thaw)
    try:
        assert status(conn, "Ssl_cipher")
    finally:
        conn.close()


def metric(thaw, name: str) -> float | None:
    body = urllib.request.urlopen(f"http://127.0.0.1:{thaw.admin_port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.split(" ")[0] == name:
            return float(line.split(" ")[1])
    return None


def test_preferred_fallback_to_plain_text_is_counted_and_warned_once(plain_server, make_thaw, tmp_path):
    """Not silent: each fallback is counted, and a WARN says so (at most one line per 10 s)."""
    cfg = T.tls_config(tmp_path / "thaw.yaml", "preferred")
    thaw = make_thaw(cfg, plain_server.port)
    assert metric(thaw, "thaw_backend_tls_fallbacks_total") == 0
    for _ in range(3):
        conn = thaw_connect(thaw)
        try:
            assert status(conn, "Ssl_cipher") == ""
        finally:
            conn.close()
    assert metric(thaw, "thaw_backend_tls_fallbacks_total") == 3
    warned = [line for line in thaw.log_text().splitlines() if "backend does not offer TLS" in line]
    assert len(warned) == 1, warned
    assert "WARN" in warned[0] and "preferred" in warned[0], warned[0]


def test_preferred_with_tls_server_is_no_fallback(tls_server, make_thaw, tmp_path):
    cfg = T.tls_config(tmp_path / "thaw.yaml", "preferred")
    thaw = make_thaw(cfg, tls_server.port)
    conn = thaw_connect(thaw)
    conn.close()
    assert metric(thaw, "thaw_backend_tls_fallbacks_total") == 0
    assert "does not offer TLS" not in thaw.log_text()


def test_preferred_against_plain_server_works_in_plain_text(plain_server, make_thaw, tmp_path):
    cfg = T.tls_config(tmp_path / "thaw.yaml", "preferred")
    thaw = make_thaw(cfg, plain_server.port)
    conn = thaw_connect(thaw)
    try:
        assert_plain_client_leg(conn)
        assert status(conn, "Ssl_cipher") == ""
        with conn.cursor() as cur:
            cur.execute("SELECT 40 + 2")
            assert cur.fetchall() == ((42,),)
    finally:
        conn.close()


# ---------------------------------------------------------------- failures
def driver_connect_error(driver: str, thaw) -> tuple[BaseException, float]:
    """Connect (and run SELECT 1) with one of the Python drivers; return the error and how long it took."""
    t0 = time.monotonic()
    try:
        if driver == "pymysql":
            conn = thaw_connect(thaw)
        elif driver == "mysqlclient":  # libmariadb's handshake code
            import MySQLdb
            conn = MySQLdb.connect(host=thaw.host, port=thaw.port, user="root", password="",
                                   connect_timeout=5, read_timeout=30)
        else:
            import mysql.connector
            conn = mysql.connector.connect(host=thaw.host, port=thaw.port, user="root", password="",
                                           connection_timeout=30)
        try:
            cur = conn.cursor()
            cur.execute("SELECT 1")
            cur.fetchall()
        finally:
            conn.close()
    except Exception as e:  # noqa: BLE001 - each driver has its own classes
        return e, time.monotonic() - t0
    pytest.fail(f"{driver}: the connection through thaw succeeded; expected an error")


def error_text(e: BaseException) -> tuple[int | None, str]:
    code = getattr(e, "errno", None)
    if code is None and e.args and isinstance(e.args[0], int):
        code = e.args[0]
    msg = getattr(e, "msg", None) or (str(e.args[1]) if len(e.args) > 1 else str(e))
    return code, msg


@pytest.mark.parametrize("driver", ["pymysql", "mysqlclient", "mysql-connector"])
def test_required_against_plain_server_gives_a_clear_error(driver, pki, plain_server, make_thaw, tmp_path):
    """thaw refuses before the handshake; every driver must show thaw's reason. (A
    pre-handshake ERR must carry a server-range code: libmariadb, under mysqlclient and
    the mysql CLI, reports a 2xxx code from the server as "2027 Received malformed packet".)"""
    cfg = T.tls_config(tmp_path / "thaw.yaml", "required", ca_file=pki.ca, verify_identity=True)
    thaw = make_thaw(cfg, plain_server.port)
    for _ in range(2):  # and thaw keeps serving (refusing) afterwards
        err, took = driver_connect_error(driver, thaw)
        assert took < ERROR_WITHIN, f"the error took {took:.1f} s"
        code, msg = error_text(err)
        assert "TLS" in msg and "backend" in msg, f"{driver}: the error does not say why: code {code}, {msg!r} ({err!r})"
    assert thaw.running()


def _assert_tls_failure(thaw, what: str):
    err, took = connect_error(thaw)
    assert isinstance(err, pymysql.err.OperationalError), repr(err)
    assert took < ERROR_WITHIN, f"{what}: the error took {took:.1f} s (hang?)"
    assert thaw.running()
    deadline = time.monotonic() + 3  # the session logs as it ends, just after closing
    while "TLS handshake with the backend failed" not in thaw.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = thaw.log_text()
    assert "TLS handshake with the backend failed" in log, f"{what}: thaw's log does not say why:\n{log[-2000:]}"
    print(f"{what}: client error {err!r}")
    return err


def test_verify_identity_with_wrong_ca_fails_the_connection(pki, tls_server, make_thaw, tmp_path):
    cfg = T.tls_config(tmp_path / "thaw.yaml", "required", ca_file=pki.other_ca, verify_identity=True)
    thaw = make_thaw(cfg, tls_server.port)
    _assert_tls_failure(thaw, "wrong CA")


def test_wrong_ca_fails_even_without_identity_check(pki, tls_server, make_thaw, tmp_path):
    cfg = T.tls_config(tmp_path / "thaw.yaml", "required", ca_file=pki.other_ca, verify_identity=False)
    thaw = make_thaw(cfg, tls_server.port)
    _assert_tls_failure(thaw, "wrong CA, verify_identity false")


def test_verify_identity_rejects_a_certificate_for_another_name(pki, wrong_name_server, make_thaw, tmp_path):
    cfg = T.tls_config(tmp_path / "thaw.yaml", "required", ca_file=pki.ca, verify_identity=True)
    thaw = make_thaw(cfg, wrong_name_server.port)
    _assert_tls_failure(thaw, "certificate for db.example, backend 127.0.0.1")


def test_ca_file_alone_verifies_the_host_name(pki, wrong_name_server, make_thaw, tmp_path):
    """verify_identity unset: a CA turns the host-name check on (the opt-out is verify_identity: false)."""
    cfg = T.tls_config(tmp_path / "thaw.yaml", "required", ca_file=pki.ca)
    thaw = make_thaw(cfg, wrong_name_server.port)
    _assert_tls_failure(thaw, "certificate for db.example, backend 127.0.0.1, verify_identity unset")


def test_ca_file_alone_accepts_the_right_name(pki, tls_server, make_thaw, tmp_path):
    cfg = T.tls_config(tmp_path / "thaw.yaml", "required", ca_file=pki.ca)
    thaw = make_thaw(cfg, tls_server.port)
    conn = thaw_connect(thaw)
    try:
        assert status(conn, "Ssl_cipher")
    finally:
        conn.close()


@pytest.mark.parametrize("variant", ["verify_identity_false", "server_name"])
def test_certificate_for_another_name_accepted_when_told(variant, pki, wrong_name_server, make_thaw, tmp_path):
    if variant == "verify_identity_false":  # chain checked, name not
        cfg = T.tls_config(tmp_path / "thaw.yaml", "required", ca_file=pki.ca, verify_identity=False)
    else:  # the name the certificate must carry, given explicitly
        cfg = T.tls_config(tmp_path / "thaw.yaml", "required", ca_file=pki.ca, verify_identity=True,
                           server_name="db.example")
    thaw = make_thaw(cfg, wrong_name_server.port)
    conn = thaw_connect(thaw)
    try:
        assert status(conn, "Ssl_cipher")
    finally:
        conn.close()
