"""Admission hardening against the real MariaDB (issue 10): connection-phase
deadlines, the connection cap, accept back-off under fd exhaustion, no
aborted connect from a bare TCP connect, and single-flight readiness.

Each test starts its own thaw (own ports, own config), so counters start
from zero. The shared server gets only uniquely named users, dropped after.
"""
from __future__ import annotations

import os
import resource
import socket
import struct
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pymysql
import pytest

from conftest import admin_connect, admin_exec
from ops.helpers import http_get, scrape, wait_for
from thawproc import ThawProc


# ------------------------------------------------------------------ helpers
@pytest.fixture
def start_thaw(request, tmp_path):
    """start_thaw(config_text, **ThawProc kwargs) -> a started ThawProc with its admin port up."""
    procs: list[ThawProc] = []

    def start(config: str = "", **kw) -> ThawProc:
        cfg = tmp_path / f"thaw-{len(procs)}.yaml"
        cfg.write_text(config)
        t = ThawProc(config=str(cfg), **kw)
        procs.append(t)
        t.start()
        wait_for(lambda: _livez(t), timeout=10, what="thaw's admin port")
        return t

    yield start
    for t in procs:
        if request.node.session.testsfailed:
            print(f"--- thaw log {t!r} ---\n{t.log_text()[-6000:]}")
        t.cleanup()


def _livez(t: ThawProc) -> bool:
    try:
        return http_get(t.admin_port, "/livez", timeout=1)[0] == 200
    except OSError:
        return False


def read_packet(sock: socket.socket) -> bytes | None:
    """One MySQL packet's payload, or None on EOF."""
    head = _read_exact(sock, 4)
    if head is None:
        return None
    n = head[0] | head[1] << 8 | head[2] << 16
    return _read_exact(sock, n)


def _read_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None if not buf else buf
        buf += chunk
    return buf


def wait_eof(sock: socket.socket, timeout: float) -> float:
    """Seconds until the peer closes (recv returns b'' or the connection resets)."""
    start = time.monotonic()
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - start


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def global_status(name: str) -> int:
    rows = admin_exec(f"SHOW GLOBAL STATUS LIKE '{name}'")
    return int(rows[0][1])


@pytest.fixture
def probe_user():
    """A uniquely named probe user as docs/operations.md recommends it (MAX_USER_CONNECTIONS 5)."""
    user, password = "thaw_adm_" + uuid.uuid4().hex[:10], "pw-" + uuid.uuid4().hex[:8]
    admin_exec(
        f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED VIA mysql_native_password USING PASSWORD('{password}') "
        "WITH MAX_USER_CONNECTIONS 5"
    )
    yield user, password
    admin_exec(f"DROP USER IF EXISTS '{user}'@'127.0.0.1'")


# ------------------------------------------------------------------ deadlines
def test_silent_and_half_sent_clients_are_closed_at_the_deadline(start_thaw):
    t = start_thaw("client_handshake_timeout_ms: 1000\n")
    time.sleep(0.3)
    base_fds = fd_count(t.pid)
    socks = []
    for i in range(20):
        s = socket.create_connection((t.host, t.port), timeout=5)
        greeting = read_packet(s)
        assert greeting and greeting[0] == 10, "thaw relays the server's greeting"
        if i % 2:
            s.sendall(b"\x40\x00\x00\x01\x8d\xa6")  # half a handshake response, then silence
        socks.append(s)
    assert fd_count(t.pid) >= base_fds + 40, "each pending client holds a client and a backend fd"
    with ThreadPoolExecutor(len(socks)) as pool:
        waited = list(pool.map(lambda s: wait_eof(s, 10), socks))
    for s in socks:
        s.close()
    assert all(0.8 <= w <= 3.0 for w in waited), f"closed after {sorted(waited)} s, deadline 1 s"
    wait_for(lambda: fd_count(t.pid) <= base_fds + 2, timeout=5, what="thaw's fds released")
    m = scrape(t.admin_port)
    assert m.get("thaw_handshake_timeouts_total", phase="client_handshake") == 20
    assert m.get("thaw_handshakes_abandoned_total", ending="auth_failed") >= 20, "backend handshakes ended by thaw"
    assert m.get("thaw_client_connections_open") == 0


class SilentBackend:
    """A TCP server that accepts and never sends a greeting."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.closed_by_peer = 0
        self._stop = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        self.listener.settimeout(0.2)
        while not self._stop:
            try:
                c, _ = self.listener.accept()
            except OSError:
                continue
            self.conns.append(c)
            threading.Thread(target=self._watch, args=(c,), daemon=True).start()

    def _watch(self, c):
        try:
            while c.recv(4096):
                pass
        except OSError:
            pass
        self.closed_by_peer += 1

    def close(self):
        self._stop = True
        self.listener.close()
        for c in self.conns:
            c.close()


def test_backend_that_never_greets_is_closed_at_the_deadline(start_thaw):
    backend = SilentBackend()
    try:
        t = start_thaw("backend_greeting_timeout_ms: 1000\n", backend=f"127.0.0.1:{backend.port}")
        socks = [socket.create_connection((t.host, t.port), timeout=5) for _ in range(5)]
        start = time.monotonic()
        errs = [read_packet(s) for s in socks]
        took = time.monotonic() - start
        for e in errs:
            assert e is not None and e[0] == 0xFF, e
            code = struct.unpack("<H", e[1:3])[0]
            assert code == 1040, (code, e)
            assert b"no greeting within 1000 ms" in e, e
        assert 0.8 <= took <= 3.0, f"ERR after {took:.2f} s, deadline 1 s"
        for s in socks:
            assert wait_eof(s, 5) < 2
            s.close()
        wait_for(lambda: backend.closed_by_peer >= 5, timeout=5, what="thaw to close its backend sockets")
        m = scrape(t.admin_port)
        # ThawProc's own start-up check is a sixth connection
        assert m.get("thaw_handshake_timeouts_total", phase="backend_greeting") >= 5
        assert m.get("thaw_client_connections_open") == 0
        log = t.log_text()
        assert log.count("cannot connect to backend") == 1, "repeated WARNs are rate limited\n" + log
    finally:
        backend.close()


# ------------------------------------------------------------------ admission
def test_max_connections_is_answered_with_1040(start_thaw):
    t = start_thaw("max_connections: 3\n")
    conns = [pymysql.connect(host=t.host, port=t.port, user="root", password="", connect_timeout=5) for _ in range(3)]
    with pytest.raises(pymysql.err.OperationalError) as e:
        pymysql.connect(host=t.host, port=t.port, user="root", password="", connect_timeout=5)
    assert e.value.args[0] == 1040, e.value.args
    assert "Too many connections" in e.value.args[1]
    conns.pop().close()
    wait_for(lambda: scrape(t.admin_port).get("thaw_client_connections_open") == 2, what="the slot to be released")
    again = pymysql.connect(host=t.host, port=t.port, user="root", password="", connect_timeout=5)
    with again.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    for c in conns + [again]:
        c.close()
    assert scrape(t.admin_port).get("thaw_client_connections_refused_total") == 1


def test_fd_exhaustion_backs_off_instead_of_spinning(start_thaw):
    t = start_thaw("client_handshake_timeout_ms: 60000\nmax_connections: 10000\n")
    time.sleep(0.3)
    base = fd_count(t.pid)
    limit = base + 8  # room for four clients (client fd + backend fd each)
    soft, hard = resource.prlimit(t.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(t.pid, resource.RLIMIT_NOFILE, (limit, hard))
    held = []
    try:
        for _ in range(4):  # fill the fd table exactly: each client has its greeting, so both its fds are open
            s = socket.create_connection((t.host, t.port), timeout=5)
            assert read_packet(s)[0] == 10
            held.append(s)
        assert fd_count(t.pid) == limit
        for _ in range(4):  # these wait in the accept queues of both listeners
            held.append(socket.create_connection((t.host, t.port), timeout=5))
        for _ in range(4):
            held.append(socket.create_connection((t.host, t.admin_port), timeout=5))
        time.sleep(1.0)  # let both listeners hit EMFILE and settle into their back-off
        log_before = t.log_text().count("accept failed")
        cpu0, wall0 = cpu_seconds(t.pid), time.monotonic()
        time.sleep(4.0)
        cpu = (cpu_seconds(t.pid) - cpu0) / (time.monotonic() - wall0)
        warns = t.log_text().count("accept failed") - log_before
        assert log_before >= 1, "the test must actually exhaust thaw's fds\n" + t.log_text()[-3000:]
        assert cpu < 0.10, f"thaw used {cpu:.0%} of a core while out of fds"
        assert warns <= 2, f"{warns} 'accept failed' lines in 4 s: not rate limited"
    finally:
        resource.prlimit(t.pid, resource.RLIMIT_NOFILE, (soft, hard))
        for s in held:
            s.close()
    # Recovers once fds are free: the queued admin connections are served, and new clients work.
    assert wait_for(lambda: _livez(t), timeout=5, what="/livez after the fd limit was raised")
    c = pymysql.connect(host=t.host, port=t.port, user="root", password="", connect_timeout=5)
    c.close()
    m = scrape(t.admin_port)
    assert m.get("thaw_accept_errors_total", listener="proxy") >= 1
    assert m.get("thaw_accept_errors_total", listener="admin") >= 1
    assert m.get("thaw_accept_errors_total", listener="admin") < 50, "the admin listener backed off"


# ------------------------------------------------------------------ aborted connects
def abandoned(t: ThawProc, ending: str) -> float:
    return scrape(t.admin_port).get("thaw_handshakes_abandoned_total", ending=ending)


def settled(t: ThawProc) -> None:
    """ThawProc.start()'s own check connection is a bare connect too: let it
    finish, its backend handshake included (that ending is counted after the
    client side closed, so wait for the count, not only the gauge)."""
    wait_for(lambda: scrape(t.admin_port).get("thaw_client_connections_open") == 0, timeout=5, what="no open connection")
    ended = lambda: sum(abandoned(t, e) for e in ("quit", "auth_failed", "dropped"))  # noqa: E731
    wait_for(lambda: ended() >= 1, timeout=5, what="the start check's backend handshake to end")


def _bare_connects(t: ThawProc, n: int) -> None:
    for i in range(n):
        s = socket.create_connection((t.host, t.port), timeout=5)
        if i % 2:
            read_packet(s)  # a liveness probe that reads the greeting; the others hang up at once
        s.close()


def test_bare_connect_costs_the_backend_no_aborted_connect(start_thaw, probe_user):
    user, password = probe_user
    t = start_thaw(f"probe:\n  user: {user}\n  password: {password}\n")
    # Control: the same bare connect straight to the server is an aborted connect.
    before = global_status("Aborted_connects")
    s = socket.create_connection(("127.0.0.1", 3306), timeout=5)
    s.close()
    wait_for(lambda: global_status("Aborted_connects") > before, timeout=5, what="the server to count a direct bare connect")
    # Through thaw: none. The server is shared with other test runs, whose own
    # failed logins can land in the window, so up to three windows are tried;
    # a regression costs at least N in every one.
    settled(t)
    n, deltas = 6, []
    for attempt in range(1, 4):
        quits = abandoned(t, "quit")
        before = global_status("Aborted_connects")
        _bare_connects(t, n)
        wait_for(lambda: abandoned(t, "quit") == quits + n,
                 timeout=10, what="thaw to end every abandoned backend handshake with COM_QUIT")
        time.sleep(0.3)
        deltas.append(global_status("Aborted_connects") - before)
        if deltas[-1] == 0:
            break
    assert 0 in deltas, f"Aborted_connects grew by {deltas} for {n} bare connects through thaw"
    m = scrape(t.admin_port)
    assert m.get("thaw_handshakes_abandoned_total", ending="dropped") == 0
    assert m.get("thaw_client_connections_open") == 0


def test_without_a_probe_user_an_abandoned_handshake_ends_as_a_failed_login(start_thaw):
    t = start_thaw("")
    settled(t)
    failed = abandoned(t, "auth_failed")
    _bare_connects(t, 4)
    wait_for(lambda: abandoned(t, "auth_failed") == failed + 4,
             timeout=10, what="thaw to end every abandoned backend handshake with a login")
    assert scrape(t.admin_port).get("thaw_handshakes_abandoned_total", ending="dropped") == 0


def test_silent_client_at_the_deadline_costs_no_aborted_connect(start_thaw, probe_user):
    user, password = probe_user
    t = start_thaw(f"client_handshake_timeout_ms: 1000\nprobe:\n  user: {user}\n  password: {password}\n")
    settled(t)
    quits = abandoned(t, "quit")
    s = socket.create_connection((t.host, t.port), timeout=5)
    assert read_packet(s)[0] == 10
    assert wait_eof(s, 5) < 3
    s.close()
    wait_for(lambda: abandoned(t, "quit") == quits + 1,
             timeout=5, what="the backend handshake of a timed-out client to end with COM_QUIT")


def test_real_logins_still_pass_through(start_thaw, probe_user):
    """The deadlines and the admission path leave auth alone: a real password login works."""
    user, password = probe_user
    t = start_thaw("client_handshake_timeout_ms: 1000\nauth_timeout_ms: 1000\n")
    c = pymysql.connect(host=t.host, port=t.port, user=user, password=password, connect_timeout=5)
    with c.cursor() as cur:
        cur.execute("SELECT CURRENT_USER()")
        assert cur.fetchone()[0].startswith(user)
    c.close()
    with pytest.raises(pymysql.err.OperationalError) as e:
        pymysql.connect(host=t.host, port=t.port, user=user, password="wrong", connect_timeout=5)
    assert e.value.args[0] == 1045


# ------------------------------------------------------------------ readiness
def test_50_concurrent_readyz_no_false_503_and_one_check_per_interval(start_thaw, probe_user):
    user, password = probe_user
    t = start_thaw(f"readiness_interval_ms: 1000\nprobe:\n  user: {user}\n  password: {password}\n")
    start = time.monotonic()
    statuses = []
    with ThreadPoolExecutor(50) as pool:
        for _ in range(4):
            statuses += list(pool.map(lambda _: http_get(t.admin_port, "/readyz", timeout=10), range(50)))
            time.sleep(0.3)
    elapsed = time.monotonic() - start
    bad = [s for s in statuses if s != (200, "ready\n")]
    assert not bad, f"{len(bad)} of {len(statuses)} /readyz were not 200: {bad[:3]}"
    m = scrape(t.admin_port)
    checks = m.get("thaw_readiness_checks_total", outcome="ready") + m.get("thaw_readiness_checks_total", outcome="not_ready")
    assert 1 <= checks <= int(elapsed) + 2, f"{checks} backend checks in {elapsed:.1f} s for 200 requests"
