"""Helpers for the compression tests: metrics, raw compressed frames."""

from __future__ import annotations

import re
import struct
import urllib.request
import zlib

CLIENT_COMPRESS = 0x20


def metrics_text(admin_port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5).read().decode()


def metric(admin_port: int, name: str, labels: str = "") -> float:
    """One sample; 0 when the series does not exist."""
    pat = re.compile(r"^" + re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "") + r" (\S+)$", re.M)
    m = pat.search(metrics_text(admin_port))
    return float(m.group(1)) if m else 0.0


def legs(admin_port: int) -> tuple[float, float]:
    """thaw_compressed_connections_total for (client, backend)."""
    return tuple(metric(admin_port, "thaw_compressed_connections_total", f'leg="{leg}"') for leg in ("client", "backend"))


def u24(n: int) -> bytes:
    return struct.pack("<I", n)[:3]


def plain_packet(seq: int, payload: bytes) -> bytes:
    return u24(len(payload)) + bytes([seq & 0xFF]) + payload


def compressed_frame(seq: int, plain: bytes, stated: int | None = None, body: bytes | None = None) -> bytes:
    """A compressed frame of `plain` (zlib); `stated`/`body` let a test lie."""
    body = zlib.compress(plain) if body is None else body
    stated = len(plain) if stated is None else stated
    return u24(len(body)) + bytes([seq & 0xFF]) + u24(stated) + body


def read_compressed_packet(sock) -> bytes:
    """The first plain packet of the next compressed frame (tests read small answers)."""
    head = _recv_exact(sock, 7)
    clen, ulen = int.from_bytes(head[:3], "little"), int.from_bytes(head[4:7], "little")
    body = _recv_exact(sock, clen)
    plain = zlib.decompress(body) if ulen else body
    n = int.from_bytes(plain[:3], "little")
    return plain[4:4 + n]


def _recv_exact(sock, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def read_plain_packet(sock) -> tuple[int, bytes]:
    head = _recv_exact(sock, 4)
    return head[3], _recv_exact(sock, int.from_bytes(head[:3], "little"))


def raw_login(host: str, port: int, user: str = "root", caps_extra: int = CLIENT_COMPRESS):
    """Log in as `user` with an empty password, asking for `caps_extra`
    (CLIENT_COMPRESS by default); returns the socket right after the OK, with
    nothing sent since. Raises on an ERR."""
    import socket

    sock = socket.create_connection((host, port))
    sock.settimeout(30)
    seq, greeting = read_plain_packet(sock)
    assert greeting[:1] == b"\x0a", greeting
    caps = 0x1 | 0x200 | 0x2000 | 0x8000 | 0x80000 | caps_extra  # LONG_PASSWORD PROTOCOL_41 TRANSACTIONS SECURE_CONNECTION PLUGIN_AUTH
    resp = struct.pack("<IIB", caps, 1 << 24, 45) + bytes(23) + user.encode() + b"\0" + b"\0" + b"mysql_native_password\0"
    sock.sendall(plain_packet(seq + 1, resp))
    while True:
        seq, p = read_plain_packet(sock)
        if p[:1] == b"\x00":
            return sock
        if p[:1] == b"\xff":
            raise RuntimeError(f"login refused: {p!r}")
        sock.sendall(plain_packet(seq + 1, b""))  # an auth switch: the empty password
