"""Start and stop a thaw sidecar process for tests.

Other test files (tests/python/legacy/, fidelity/, test_tools.py) import this.
The public API is fixed:

    with ThawProc(rules=None) as t:
        pymysql.connect(host=t.host, port=t.port, ...)

ThawProc runs

    $THAW_BIN run --listen 127.0.0.1:<port> --backend <backend>
                  --admin 127.0.0.1:<admin_port> --rules <dir> [--config <file>] *extra_args

with free ports, logs stdout+stderr to a temp file, and returns from start()
only once the listen port accepts TCP connections.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 10.0


def thaw_bin() -> str:
    """Path of the thaw binary under test ($THAW_BIN, default target/debug/thaw)."""
    path = os.environ.get("THAW_BIN") or str(REPO_ROOT / "target" / "debug" / "thaw")
    p = Path(path)
    if not p.is_absolute():
        p = REPO_ROOT / p
    if not p.is_file() or not os.access(p, os.X_OK):
        raise RuntimeError(
            f"thaw binary not found at {p} (THAW_BIN={os.environ.get('THAW_BIN')!r}); "
            f"run `cargo build` in {REPO_ROOT} first, or set THAW_BIN"
        )
    return str(p)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on host."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class ThawProc:
    """A running thaw sidecar; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        rules: str | None = None,
        extra_args: list[str] = (),
        backend: str = "127.0.0.1:3306",
        env: dict | None = None,
        config: str | None = None,
    ):
        self.rules = rules
        self.extra_args = list(extra_args)
        self.backend = backend
        self.env = env
        self.config = config
        self.host = "127.0.0.1"
        self.port = 0
        self.admin_port = 0
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None
        self._tmpdir: str | None = None
        self._log_path: str | None = None
        self._log_file = None

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> "ThawProc":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def command(self) -> list[str]:
        args = [
            thaw_bin(),
            "run",
            "--listen", f"{self.host}:{self.port}",
            "--backend", self.backend,
            "--admin", f"{self.host}:{self.admin_port}",
            "--rules", self._rules_path(),
        ]
        if self.config is not None:
            args += ["--config", str(self.config)]
        return args + [str(a) for a in self.extra_args]

    def _rules_path(self) -> str:
        if self.rules is not None:
            return str(self.rules)
        empty = os.path.join(self._tmpdir, "rules")
        os.makedirs(empty, exist_ok=True)
        return empty

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("ThawProc already running")
        binary = thaw_bin()  # fail early and loudly when missing
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix="thaw-test-")
        self._log_path = os.path.join(self._tmpdir, "thaw.log")
        self.returncode = None
        self.port = free_port(self.host)
        self.admin_port = free_port(self.host)
        while self.admin_port == self.port:
            self.admin_port = free_port(self.host)
        cmd = self.command()
        cmd[0] = binary
        env = dict(os.environ)
        if self.env:
            env.update({k: str(v) for k, v in self.env.items()})
        self._log_file = open(self._log_path, "ab", buffering=0)
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(REPO_ROOT),
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc
                self._close_log()
                raise RuntimeError(
                    f"thaw exited with code {rc} before listening on "
                    f"{self.host}:{self.port}\ncommand: {' '.join(cmd)}\n"
                    f"--- log ---\n{self.log_text()}"
                )
            if _accepts(self.host, self.port):
                return
            if time.monotonic() > deadline:
                self._kill()
                raise RuntimeError(
                    f"thaw did not listen on {self.host}:{self.port} within "
                    f"{START_TIMEOUT:.0f} s\ncommand: {' '.join(cmd)}\n"
                    f"--- log ---\n{self.log_text()}"
                )
            time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM, timeout=10) -> int:
        """Send sig, wait up to timeout seconds (then SIGKILL); return the exit code."""
        if self.proc is None:
            return self.returncode if self.returncode is not None else 0
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill()
        self.returncode = self.proc.returncode
        self.proc = None
        self._close_log()
        return self.returncode

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None:
            self.returncode = self.proc.returncode

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # ------------------------------------------------------------ inspection
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def log_path(self) -> str | None:
        return self._log_path

    def log_text(self) -> str:
        if not self._log_path or not os.path.exists(self._log_path):
            return ""
        with open(self._log_path, "rb") as f:
            return f.read().decode("utf-8", errors="replace")

    def cleanup(self) -> None:
        """Stop if running and remove the temp dir (log included)."""
        self.stop()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __repr__(self) -> str:
        state = "running" if self.running() else "stopped"
        return f"<ThawProc {self.host}:{self.port} admin={self.admin_port} {state}>"
