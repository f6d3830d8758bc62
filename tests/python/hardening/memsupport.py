"""Helpers for the memory tests: RSS of a thaw process, raw MySQL frames."""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
import urllib.request

MIB = 1 << 20
MAX_FRAME = 0xFFFFFF


def status_kib(pid: int, field: str) -> int:
    """A field of /proc/<pid>/status in KiB (VmRSS: resident now, VmHWM: peak)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class RssSampler:
    """Samples VmRSS every 10 ms in a thread; `peak` is the largest seen (KiB)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.before = status_kib(pid, "VmRSS")
        self.peak = self.before
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, status_kib(self.pid, "VmRSS"))
            except (OSError, KeyError):
                return
            time.sleep(0.01)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, status_kib(self.pid, "VmRSS"))
        self.after = status_kib(self.pid, "VmRSS")

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.before) / 1024


def frame_header(length: int, seq: int) -> bytes:
    return struct.pack("<I", length)[:3] + bytes([seq & 0xFF])


def read_packet(sock: socket.socket) -> tuple[int, bytes]:
    """(seq, payload) of one single-frame packet."""
    head = recv_exact(sock, 4)
    length = head[0] | head[1] << 8 | head[2] << 16
    return head[3], recv_exact(sock, length)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def err_code(payload: bytes) -> int | None:
    if payload[:1] == b"\xff":
        return struct.unpack("<H", payload[1:3])[0]
    return None


def send_frame_chain(sock: socket.socket, frames: int, first_seq: int, first_byte: bytes = b"") -> int:
    """Send `frames` full 16 MiB frames (never the last frame that would end
    the packet); returns the bytes sent before the peer stopped taking them."""
    body = first_byte + b"x" * (MAX_FRAME - len(first_byte))
    rest = b"x" * MAX_FRAME
    sent = 0
    try:
        for i in range(frames):
            sock.sendall(frame_header(MAX_FRAME, first_seq + i))
            sock.sendall(body if i == 0 else rest)
            sent += 4 + MAX_FRAME
    except OSError:
        pass
    return sent


def metric(admin_port: int, name: str, labels: str = "") -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5).read().decode()
    pat = re.compile(r"^" + re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "") + r" (\S+)$", re.M)
    m = pat.search(text)
    if not m:
        raise KeyError(f"{name}{{{labels}}} not in /metrics")
    return float(m.group(1))
