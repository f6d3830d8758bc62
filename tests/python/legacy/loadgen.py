#!/usr/bin/env python3
"""Load generator for the legacy freeze flow (for bench/ scripts, not tests).

Runs ``--requests`` freezes (``--concurrency`` at a time, round-robin over
``--users`` users, ``--work-ms`` of work inside each request) against
``--host:--port`` (MariaDB directly or thaw) and prints ONE JSON line:

  {"mode": ..., "succeeded": n, "insufficient": n, "errors": {"1205": n, ...},
   "elapsed_s": s, "successful_rps": r, "books_ok": true, ...}

Modes:
  legacy       the legacy app's check_and_freeze (FOR UPDATE, check, work,
               absolute ORM write, log insert, commit)
  two-session  the half-migrated variant (check's lock held in session A,
               freeze in session B)
  handfix      the hand fix: plain read, work, one conditional
               ``UPDATE users SET frozen_balance = frozen_balance + :a
               WHERE id = :id AND balance - frozen_balance >= :a`` (0 rows =
               insufficient balance) plus the log insert, one transaction

Setup (CREATE DATABASE, schema, seed) and the final books check run on a
direct connection to MariaDB (``--setup-host/--setup-port``), so the measured
endpoint only sees the workload.  The database is fresh
(``thaw_loadgen_<uuid8>``) and dropped afterwards unless ``--keep-db``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import importlib.util
import json
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pymysql
from sqlalchemy import text

HERE = Path(__file__).resolve().parent


def _load_app():
    name = "thaw_legacy_app"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "app.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


legacy_app = _load_app()

HANDFIX_UPDATE = text(
    "UPDATE users SET frozen_balance = frozen_balance + :a "
    "WHERE id = :id AND balance - frozen_balance >= :a"
)
HANDFIX_INSERT = text(
    "INSERT INTO compute_freeze_logs (request_id, user_id, amount, status) VALUES (:r, :id, :a, 'frozen')"
)
PLAIN_READ = text("SELECT id, balance, frozen_balance FROM users WHERE id = :id")


async def handfix_freeze(app, user_id, amount, request_id, work_ms):
    async with app.Session() as s:
        await s.execute(PLAIN_READ, {"id": user_id})
        await asyncio.sleep(work_ms / 1000.0)
        r = await s.execute(HANDFIX_UPDATE, {"a": amount, "id": user_id})
        if r.rowcount == 0:
            await s.rollback()
            raise legacy_app.InsufficientBalance(user_id, amount)
        await s.execute(HANDFIX_INSERT, {"r": request_id, "id": user_id, "a": amount})
        await s.commit()


def setup_conn(args, database=None):
    return pymysql.connect(
        host=args.setup_host, port=args.setup_port, user=args.user, password=args.password,
        database=database, autocommit=True, charset="utf8mb4",
    )


async def warm(app, n):
    ready = asyncio.Event()
    count = [0]

    async def one():
        async with app.engine.connect() as c:
            await c.execute(text("SELECT 1"))
            count[0] += 1
            if count[0] >= n:
                ready.set()
            await ready.wait()

    await asyncio.gather(*(one() for _ in range(n)))


async def run(args) -> dict:
    decimal = args.decimal
    amount = Decimal(args.amount) if decimal else int(Decimal(args.amount))
    users = list(range(1, args.users + 1))
    per_user = -(-args.requests // args.users)
    balance = (Decimal(args.balance) if decimal else int(Decimal(args.balance))) if args.balance else amount * per_user

    db = args.database or f"thaw_loadgen_{uuid.uuid4().hex[:8]}"
    conn = setup_conn(args)
    prev_timeout = None
    try:
        with conn.cursor() as cur:
            if args.lock_wait_timeout is not None:
                cur.execute("SELECT @@GLOBAL.innodb_lock_wait_timeout")
                prev_timeout = int(cur.fetchone()[0])
                cur.execute(f"SET GLOBAL innodb_lock_wait_timeout = {int(args.lock_wait_timeout)}")
            cur.execute(f"CREATE DATABASE `{db}`")  # never reuses an existing database
            cur.execute(f"USE `{db}`")
            for ddl in legacy_app.schema(decimal):
                cur.execute(ddl)
            cur.executemany(
                "INSERT INTO users (id, username, balance, frozen_balance) VALUES (%s, %s, %s, 0)",
                [(u, f"user{u}", balance) for u in users],
            )

        conns = args.concurrency * (2 if args.mode == "two-session" else 1)
        engine = legacy_app.make_engine(args.host, args.port, db, user=args.user, password=args.password,
                                        pool_size=conns + 2)
        app = legacy_app.LegacyBillingApp(engine, decimal=decimal)
        try:
            await warm(app, conns)
            if args.mode == "legacy":
                flow = app.check_and_freeze
            elif args.mode == "two-session":
                flow = app.check_and_freeze_two_session
            else:
                flow = lambda *a: handfix_freeze(app, *a)  # noqa: E731

            sem = asyncio.Semaphore(args.concurrency)
            counts: collections.Counter = collections.Counter()
            errors: collections.Counter = collections.Counter()
            samples: list[str] = []

            async def one(i):
                uid = users[i % len(users)]
                async with sem:
                    try:
                        await flow(uid, amount, uuid.uuid4().hex, args.work_ms)
                        counts["succeeded"] += 1
                    except legacy_app.InsufficientBalance:
                        counts["insufficient"] += 1
                    except Exception as e:  # noqa: BLE001 - counted by code
                        code = legacy_app.db_error_code(e)
                        errors[str(code) if code is not None else type(e).__name__] += 1
                        if len(samples) < 3:
                            samples.append(f"{type(e).__name__}: {str(e)[:200]}")

            t0 = time.monotonic()
            await asyncio.gather(*(one(i) for i in range(args.requests)))
            elapsed = time.monotonic() - t0
        finally:
            await app.dispose()

        # books: frozen_balance == sum of freeze logs, never above balance
        books_ok = True
        with setup_conn(args, db).cursor() as cur:
            cur.execute(
                "SELECT u.id, u.balance, u.frozen_balance, COALESCE(SUM(l.amount), 0) FROM users u "
                "LEFT JOIN compute_freeze_logs l ON l.user_id = u.id AND l.status = 'frozen' GROUP BY u.id"
            )
            for _uid, bal, frz, logged in cur.fetchall():
                if frz != logged or bal < frz or frz < 0:
                    books_ok = False
        return {
            "mode": args.mode,
            "host": args.host,
            "port": args.port,
            "users": args.users,
            "requests": args.requests,
            "concurrency": args.concurrency,
            "work_ms": args.work_ms,
            "decimal": decimal,
            "succeeded": counts["succeeded"],
            "insufficient": counts["insufficient"],
            "errors": dict(errors),
            "elapsed_s": round(elapsed, 4),
            "successful_rps": round(counts["succeeded"] / elapsed, 2) if elapsed > 0 else 0.0,
            "books_ok": books_ok,
            **({"error_samples": samples} if samples else {}),
        }
    finally:
        with conn.cursor() as cur:
            if not args.keep_db and not args.database:
                cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
            if prev_timeout is not None:
                cur.execute(f"SET GLOBAL innodb_lock_wait_timeout = {prev_timeout}")
        conn.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="endpoint the app connects to (MariaDB or thaw)")
    p.add_argument("--port", type=int, default=3306)
    p.add_argument("--users", type=int, default=1)
    p.add_argument("--requests", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--work-ms", type=float, default=50)
    p.add_argument("--mode", choices=["legacy", "two-session", "handfix"], default="legacy")
    p.add_argument("--amount", default="616", help="freeze amount (e.g. 6.16 with --decimal)")
    p.add_argument("--balance", default=None, help="initial balance per user (default: enough for all)")
    p.add_argument("--decimal", action="store_true", help="DECIMAL(18,2) money columns")
    p.add_argument("--user", default="root")
    p.add_argument("--password", default="")
    p.add_argument("--setup-host", default="127.0.0.1", help="direct MariaDB for setup and checks")
    p.add_argument("--setup-port", type=int, default=3306)
    p.add_argument("--database", default=None, help="create the run's database under this (new) name and keep it")
    p.add_argument("--keep-db", action="store_true")
    p.add_argument("--lock-wait-timeout", type=int, default=None,
                   help="set GLOBAL innodb_lock_wait_timeout for the run (restored after)")
    args = p.parse_args(argv)
    result = asyncio.run(run(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
