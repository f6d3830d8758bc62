"""Load generator: the legacy freeze flow over mysql-connector-python, as
text queries or as server-side prepared statements (binary protocol).

REQUESTS concurrent requests (one thread and connection each), for one user
(--users 1, the burst) or spread over several (no contention: the client's
own cost of each protocol):

    BEGIN
    SELECT id, balance, frozen_balance FROM users WHERE id = ? FOR UPDATE
    (work_ms of app work; the app checks balance - frozen_balance >= amount)
    INSERT INTO compute_freeze_logs (request_id, user_id, amount, status) VALUES (?, ?, ?, 'frozen')
    UPDATE users SET frozen_balance = ?, updated_at = NOW() WHERE id = ?   -- absolute
    COMMIT

Prints one JSON line per burst: successes, insufficient-balance answers, errors by
code, successful requests/s and whether the books balance (frozen equals
the sum of the freeze logs). For bench/prepared.sh, not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from decimal import Decimal

import mysql.connector

SCHEMA = [
    """CREATE TABLE users (id BIGINT PRIMARY KEY, username VARCHAR(64),
  balance DECIMAL(18,2) NOT NULL DEFAULT 0, frozen_balance DECIMAL(18,2) NOT NULL DEFAULT 0,
  updated_at DATETIME NULL)""",
    """CREATE TABLE compute_freeze_logs (id BIGINT PRIMARY KEY AUTO_INCREMENT,
  request_id VARCHAR(64) NOT NULL UNIQUE, user_id BIGINT NOT NULL,
  amount DECIMAL(18,2) NOT NULL, status VARCHAR(16) NOT NULL, created_at DATETIME
  DEFAULT CURRENT_TIMESTAMP)""",
    "CREATE TABLE conversations (id BIGINT PRIMARY KEY, message_count INT NOT NULL DEFAULT 0, total_tokens BIGINT NOT NULL DEFAULT 0)",
]


def connect(host: str, port: int, database: str | None = None):
    return mysql.connector.connect(host=host, port=port, user="root", password="", database=database, use_pure=True,
                                   autocommit=False)


def setup(args) -> str:
    db = f"bench_ps_{uuid.uuid4().hex[:8]}"
    c = connect(args.setup_host, args.setup_port)
    cur = c.cursor()
    cur.execute(f"CREATE DATABASE {db}")
    cur.execute(f"USE {db}")
    for s in SCHEMA:
        cur.execute(s)
    for uid in range(1, args.users + 1):
        cur.execute("INSERT INTO users (id, username, balance) VALUES (%s, %s, %s)", (uid, f"u{uid}", Decimal(args.balance)))
    c.commit()
    c.close()
    return db


def freeze(conn, prepared: bool, amount: Decimal, work_ms: int, uid: int) -> str:
    cur = conn.cursor(prepared=prepared)
    try:
        conn.start_transaction()
        cur.execute("SELECT id, balance, frozen_balance FROM users WHERE id = %s FOR UPDATE", (uid,))
        (_, balance, frozen) = cur.fetchone()
        time.sleep(work_ms / 1000)
        if balance - frozen < amount:
            conn.rollback()
            return "insufficient"
        cur.execute("INSERT INTO compute_freeze_logs (request_id, user_id, amount, status) VALUES (%s, %s, %s, 'frozen')",
                    (uuid.uuid4().hex, uid, amount))
        cur.execute("UPDATE users SET frozen_balance = %s, updated_at = NOW() WHERE id = %s", (frozen + amount, uid))
        conn.commit()
        return "ok"
    except mysql.connector.Error as e:
        try:
            conn.rollback()
        except mysql.connector.Error:
            pass
        return "insufficient" if e.errno == 1644 else str(e.errno)
    finally:
        cur.close()


def run(args) -> list[dict]:
    db = setup(args)
    conns = [connect(args.host, args.port, db) for _ in range(args.requests)]
    if args.lock_wait_timeout:
        for c in conns:
            c.cursor().execute(f"SET SESSION innodb_lock_wait_timeout = {int(args.lock_wait_timeout)}")
    bursts = [run_burst(args, conns) for _ in range(args.bursts)]
    for c in conns:
        c.close()
    c = connect(args.setup_host, args.setup_port, db)
    cur = c.cursor()
    cur.execute("SELECT SUM(frozen_balance) FROM users")
    (frozen,) = cur.fetchone()
    cur.execute("SELECT COALESCE(SUM(amount), 0), COUNT(*) FROM compute_freeze_logs")
    (logged, count) = cur.fetchone()
    cur.execute(f"DROP DATABASE {db}")
    c.close()
    ok_all = sum(results.count("ok") for results, _ in bursts)
    lines = []
    for n, (results, elapsed) in enumerate(bursts, 1):
        ok = results.count("ok")
        errors: dict[str, int] = {}
        for r in results:
            if r not in ("ok", "insufficient"):
                errors[r] = errors.get(r, 0) + 1
        lines.append({
            "mode": "prepared" if args.prepared else "text",
            "client": "mysql-connector-python",
            "burst": n,
            "requests": args.requests,
            "succeeded": ok,
            "insufficient": results.count("insufficient"),
            "errors": errors,
            "seconds": round(elapsed, 3),
            "successful_rps": round(ok / elapsed, 1),
            # over all bursts
            "books_ok": Decimal(frozen) == Decimal(logged) and count == ok_all,
        })
    return lines


def run_burst(args, conns) -> tuple[list[str], float]:
    """Every connection runs one request at once; (outcomes, seconds)."""
    results: list[str] = [""] * args.requests
    start = threading.Barrier(args.requests + 1)

    def one(i: int) -> None:
        start.wait()
        results[i] = freeze(conns[i], args.prepared, Decimal(args.amount), args.work_ms, 1 + i % args.users)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(args.requests)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.monotonic()
    for t in threads:
        t.join()
    return results, time.monotonic() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--setup-host", default="127.0.0.1")
    p.add_argument("--setup-port", type=int, default=3306)
    p.add_argument("--prepared", action="store_true")
    p.add_argument("--requests", type=int, default=100)
    p.add_argument("--users", type=int, default=1, help="requests spread over this many users (1: the same-user burst)")
    p.add_argument("--bursts", type=int, default=1, help="bursts on the same connections (a pooled app: later ones are warm)")
    p.add_argument("--work-ms", type=int, default=50)
    p.add_argument("--amount", default="5.00")
    p.add_argument("--balance", default="1000.00")
    p.add_argument("--lock-wait-timeout", type=int, default=2)
    args = p.parse_args(argv)
    for line in run(args):
        print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
