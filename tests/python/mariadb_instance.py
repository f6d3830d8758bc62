"""A throwaway mariadbd for tests that need server settings the shared
instance must not get (TLS certificates, innodb_rollback_on_timeout=ON) or a
backend the test can stop and start. Own port, own datadir, own socket;
the machine's main instance is never touched."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _which(*names: str) -> str:
    for n in names:
        p = shutil.which(n) or (f"/usr/sbin/{n}" if os.path.exists(f"/usr/sbin/{n}") else None)
        if p:
            return p
    raise RuntimeError(f"none of {names} found: install mariadb-server")


class MariaDBInstance:
    """Context manager: `with MariaDBInstance(["--innodb-rollback-on-timeout=ON"]) as db: db.port`."""

    def __init__(self, args: list[str] | None = None):
        self.args = list(args or [])
        self.dir = tempfile.mkdtemp(prefix="thaw-mariadb-")
        self.datadir = os.path.join(self.dir, "data")
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self._installed = False

    def _install(self) -> None:
        if self._installed:
            return
        out = subprocess.run(
            [_which("mariadb-install-db", "mysql_install_db"), "--no-defaults", f"--datadir={self.datadir}",
             "--auth-root-authentication-method=normal", "--user=root", "--skip-test-db"],
            capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed:\n{out.stdout}\n{out.stderr}")
        self._installed = True

    def start(self) -> "MariaDBInstance":
        self._install()
        log = open(os.path.join(self.dir, "server.log"), "ab")
        self.proc = subprocess.Popen(
            [_which("mariadbd", "mysqld"), "--no-defaults", f"--datadir={self.datadir}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={os.path.join(self.dir, 'sock')}", "--user=root",
             f"--pid-file={os.path.join(self.dir, 'pid')}", "--innodb-buffer-pool-size=32M",
             "--innodb-log-file-size=16M", "--skip-name-resolve", *self.args],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                import pymysql
                pymysql.connect(host="127.0.0.1", port=self.port, user="root", password="", connect_timeout=1).close()
                return self
            except Exception:
                time.sleep(0.2)
        raise RuntimeError(f"mariadbd did not answer on port {self.port} within 60 s:\n{self.log_text()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_text(self) -> str:
        try:
            with open(os.path.join(self.dir, "server.log"), errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def __enter__(self) -> "MariaDBInstance":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
