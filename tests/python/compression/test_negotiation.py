"""Who compresses which leg (issue 13): the config, the server's offer and
the app's flags; a client that sets CLIENT_COMPRESS although it was not
offered; compression inside TLS.

The issue's reproduction: mysql-connector-python (pure, compress=True) sets
CLIENT_COMPRESS whatever the greeting says and switches to compressed
framing after the OK. Before, thaw cleared the flag, read the compressed
frame's length as a command byte and the client waited forever. Now it gets
a compressed session (client_compression: allowed, the default) or a clear
1043 at login (off), in well under a second.
"""

from __future__ import annotations

import socket
import threading
import time

import MySQLdb
import mysql.connector
import pymysql
import pytest
from pymysql.constants import CLIENT

from conftest import DIRECT_HOST, DIRECT_PORT
from mariadb_instance import MariaDBInstance
from tls import tls_support as T

from .support import CLIENT_COMPRESS, legs, metric

KW = dict(user="root", password="", database="test", connect_timeout=5, read_timeout=30, write_timeout=30)


def compression_status(cur_execute) -> str:
    rows = cur_execute("SHOW SESSION STATUS LIKE 'Compression'")
    return rows[0][1]


def connector(port, **kw):
    return mysql.connector.connect(host="127.0.0.1", port=port, user="root", password="", use_pure=True,
                                   database="test", ssl_disabled=True, connection_timeout=5, **kw)


def rows(conn, sql, args=None):
    cur = conn.cursor()
    cur.execute(sql, args)
    out = cur.fetchall()
    cur.close()
    return out


def test_connector_compress_gets_a_compressed_session_by_default(make_thaw):
    """The issue's client, unchanged: works, and both legs are compressed (as_client)."""
    thaw = make_thaw()
    c = connector(thaw.port, compress=True)
    try:
        assert rows(c, "SELECT 1 + 1, REPEAT('ab', 50000) LIKE 'abab%'") == [(2, 1)]
        assert rows(c, "SHOW SESSION STATUS LIKE 'Compression'") == [("Compression", "ON")], "backend leg"
        ((big,),) = rows(c, "SELECT REPEAT(MD5('x'), 100000)")
        assert len(big) == 3_200_000
    finally:
        c.close()
    assert legs(thaw.admin_port) == (1, 1)
    plain = metric(thaw.admin_port, "thaw_compressed_plain_bytes_total", 'leg="client",direction="out"')
    wire = metric(thaw.admin_port, "thaw_compressed_wire_bytes_total", 'leg="client",direction="out"')
    assert plain > 3_200_000 and wire < plain / 10, (wire, plain)


@pytest.mark.parametrize("client", ["connector", "pymysql_flag"])
def test_client_that_sets_compress_although_not_offered_gets_a_clear_error(client, make_thaw):
    thaw = make_thaw("client_compression: off\n")
    started = time.monotonic()
    with pytest.raises(Exception) as info:
        if client == "connector":
            connector(thaw.port, compress=True)
        else:
            # PyMySQL has no compression, but sends any flag it is given: the
            # same misbehaviour as mysql-connector-python, in plain framing.
            pymysql.connect(host=thaw.host, port=thaw.port, client_flag=CLIENT_COMPRESS, **KW)
    took = time.monotonic() - started
    e = info.value
    code = getattr(e, "errno", None) or e.args[0]
    assert code == 1043, repr(e)
    assert "client_compression" in str(e), str(e)
    assert took < 3, f"took {took:.1f} s: a refusal at login, not a timeout"
    assert legs(thaw.admin_port) == (0, 0)
    # thaw ended the backend handshake itself, as for any refusal before login
    # (ThawProc's start check, a TCP probe, is one more).
    assert metric(thaw.admin_port, "thaw_handshakes_abandoned_total", 'ending="auth_failed"') >= 1
    assert thaw.running()


def test_client_compression_off_clients_that_follow_the_greeting_stay_plain(make_thaw):
    thaw = make_thaw("client_compression: off\n")
    c = pymysql.connect(host=thaw.host, port=thaw.port, **KW)
    assert not c.server_capabilities & CLIENT_COMPRESS, "not offered"
    c.close()
    m = MySQLdb.connect(host=thaw.host, port=thaw.port, user="root", compress=1)
    try:
        cur = m.cursor()
        cur.execute("SHOW SESSION STATUS LIKE 'Compression'")
        assert cur.fetchall() == (("Compression", "OFF"),), "libmariadb saw no offer: plain, and so the backend leg"
    finally:
        m.close()
    assert legs(thaw.admin_port) == (0, 0)


def test_backend_preferred_compresses_thaws_leg_whatever_the_app_does(make_thaw):
    thaw = make_thaw("backend_compression: preferred\n")
    t = pymysql.connect(host=thaw.host, port=thaw.port, **KW)
    d = pymysql.connect(host=DIRECT_HOST, port=DIRECT_PORT, **KW)
    try:
        with t.cursor() as cur:
            cur.execute("SHOW SESSION STATUS LIKE 'Compression'")
            assert cur.fetchall() == (("Compression", "ON"),)
            cur.execute("SELECT seq, REPEAT('r', 300) FROM seq_1_to_5000")
            through = cur.fetchall()
        with d.cursor() as cur:
            cur.execute("SHOW SESSION STATUS LIKE 'Compression'")
            assert cur.fetchall() == (("Compression", "OFF"),)
            cur.execute("SELECT seq, REPEAT('r', 300) FROM seq_1_to_5000")
            assert cur.fetchall() == through
    finally:
        t.close()
        d.close()
    assert legs(thaw.admin_port) == (0, 1)
    wire = metric(thaw.admin_port, "thaw_compressed_wire_bytes_total", 'leg="backend",direction="in"')
    plain = metric(thaw.admin_port, "thaw_compressed_plain_bytes_total", 'leg="backend",direction="in"')
    assert plain > 5000 * 300 and wire < plain / 5, (wire, plain)


def test_backend_off_keeps_thaws_leg_plain_for_a_compressing_app(make_thaw):
    thaw = make_thaw("backend_compression: off\n")
    c = connector(thaw.port, compress=True)
    try:
        assert rows(c, "SHOW SESSION STATUS LIKE 'Compression'") == [("Compression", "OFF")]
    finally:
        c.close()
    assert legs(thaw.admin_port) == (1, 0)


class NoCompressOffer:
    """A TCP relay to MariaDB that clears CLIENT_COMPRESS in the greeting: a
    server without compression (MariaDB always offers it)."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                app, _ = self.listener.accept()
            except OSError:
                return
            db = socket.create_connection((DIRECT_HOST, DIRECT_PORT))
            head = self._exact(db, 4)
            greeting = bytearray(self._exact(db, int.from_bytes(head[:3], "little")))
            lo = greeting.index(0, 1) + 1 + 13
            greeting[lo] &= ~CLIENT_COMPRESS & 0xFF
            app.sendall(head + bytes(greeting))
            for a, b in ((app, db), (db, app)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _exact(s, n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    @staticmethod
    def _pipe(src, dst):
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()


@pytest.fixture
def no_compress_server():
    relay = NoCompressOffer()
    yield relay
    relay.close()


def test_backend_required_refuses_a_server_without_compression(make_thaw, no_compress_server):
    thaw = make_thaw("backend_compression: required\n", backend=f"127.0.0.1:{no_compress_server.port}")
    with pytest.raises(pymysql.err.OperationalError) as info:
        pymysql.connect(host=thaw.host, port=thaw.port, **KW)
    assert info.value.args[0] == 1043
    assert "backend_compression is required" in info.value.args[1]


def test_without_the_servers_offer_thaw_still_compresses_the_apps_leg(make_thaw, no_compress_server):
    thaw = make_thaw("backend_compression: preferred\n", backend=f"127.0.0.1:{no_compress_server.port}")
    c = connector(thaw.port, compress=True)
    try:
        assert rows(c, "SHOW SESSION STATUS LIKE 'Compression'") == [("Compression", "OFF")]
        assert rows(c, "SELECT COUNT(*), SUM(LENGTH(REPEAT('q', seq))) FROM seq_1_to_1000") == [(1000, 500500)]
    finally:
        c.close()
    assert legs(thaw.admin_port) == (1, 0)


# ------------------------------------------------------------------ inside TLS
@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return T.make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(pki):
    with MariaDBInstance(T.server_args(pki.server_cert, pki.server_key, pki.ca)) as db:
        yield db


def test_compression_inside_tls_on_both_legs(pki, tls_server, make_thaw, tmp_path):
    T.tls_config(tmp_path / "base.yaml", "required", ca_file=pki.ca)
    config = (tmp_path / "base.yaml").read_text() + f"client_tls:\n  cert: {pki.server_cert}\n  key: {pki.server_key}\n"
    thaw = make_thaw(config, backend=f"127.0.0.1:{tls_server.port}")
    m = MySQLdb.connect(host=thaw.host, port=thaw.port, user="root", database="mysql", compress=1,
                        ssl={"ca": str(pki.ca)}, ssl_mode="VERIFY_IDENTITY")
    try:
        cur = m.cursor()
        cur.execute("SHOW SESSION STATUS WHERE Variable_name IN ('Compression', 'Ssl_cipher')")
        status = dict(cur.fetchall())
        assert status["Compression"] == "ON" and status["Ssl_cipher"], status
        cur.execute("SELECT REPEAT(MD5(seq), 1000) FROM seq_1_to_200")
        got = cur.fetchall()
        assert len(got) == 200 and all(len(r[0]) == 32_000 for r in got)
    finally:
        m.close()
    assert legs(thaw.admin_port) == (1, 1)
