"""Helpers shared by the legacy end-to-end tests (not by the app itself)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.util
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Awaitable, Callable

import pymysql

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
RULES = REPO / "rules" / "billing.yaml"

# same variables as the shared tests/python/conftest.py
MARIADB_HOST = os.environ.get("THAW_TEST_DB_HOST", "127.0.0.1")
MARIADB_PORT = int(os.environ.get("THAW_TEST_DB_PORT", "3306"))
MARIADB_USER = "root"
MARIADB_PASSWORD = ""


def _load_app():
    # app.py is a generic module name: load it under a unique one.
    name = "thaw_legacy_app"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "app.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


legacy_app = _load_app()
InsufficientBalance = legacy_app.InsufficientBalance


def admin_connect(database: str | None = None) -> pymysql.connections.Connection:
    """Direct connection to MariaDB (bypassing thaw), autocommit."""
    return pymysql.connect(
        host=MARIADB_HOST,
        port=MARIADB_PORT,
        user=MARIADB_USER,
        password=MARIADB_PASSWORD,
        database=database,
        autocommit=True,
        charset="utf8mb4",
    )


def admin_query(database: str | None, sql: str, args: Any = None) -> list[tuple]:
    conn = admin_connect(database)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()


@dataclass
class LegacyDB:
    name: str
    decimal: bool

    def query(self, sql: str, args: Any = None) -> list[tuple]:
        return admin_query(self.name, sql, args)

    def seed_users(self, balances: dict[int, Any]) -> None:
        conn = admin_connect(self.name)
        try:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO users (id, username, balance, frozen_balance) VALUES (%s, %s, %s, 0)",
                    [(uid, f"user{uid}", bal) for uid, bal in balances.items()],
                )
        finally:
            conn.close()

    def seed_conversation(self, conv_id: int) -> None:
        self.query("INSERT INTO conversations (id, message_count, total_tokens) VALUES (%s, 0, 0)", (conv_id,))

    def user(self, uid: int) -> tuple[Any, Any]:
        (row,) = self.query("SELECT balance, frozen_balance FROM users WHERE id = %s", (uid,))
        return row[0], row[1]

    def logs(self, uid: int | None = None) -> list[tuple[str, int, Any, str]]:
        sql = "SELECT request_id, user_id, amount, status FROM compute_freeze_logs"
        if uid is not None:
            return self.query(sql + " WHERE user_id = %s", (uid,))
        return self.query(sql)

    def sum_logs(self, uid: int, status: str) -> Any:
        (row,) = self.query(
            "SELECT COALESCE(SUM(amount), 0) FROM compute_freeze_logs WHERE user_id = %s AND status = %s",
            (uid, status),
        )
        return row[0]


def create_legacy_db(decimal: bool = False) -> LegacyDB:
    name = f"thaw_legacy_{uuid.uuid4().hex[:8]}"
    conn = admin_connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
            cur.execute(f"USE `{name}`")
            for ddl in legacy_app.schema(decimal):
                cur.execute(ddl)
    finally:
        conn.close()
    return LegacyDB(name, decimal)


def drop_legacy_db(db: LegacyDB) -> None:
    admin_query(None, f"DROP DATABASE IF EXISTS `{db.name}`")


# --------------------------------------------------------------------------
# running many requests


@dataclass
class Outcome:
    kind: str  # "ok" | "insufficient" | "error"
    code: int | None = None
    detail: str = ""
    value: Any = None
    source: str | None = None  # for "insufficient": "app" or "db"


async def outcome_of(coro: Awaitable[Any]) -> Outcome:
    try:
        v = await coro
        return Outcome("ok", value=v)
    except InsufficientBalance as e:
        return Outcome("insufficient", detail=str(e), source=e.source)
    except Exception as e:  # noqa: BLE001 - every failure is classified, then asserted on
        return Outcome("error", code=legacy_app.db_error_code(e), detail=f"{type(e).__name__}: {e}")


async def run_concurrently(
    factories: list[Callable[[], Awaitable[Any]]], concurrency: int | None = None
) -> list[Outcome]:
    """Run every request; at most ``concurrency`` at once (None: all at once).

    All requests are released together by a start barrier so the burst is a
    real burst and not staggered by connection setup."""
    sem = asyncio.Semaphore(concurrency or len(factories) or 1)
    start = asyncio.Event()

    async def one(f):
        await start.wait()
        async with sem:
            return await outcome_of(f())

    tasks = [asyncio.ensure_future(one(f)) for f in factories]
    await asyncio.sleep(0)
    start.set()
    return list(await asyncio.gather(*tasks))


def tally(outcomes: list[Outcome]) -> collections.Counter:
    c: collections.Counter = collections.Counter()
    for o in outcomes:
        c[o.kind if o.kind != "error" else f"error:{o.code}"] += 1
    return c


def error_summary(outcomes: list[Outcome], limit: int = 5) -> str:
    errs = [o for o in outcomes if o.kind == "error"]
    seen: dict[str, int] = collections.Counter(o.detail[:300] for o in errs)
    return "; ".join(f"{n}x {d}" for d, n in list(seen.items())[:limit])


async def warm_pool(app, n: int) -> None:
    """Open ``n`` pool connections up front (sessions that just SELECT 1), so
    that the measured burst is not dominated by connection setup."""
    from sqlalchemy import text

    async def one():
        async with app.engine.connect() as c:
            await c.execute(text("SELECT 1"))
            await barrier.wait()

    barrier = _Barrier(n)
    await asyncio.gather(*(one() for _ in range(n)))


class _Barrier:
    def __init__(self, n: int):
        self.n = n
        self.count = 0
        self.event = asyncio.Event()

    async def wait(self):
        self.count += 1
        if self.count >= self.n:
            self.event.set()
        await self.event.wait()


@contextlib.asynccontextmanager
async def invariant_monitor(db: LegacyDB, interval: float = 0.005):
    """Poll users directly on MariaDB during a run; collect every sample where
    balance < frozen_balance or frozen_balance < 0 (committed state)."""
    import aiomysql

    violations: list[tuple] = []
    samples = [0]
    stop = asyncio.Event()
    conn = await aiomysql.connect(
        host=MARIADB_HOST, port=MARIADB_PORT, user=MARIADB_USER, password=MARIADB_PASSWORD,
        db=db.name, autocommit=True,
    )

    async def poll():
        async with conn.cursor() as cur:
            while not stop.is_set():
                await cur.execute("SELECT id, balance, frozen_balance FROM users")
                for uid, bal, frz in await cur.fetchall():
                    if bal - frz < 0 or frz < 0:
                        violations.append((uid, bal, frz))
                samples[0] += 1
                try:
                    await asyncio.wait_for(stop.wait(), interval)
                except asyncio.TimeoutError:
                    pass

    task = asyncio.ensure_future(poll())
    result = {"violations": violations, "samples": samples}
    try:
        yield result
    finally:
        stop.set()
        await task
        conn.close()


def new_request_id() -> str:
    return uuid.uuid4().hex


def to_money(v: Any, decimal: bool) -> Any:
    return Decimal(str(v)) if decimal else int(v)


class Stopwatch:
    def __enter__(self):
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.elapsed = time.monotonic() - self.t0
