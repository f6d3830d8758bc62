"""Helpers for the issue 9 tests: mysql-connector-python (pure Python, so
every prepared-statement command is visible and the same on every machine)
connections, the legacy check-then-freeze flow over ``cursor(prepared=True)``,
and a thread runner.

The connector's prepared cursor sends COM_STMT_PREPARE when its SQL changes
(after COM_STMT_CLOSE of the previous statement), COM_STMT_RESET before
every COM_STMT_EXECUTE, and COM_STMT_SEND_LONG_DATA for file-like
parameters. It never sets CLIENT_IGNORE_SPACE (unlike the Node drivers).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

import mysql.connector

# Per-session innodb_lock_wait_timeout of every app connection: a direct burst
# shows its 1205s quickly and no global variable is touched.
LOCK_WAIT_TIMEOUT = 2
USER = 8
WORK_S = 0.05


def connect(endpoint: tuple[str, int], database: str, **kw) -> mysql.connector.MySQLConnection:
    host, port = endpoint
    conn = mysql.connector.connect(
        host=host, port=port, user="root", password="", database=database, use_pure=True,
        autocommit=False, connection_timeout=10, **kw,
    )
    cur = conn.cursor()
    cur.execute(f"SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_TIMEOUT}")
    cur.close()
    return conn


def error_code(exc: BaseException) -> int | None:
    errno = getattr(exc, "errno", None)
    return errno if isinstance(errno, int) and errno > 0 else None


class Overlap:
    """How many requests are between their locking read and their last write
    at once: 1 under the row lock, more when the read ran unlocked. (thaw's
    own 1205 retries can make a locked burst succeed too, only serially.)"""

    def __init__(self):
        self.lock = threading.Lock()
        self.now = 0
        self.max = 0

    def enter(self):
        with self.lock:
            self.now += 1
            self.max = max(self.max, self.now)

    def leave(self):
        with self.lock:
            self.now -= 1


@dataclass
class Outcome:
    kind: str  # "ok", "insufficient", "error:<code>"
    source: str = ""  # for insufficient: "app" (the Python check) or "db" (thaw's 1644)
    detail: str = ""


def check_and_freeze(conn, amount: Any, request_id: str, overlap: Overlap) -> Outcome:
    """The legacy flow, every statement a prepared one. No retry loop: the
    legacy app has none."""
    cur = conn.cursor(prepared=True)
    inside = False
    try:
        conn.start_transaction()
        cur.execute("SELECT id, balance, frozen_balance FROM users WHERE id = ? FOR UPDATE", (USER,))
        (_, balance, frozen) = cur.fetchone()
        overlap.enter()
        inside = True
        if balance - frozen < amount:
            overlap.leave()  # before ROLLBACK releases the lock
            inside = False
            conn.rollback()
            return Outcome("insufficient", "app")
        time.sleep(WORK_S)
        cur.execute("UPDATE users SET balance = ?, frozen_balance = ? WHERE id = ?", (balance, frozen + amount, USER))
        cur.execute(
            "INSERT INTO compute_freeze_logs (request_id, user_id, amount, status) VALUES (?, ?, ?, ?)",
            (request_id, USER, amount, "frozen"),
        )
        overlap.leave()  # the write holds the lock now; COMMIT releases it
        inside = False
        conn.commit()
        return Outcome("ok")
    except mysql.connector.Error as e:
        try:
            conn.rollback()
        except mysql.connector.Error:
            pass
        if error_code(e) == 1644:  # thaw's guard: rules/billing.yaml violation
            return Outcome("insufficient", "db", str(e))
        return Outcome(f"error:{error_code(e)}", detail=str(e))
    finally:
        if inside:
            overlap.leave()
        cur.close()


def run_threads(fns: list[Callable[[], Any]], timeout: float = 60) -> list[Any]:
    """Run every fn in its own thread, released together; return the results."""
    results: list[Any] = [None] * len(fns)
    start = threading.Barrier(len(fns))

    def one(i, fn):
        start.wait()
        try:
            results[i] = fn()
        except BaseException as e:  # noqa: BLE001 - surfaced by the caller's assertions
            results[i] = e

    threads = [threading.Thread(target=one, args=(i, fn), daemon=True) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "requests still running after the timeout"
    return results


def tally(outcomes) -> dict[str, int]:
    t: dict[str, int] = {}
    for o in outcomes:
        key = o.kind if isinstance(o, Outcome) else f"raised:{type(o).__name__}"
        t[key] = t.get(key, 0) + 1
    return t


def errors(outcomes, limit: int = 3) -> str:
    seen = {o.detail[:300] if isinstance(o, Outcome) else repr(o)[:300] for o in outcomes
            if not isinstance(o, Outcome) or o.kind.startswith("error")}
    return "; ".join(sorted(seen)[:limit])


def money(v, decimal: bool):
    return Decimal(str(v)) if decimal else int(v)


def request_id() -> str:
    return uuid.uuid4().hex
