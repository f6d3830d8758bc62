"""TLS on the client leg: with `client_tls: {cert, key}` thaw advertises TLS in
the greeting it relays, terminates the TLS a client asks for, and relays the
rest of the handshake over it. Without it, thaw offers no TLS (see
test_tls_backend.assert_plain_client_leg). Real mariadbd backends, certificates
from the openssl CLI (conftest.py)."""

from __future__ import annotations

import hashlib
import signal
import os
import socket
import ssl
import struct
import subprocess
import time

import pymysql
import pytest
from pymysql.constants import CLIENT

from tls import tls_support as T

KW = dict(user="root", password="", connect_timeout=5, read_timeout=30, write_timeout=30)


def client_tls_config(path, pki, backend_mode="disabled", extra=""):
    T.tls_config(path, backend_mode, ca_file=pki.ca if backend_mode != "disabled" else None)
    path.write_text(path.read_text() + f"client_tls:\n  cert: {pki.server_cert}\n  key: {pki.server_key}\n" + extra)
    return path


def verified(thaw, ca, **kw):
    """pymysql requiring TLS and verifying thaw's certificate and host name."""
    return pymysql.connect(host=thaw.host, port=thaw.port, ssl_ca=str(ca), ssl_verify_cert=True,
                           ssl_verify_identity=True, **KW, **kw)


def one(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def test_pymysql_verified_tls_to_thaw_plain_backend(pki, plain_server, make_thaw, tmp_path):
    thaw = make_thaw(client_tls_config(tmp_path / "thaw.yaml", pki), plain_server.port)
    conn = verified(thaw, pki.ca, max_allowed_packet=64 * 1024 * 1024)
    try:
        assert isinstance(conn._sock, ssl.SSLSocket), "the client leg is not TLS"
        assert conn.server_capabilities & CLIENT.SSL
        assert conn._sock.version().startswith("TLSv1.")
        assert one(conn, "SELECT 1 + 1, 'héllo', CURRENT_USER()") == ((2, "héllo", "root@127.0.0.1"),)
        assert one(conn, "SHOW SESSION STATUS LIKE 'Ssl_cipher'") == (("Ssl_cipher", ""),), "backend leg is plain"
        blob = os.urandom(5 * 1024 * 1024)
        ((length, digest),) = one(conn, "SELECT LENGTH(%s), SHA2(%s, 256)", (blob, blob))
        assert (length, digest) == (len(blob), hashlib.sha256(blob).hexdigest())
        ((back,),) = one(conn, "SELECT CAST(%s AS BINARY)", (blob,))
        assert back == blob
    finally:
        conn.close()


def test_tls_on_both_legs(pki, tls_server, make_thaw, tmp_path):
    thaw = make_thaw(client_tls_config(tmp_path / "thaw.yaml", pki, "required"), tls_server.port)
    conn = verified(thaw, pki.ca)
    try:
        assert isinstance(conn._sock, ssl.SSLSocket)
        ((_, cipher),) = one(conn, "SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        assert cipher, "the backend leg is not TLS"
        assert one(conn, "SELECT 40 + 2") == ((42,),)
    finally:
        conn.close()


def test_plain_client_still_served_when_tls_is_offered(pki, plain_server, make_thaw, tmp_path):
    thaw = make_thaw(client_tls_config(tmp_path / "thaw.yaml", pki), plain_server.port)
    conn = pymysql.connect(host=thaw.host, port=thaw.port, **KW)
    try:
        assert conn.server_capabilities & CLIENT.SSL, "thaw offers TLS"
        assert not isinstance(conn._sock, ssl.SSLSocket)
        assert one(conn, "SELECT 7") == ((7,),)
    finally:
        conn.close()


def test_client_that_does_not_trust_thaws_certificate_fails_cleanly(pki, plain_server, make_thaw, tmp_path):
    thaw = make_thaw(client_tls_config(tmp_path / "thaw.yaml", pki), plain_server.port)
    with pytest.raises(pymysql.err.OperationalError):
        verified(thaw, pki.other_ca)
    deadline = time.monotonic() + 3
    while "TLS handshake with a client failed" not in thaw.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "TLS handshake with a client failed" in thaw.log_text()
    assert thaw.running()
    conn = verified(thaw, pki.ca)  # and the next client is served
    conn.close()


def test_silent_client_after_sslrequest_is_closed_at_the_tls_deadline(pki, plain_server, make_thaw, tmp_path):
    cfg = client_tls_config(tmp_path / "thaw.yaml", pki, extra="tls_handshake_timeout_ms: 500\n")
    thaw = make_thaw(cfg, plain_server.port)
    s = socket.create_connection((thaw.host, thaw.port), timeout=5)
    try:
        head = s.recv(4)
        s.recv(int.from_bytes(head[:3], "little"))
        caps = CLIENT.PROTOCOL_41 | CLIENT.SSL | CLIENT.SECURE_CONNECTION
        body = struct.pack("<IIB23x", caps, 1 << 24, 45)
        s.sendall(len(body).to_bytes(3, "little") + b"\x01" + body)
        t0 = time.monotonic()
        assert s.recv(100) == b"", "thaw should close the connection"
        assert time.monotonic() - t0 < 3
    finally:
        s.close()
    assert thaw.running()


def mysql_cli(thaw, *args):
    return subprocess.run(["mysql", "-h", thaw.host, "-P", str(thaw.port), "-uroot", "--protocol=TCP",
                           "--connect-timeout=5", *args], capture_output=True, text=True, timeout=30)


@pytest.mark.skipif(subprocess.run(["which", "mysql"], capture_output=True).returncode != 0, reason="no mysql CLI")
def test_mysql_cli_requiring_verified_tls(pki, plain_server, make_thaw, tmp_path):
    thaw = make_thaw(client_tls_config(tmp_path / "thaw.yaml", pki), plain_server.port)
    out = mysql_cli(thaw, "--ssl", f"--ssl-ca={pki.ca}", "--ssl-verify-server-cert", "-e", "status; SELECT 6 * 7")
    assert out.returncode == 0, out.stderr
    assert "Cipher in use" in out.stdout and "42" in out.stdout, out.stdout


@pytest.mark.skipif(subprocess.run(["which", "mysql"], capture_output=True).returncode != 0, reason="no mysql CLI")
def test_mysql_cli_requiring_tls_is_refused_without_client_tls(pki, plain_server, make_thaw, tmp_path):
    thaw = make_thaw(T.tls_config(tmp_path / "thaw.yaml", "disabled"), plain_server.port)
    out = mysql_cli(thaw, "--ssl", f"--ssl-ca={pki.ca}", "--ssl-verify-server-cert", "-e", "SELECT 1")
    assert out.returncode != 0, out.stdout
    print(out.stderr)


def test_rotated_certificate_is_served_after_a_reload(pki, plain_server, make_thaw, tmp_path):
    """client_tls files are re-read on reload (SIGHUP, or when they change on
    disk): a rotated certificate from another CA is what new connections
    get, without a restart; open connections keep theirs."""
    d = tmp_path / "certs"
    d.mkdir()
    cert, key = d / "tls.pem", d / "tls.key"
    cert.write_bytes(pki.server_cert.read_bytes())
    key.write_bytes(pki.server_key.read_bytes())
    cfg = tmp_path / "thaw.yaml"
    T.tls_config(cfg, "disabled")
    cfg.write_text(cfg.read_text() + f"client_tls:\n  cert: {cert}\n  key: {key}\n")
    thaw = make_thaw(cfg, plain_server.port)
    before = verified(thaw, pki.ca)
    new_ca = T.make_ca(d, "rotated-ca")
    new_cert, new_key = T.make_server_cert(d, "rotated", new_ca, "127.0.0.1", "IP:127.0.0.1")
    # Key first, then the certificate: the reload that matters sees both.
    key.write_bytes(new_key.read_bytes())
    cert.write_bytes(new_cert.read_bytes())
    thaw.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            verified(thaw, new_ca[0]).close()
            break
        except pymysql.err.OperationalError:
            time.sleep(0.2)
    else:
        raise AssertionError("the rotated certificate was never served:\n" + thaw.log_text()[-3000:])
    with pytest.raises(pymysql.err.OperationalError):
        verified(thaw, pki.ca)
    assert one(before, "SELECT 1") == ((1,),), "an open connection keeps its TLS session"
    before.close()
