"""Seeded, bounded interleaving workloads for the billing tables (see test_interleavings.py).

A workload is generated from one integer seed (``random.Random(seed)``): K (3-4) connections,
each with its own list of transactions written the way the legacy billing app writes them
(pymysql, ``autocommit=0``, keyed ``SELECT ... FOR UPDATE``, decide in Python, ABSOLUTE
``UPDATE users SET ... WHERE id = <literal>``, the freeze-log write, ``COMMIT``):

  freeze   one or two users (legs); per leg: lock-read, check ``balance - frozen >= amount``
           (else the app rolls back: "insufficient"), INSERT the log (status 'frozen'),
           ``UPDATE users SET frozen_balance=<f+a>, updated_at=now()``; log before or after
           the UPDATE, as the generator says.
  settle   lock-read the log by request_id (not governed: forwarded with its lock), skip unless
           'frozen'; lock-read the user; ``balance=<b-a>, frozen_balance=<f-a>``; log 'settled'.
  refund   as settle, ``frozen_balance=<f-a>``; log 'refunded'.
  topup    lock-read; ``balance=<b+a>``.
  rename   lock-read; ``username=<read name>.<token>`` (a CAS column: a lost update would drop
           a token from the chain).
Flags per transaction: ``reread`` (a plain SELECT of the same row again before writing; the
app then decides on the re-read values; only for the first user read, see Runner.read_user), ``savepoint`` (SAVEPOINT, a scratch write,
ROLLBACK TO SAVEPOINT, then the real write computed from the values read before the savepoint).

The app's retry loop: 1213 / 1205 -> ROLLBACK, short backoff, rerun the whole transaction
(bounded attempts); 1644 ("insufficient balance", thaw's guard) on a freeze -> the freeze
simply fails (ROLLBACK). Anything else is an unexpected error and fails the run.

``check_books`` then verifies the final rows against what the app believes it committed.
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field

import pymysql

DB_HOST = os.environ.get("THAW_TEST_DB_HOST", "127.0.0.1")
DB_PORT = int(os.environ.get("THAW_TEST_DB_PORT", "3306"))

DEADLOCK = 1213
LOCK_WAIT = 1205
VIOLATION = 1644
RETRYABLE = (DEADLOCK, LOCK_WAIT)
MAX_ATTEMPTS = 12
LOCK_WAIT_TIMEOUT_S = 2

SCHEMA = [
    """CREATE TABLE users (id BIGINT PRIMARY KEY, username VARCHAR(64),
  balance BIGINT NOT NULL, frozen_balance BIGINT NOT NULL, updated_at DATETIME NULL)""",
    """CREATE TABLE compute_freeze_logs (id BIGINT PRIMARY KEY AUTO_INCREMENT,
  request_id VARCHAR(64) NOT NULL UNIQUE, user_id BIGINT NOT NULL,
  amount BIGINT NOT NULL, status VARCHAR(16) NOT NULL)""",
]

USER_COLS = "id, username, balance, frozen_balance, updated_at"


# --------------------------------------------------------------------------- workload


@dataclass
class Leg:
    user: int
    amount: int
    request_id: str


@dataclass
class Tx:
    txid: str                     # "c2.t5": connection 2, its 5th transaction
    kind: str                     # freeze | settle | refund | topup | rename
    legs: list[Leg] = field(default_factory=list)  # freeze: 1-2 legs; topup/rename: 1 leg
    target: str | None = None     # settle/refund: request_id of an earlier generated freeze
    reread: bool = False
    savepoint: str | None = None  # None | "balance" (balance=b+1) | "frozen" (freeze only: f+a)
    log_first: bool = False       # log write before the users UPDATE
    token: str = ""               # rename: appended to the username

    def describe(self) -> str:
        flags = [f for f, on in (("reread", self.reread), ("log_first", self.log_first)) if on]
        if self.savepoint:
            flags.append(f"sp:{self.savepoint}")
        if self.kind in ("settle", "refund"):
            what = f"{self.target}"
        elif self.kind == "rename":
            what = f"u{self.legs[0].user} +{self.token}"
        else:
            what = ", ".join(f"u{l.user}:{l.amount}" + (f"[{l.request_id}]" if self.kind == "freeze" else "")
                             for l in self.legs)
        return f"{self.txid} {self.kind}({what}){' ' + ','.join(flags) if flags else ''}"


@dataclass
class Workload:
    seed: int
    initial: dict[int, int]                # user id -> initial balance
    conns: list[list[Tx]]

    def describe(self) -> str:
        lines = [f"seed {self.seed}: users {self.initial}, {len(self.conns)} connections"]
        for i, txs in enumerate(self.conns):
            lines.append(f"  c{i}: " + "; ".join(t.describe() for t in txs))
        return "\n".join(lines)


def generate(seed: int, n_tx: int = 40, n_users: int = 3) -> Workload:
    rng = random.Random(seed)
    k = rng.choice([3, 4])
    users = list(range(1, n_users + 1))
    initial = {u: rng.randrange(60, 260) for u in users}
    weights = [6, 3, 1][:n_users] + [1] * max(0, n_users - 3)   # user 1 is hot
    conns: list[list[Tx]] = [[] for _ in range(k)]
    freezes: list[str] = []
    renames = {u: 0 for u in users}

    def pick_user(exclude=()):
        while True:
            u = rng.choices(users, weights)[0]
            if u not in exclude:
                return u

    for i in range(n_tx):
        c = rng.randrange(k)
        txid = f"c{c}.t{len(conns[c])}"
        r = rng.random()
        kind = ("freeze" if r < 0.45 else "settle" if r < 0.60 else "refund" if r < 0.72
                else "topup" if r < 0.93 else "rename")
        if kind in ("settle", "refund") and not freezes:
            kind = "freeze"
        tx = Tx(txid=txid, kind=kind, reread=rng.random() < 0.3, log_first=rng.random() < 0.5)
        if kind == "freeze":
            n_legs = 2 if rng.random() < 0.2 else 1
            picked: list[int] = []
            for j in range(n_legs):
                u = pick_user(exclude=picked)
                picked.append(u)
                rid = f"s{seed}-{txid}-{j}"
                tx.legs.append(Leg(u, rng.randrange(5, 70), rid))
                freezes.append(rid)
        elif kind in ("settle", "refund"):
            tx.target = rng.choice(freezes)
        elif kind == "topup":
            tx.legs.append(Leg(pick_user(), rng.randrange(5, 60), ""))
        else:
            u = pick_user()
            if renames[u] >= 10:                 # VARCHAR(64): keep the token chain short
                tx.kind, kind = "topup", "topup"
                tx.legs.append(Leg(u, rng.randrange(5, 60), ""))
            else:
                renames[u] += 1
                tx.legs.append(Leg(u, 0, ""))
                tx.token = f"{c}{len(conns[c])}"
        if rng.random() < 0.3 and kind != "rename":
            tx.savepoint = "frozen" if kind == "freeze" and rng.random() < 0.5 else "balance"
        conns[c].append(tx)
    return Workload(seed=seed, initial=initial, conns=conns)


# --------------------------------------------------------------------------- schema


def admin_connect(database: str | None = None):
    return pymysql.connect(host=DB_HOST, port=DB_PORT, user="root", password="", database=database,
                           autocommit=True, connect_timeout=5, read_timeout=60)


def setup_schema(db: str, wl: Workload) -> None:
    conn = admin_connect(db)
    try:
        with conn.cursor() as cur:
            for sql in SCHEMA:
                cur.execute(sql)
            for u, bal in wl.initial.items():
                cur.execute("INSERT INTO users (id, username, balance, frozen_balance) VALUES (%s, %s, %s, 0)",
                            (u, f"u{u}", bal))
    finally:
        conn.close()


def read_state(db: str):
    conn = admin_connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id, username, balance, frozen_balance FROM users ORDER BY id")
            users = {r[0]: {"username": r[1], "balance": r[2], "frozen": r[3]} for r in cur.fetchall()}
            cur.execute("SELECT request_id, user_id, amount, status FROM compute_freeze_logs ORDER BY id")
            logs = [tuple(r) for r in cur.fetchall()]
        return users, logs
    finally:
        conn.close()


# --------------------------------------------------------------------------- running


class Transcript:
    def __init__(self):
        self.t0 = time.monotonic()
        self.lines: list[tuple[float, str]] = []
        self.lock = threading.Lock()

    def add(self, who: str, text: str) -> None:
        with self.lock:
            self.lines.append((time.monotonic() - self.t0, f"{who:<12} {text}"))

    def text(self, limit: int | None = None) -> str:
        with self.lock:
            lines = sorted(self.lines, key=lambda x: x[0])
        if limit is not None and len(lines) > limit:
            skipped = len(lines) - limit
            lines = lines[:limit // 4] + [(0.0, f"... {skipped} lines skipped ...")] + lines[-(limit - limit // 4):]
        return "\n".join(f"{t:8.3f} {s}" for t, s in lines)


class Declined(Exception):
    """The app itself decided not to go on (insufficient balance, log not frozen)."""


@dataclass
class Outcome:
    tx: Tx
    status: str                   # committed | declined:<why> | gave_up | unexpected
    attempts: int
    detail: str = ""
    effects: dict = field(default_factory=dict)   # what the app believes it committed


class Runner:
    """Runs one connection's transaction list, the way the app would."""

    def __init__(self, idx: int, host: str, port: int, db: str, txs: list[Tx], seed: int,
                 transcript: Transcript):
        self.idx = idx
        self.host, self.port, self.db = host, port, db
        self.txs = txs
        self.rng = random.Random(f"{seed}-sleep-{idx}")
        self.tr = transcript
        self.outcomes: list[Outcome] = []
        self.conn = None
        self.cur_tx = "-"
        self.attempt = 0
        self.counts = {"1213": 0, "1205": 0, "1644": 0}

    # ---- connection
    def connect(self):
        self.conn = pymysql.connect(
            host=self.host, port=self.port, user="root", password="", database=self.db,
            autocommit=False, connect_timeout=5, read_timeout=30, write_timeout=30,
            init_command=f"SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_TIMEOUT_S}",
        )
        self.conn.autocommit(False)

    def pause(self):
        r = self.rng.random()
        if r < 0.35:
            return
        time.sleep(self.rng.uniform(0.0005, 0.012))

    def who(self) -> str:
        return f"{self.cur_tx}#{self.attempt}"

    def q(self, sql: str, args=None, fetch: bool = False):
        """Execute one statement (after a random pause), log it and its answer."""
        self.pause()
        text = self.conn.cursor().mogrify(sql, args) if args is not None else sql
        text = " ".join(text.split())
        with self.conn.cursor() as cur:
            try:
                n = cur.execute(text)
            except pymysql.err.MySQLError as e:
                code = e.args[0] if e.args and isinstance(e.args[0], int) else None
                msg = e.args[1] if len(e.args) > 1 else str(e)
                self.tr.add(self.who(), f"{text}  -> ERROR {code} {msg}")
                raise
            rows = cur.fetchall() if fetch else None
        if fetch:
            self.tr.add(self.who(), f"{text}  -> {list(rows)}")
        else:
            self.tr.add(self.who(), f"{text}  -> ok, {n} affected")
        return rows

    def rollback_quietly(self):
        try:
            self.q("ROLLBACK")
        except pymysql.err.MySQLError:
            pass

    # ---- transaction bodies; each returns the effects the app believes committed
    def read_user(self, tx: Tx, user: int, first: bool = True):
        rows = self.q(f"SELECT {USER_COLS} FROM users WHERE id = %s FOR UPDATE", (user,), fetch=True)
        if not rows:
            raise AssertionError(f"user {user} vanished")
        row = rows[0]
        # Only the transaction's first user read is re-read: under REPEATABLE READ a plain
        # SELECT after an earlier consistent read returns that snapshot, not the locked row,
        # and the legacy app would then lose an update itself (seen direct, seed 11).
        if tx.reread and first:
            again = self.q(f"SELECT {USER_COLS} FROM users WHERE id = %s", (user,), fetch=True)
            row = again[0]
        _, name, bal, frozen, _ = row
        return name, bal, frozen

    def scratch(self, tx: Tx, user: int, bal: int, frozen: int, amount: int):
        """SAVEPOINT, an invariant-safe write, ROLLBACK TO: the real write follows."""
        self.q("SAVEPOINT sp1")
        if tx.savepoint == "frozen":
            self.q("UPDATE users SET frozen_balance=%s, updated_at=now() WHERE id = %s", (frozen + amount, user))
        else:
            self.q("UPDATE users SET balance=%s, updated_at=now() WHERE id = %s", (bal + 1, user))
        self.q("ROLLBACK TO SAVEPOINT sp1")

    def body_freeze(self, tx: Tx):
        for j, leg in enumerate(tx.legs):
            _, bal, frozen = self.read_user(tx, leg.user, first=j == 0)
            if bal - frozen < leg.amount:
                raise Declined(f"insufficient (app): u{leg.user} has {bal - frozen} < {leg.amount}")
            if tx.savepoint:
                self.scratch(tx, leg.user, bal, frozen, leg.amount)
            ins = ("INSERT INTO compute_freeze_logs (request_id, user_id, amount, status) "
                   "VALUES (%s, %s, %s, 'frozen')", (leg.request_id, leg.user, leg.amount))
            if tx.log_first:
                self.q(*ins)
            self.q("UPDATE users SET frozen_balance=%s, updated_at=now() WHERE id = %s",
                   (frozen + leg.amount, leg.user))
            if not tx.log_first:
                self.q(*ins)
        self.q("COMMIT")
        return {"freeze": [(l.request_id, l.user, l.amount) for l in tx.legs]}

    def body_close(self, tx: Tx):
        rows = self.q("SELECT id, user_id, amount, status FROM compute_freeze_logs WHERE request_id = %s FOR UPDATE",
                      (tx.target,), fetch=True)
        if not rows:
            raise Declined(f"no log {tx.target}")
        log_id, user, amount, status = rows[0]
        if status != "frozen":
            raise Declined(f"log {tx.target} is {status}")
        _, bal, frozen = self.read_user(tx, user)
        if frozen < amount or (tx.kind == "settle" and bal < amount):
            # cannot happen while the books are exact: make it loud
            raise AssertionError(f"books broken: u{user} balance {bal} frozen {frozen} < log amount {amount}")
        if tx.savepoint:
            self.scratch(tx, user, bal, frozen, amount)
        new_status = "settled" if tx.kind == "settle" else "refunded"
        upd_log = ("UPDATE compute_freeze_logs SET status=%s WHERE id = %s", (new_status, log_id))
        if tx.log_first:
            self.q(*upd_log)
        if tx.kind == "settle":
            self.q("UPDATE users SET balance=%s, frozen_balance=%s, updated_at=now() WHERE id = %s",
                   (bal - amount, frozen - amount, user))
        else:
            self.q("UPDATE users SET frozen_balance=%s, updated_at=now() WHERE id = %s", (frozen - amount, user))
        if not tx.log_first:
            self.q(*upd_log)
        self.q("COMMIT")
        return {tx.kind: (tx.target, user, amount)}

    def body_topup(self, tx: Tx):
        leg = tx.legs[0]
        _, bal, frozen = self.read_user(tx, leg.user)
        if tx.savepoint:
            self.scratch(tx, leg.user, bal, frozen, leg.amount)
        self.q("UPDATE users SET balance=%s, updated_at=now() WHERE id = %s", (bal + leg.amount, leg.user))
        self.q("COMMIT")
        return {"topup": (leg.user, leg.amount)}

    def body_rename(self, tx: Tx):
        leg = tx.legs[0]
        name, _, _ = self.read_user(tx, leg.user)
        self.q("UPDATE users SET username=%s, updated_at=now() WHERE id = %s", (f"{name}.{tx.token}", leg.user))
        self.q("COMMIT")
        return {"rename": (leg.user, tx.token)}

    def run_tx(self, tx: Tx) -> Outcome:
        body = {"freeze": self.body_freeze, "settle": self.body_close, "refund": self.body_close,
                "topup": self.body_topup, "rename": self.body_rename}[tx.kind]
        self.cur_tx = tx.txid
        for attempt in range(1, MAX_ATTEMPTS + 1):
            self.attempt = attempt
            try:
                effects = body(tx)
                return Outcome(tx, "committed", attempt, effects=effects)
            except Declined as d:
                self.tr.add(self.who(), f"app declines: {d}")
                self.rollback_quietly()
                return Outcome(tx, "declined", attempt, str(d))
            except pymysql.err.OperationalError as e:
                code = e.args[0] if e.args else None
                if code in RETRYABLE:
                    self.counts[str(code)] += 1
                    self.rollback_quietly()
                    time.sleep(self.rng.uniform(0.002, 0.010 * attempt))
                    continue
                if code == VIOLATION:
                    self.counts["1644"] += 1
                    self.rollback_quietly()
                    if tx.kind == "freeze":
                        return Outcome(tx, "declined", attempt, f"insufficient (db): {e.args[1]}")
                    return Outcome(tx, "unexpected", attempt, f"1644 on a {tx.kind}: {e!r}")
                self.rollback_quietly()
                if code in (2006, 2013, 2014) or code is None:
                    self.reconnect()
                return Outcome(tx, "unexpected", attempt, repr(e))
            except pymysql.err.MySQLError as e:
                # e.g. 1062 duplicate request_id: an earlier attempt's log survived
                self.rollback_quietly()
                return Outcome(tx, "unexpected", attempt, repr(e))
            except AssertionError as e:
                self.tr.add(self.who(), f"app check failed: {e}")
                self.rollback_quietly()
                return Outcome(tx, "unexpected", attempt, str(e))
        return Outcome(tx, "gave_up", MAX_ATTEMPTS, "retries exhausted")

    def reconnect(self):
        try:
            self.conn.close()
        except Exception:
            pass
        try:
            self.connect()
        except Exception as e:  # the next statements fail and are reported
            self.tr.add(f"c{self.idx}", f"reconnect failed: {e!r}")

    def run(self, barrier: threading.Barrier):
        try:
            self.connect()
            barrier.wait(timeout=30)
            for tx in self.txs:
                out = self.run_tx(tx)
                self.tr.add(f"{tx.txid}", f"== {out.status} after {out.attempts} attempt(s) {out.detail}")
                self.outcomes.append(out)
        except Exception as e:  # a broken runner must not pass silently
            self.tr.add(f"c{self.idx}", f"runner crashed: {e!r}")
            done = {o.tx.txid for o in self.outcomes}
            for tx in self.txs:
                if tx.txid not in done:
                    self.outcomes.append(Outcome(tx, "unexpected", 0, f"runner crashed: {e!r}"))
        finally:
            if self.conn is not None:
                try:
                    self.conn.close()
                except Exception:
                    pass


@dataclass
class RunResult:
    workload: Workload
    outcomes: list[Outcome]
    transcript: Transcript
    elapsed: float
    counts: dict

    def summary(self) -> str:
        by: dict[str, int] = {}
        for o in self.outcomes:
            key = o.status if o.status != "declined" else ("declined-db" if "(db)" in o.detail else "declined")
            by[key] = by.get(key, 0) + 1
        return (f"seed {self.workload.seed}: {len(self.outcomes)} tx in {self.elapsed:.2f}s, "
                f"{dict(sorted(by.items()))}, errors seen {self.counts}")


def run_workload(host: str, port: int, db: str, wl: Workload) -> RunResult:
    tr = Transcript()
    runners = [Runner(i, host, port, db, txs, wl.seed, tr) for i, txs in enumerate(wl.conns)]
    barrier = threading.Barrier(len(runners))
    threads = [threading.Thread(target=r.run, args=(barrier,), daemon=True) for r in runners]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    hung = [r.idx for r, t in zip(runners, threads) if t.is_alive()]
    elapsed = time.monotonic() - t0
    outcomes = [o for r in runners for o in r.outcomes]
    for i in hung:
        tr.add(f"c{i}", "runner still running after 120 s (hung)")
        outcomes.append(Outcome(Tx(f"c{i}.hung", "hung"), "unexpected", 0, "runner hung"))
    counts = {"1213": 0, "1205": 0, "1644": 0}
    for r in runners:
        for k, v in r.counts.items():
            counts[k] += v
    return RunResult(wl, outcomes, tr, elapsed, counts)


# --------------------------------------------------------------------------- checks


def check_books(db: str, res: RunResult) -> list[str]:
    """Every problem found (empty list: the run is correct)."""
    problems: list[str] = []
    wl = res.workload
    users, logs = read_state(db)

    for o in res.outcomes:
        if o.status == "unexpected":
            problems.append(f"{o.tx.describe()}: unexpected error: {o.detail}")
        elif o.status == "gave_up":
            # thaw's refusals are never permanent, and direct a transaction that deadlocks
            # MAX_ATTEMPTS times in a row does not happen at this size
            problems.append(f"{o.tx.describe()}: still 1213/1205 after {o.attempts} attempts")

    # what the app believes it committed
    frozen_by_app: dict[str, tuple[int, int]] = {}
    closed_by_app: dict[str, list[str]] = {}
    topups = {u: 0 for u in wl.initial}
    tokens: dict[int, list[str]] = {u: [] for u in wl.initial}
    failed_freezes: set[str] = set()
    for o in res.outcomes:
        if o.tx.kind == "freeze" and o.status != "committed":
            failed_freezes.update(l.request_id for l in o.tx.legs)
        if o.status != "committed":
            continue
        for rid, u, a in o.effects.get("freeze", ()):
            if rid in frozen_by_app:
                problems.append(f"app committed freeze {rid} twice")
            frozen_by_app[rid] = (u, a)
        for kind in ("settle", "refund"):
            if kind in o.effects:
                rid, u, a = o.effects[kind]
                closed_by_app.setdefault(rid, []).append(kind)
        if "topup" in o.effects:
            u, a = o.effects["topup"]
            topups[u] += a
        if "rename" in o.effects:
            u, tok = o.effects["rename"]
            tokens[u].append(tok)

    expect_status: dict[str, str] = {}
    for rid in frozen_by_app:
        closes = closed_by_app.get(rid, [])
        if len(closes) > 1:
            problems.append(f"log {rid} closed {len(closes)} times by committed transactions: {closes}")
        expect_status[rid] = {"settle": "settled", "refund": "refunded"}[closes[0]] if closes else "frozen"
    for rid in closed_by_app:
        if rid not in frozen_by_app:
            problems.append(f"log {rid} was closed by the app but its freeze never committed")

    # logs in the database vs the app's belief (exactly once, nothing for failed freezes)
    seen: dict[str, int] = {}
    for rid, u, a, st in logs:
        seen[rid] = seen.get(rid, 0) + 1
        if rid in failed_freezes:
            problems.append(f"log {rid} ({st}, u{u}, {a}) exists although its freeze transaction failed")
        elif rid not in frozen_by_app:
            problems.append(f"log {rid} ({st}, u{u}, {a}) exists but no committed freeze wrote it")
        else:
            if frozen_by_app[rid] != (u, a):
                problems.append(f"log {rid} is u{u} {a}, the app froze {frozen_by_app[rid]}")
            if st != expect_status[rid]:
                problems.append(f"log {rid} has status {st}, the app believes {expect_status[rid]}")
    for rid, n in seen.items():
        if n > 1:
            problems.append(f"log {rid} exists {n} times")
    for rid in frozen_by_app:
        if rid not in seen:
            problems.append(f"committed freeze {rid} {frozen_by_app[rid]} has no log row")

    # the books, per user
    for u, init in wl.initial.items():
        row = users.get(u)
        if row is None:
            problems.append(f"user {u} is gone")
            continue
        bal, frozen = row["balance"], row["frozen"]
        if frozen < 0:
            problems.append(f"u{u}: frozen_balance {frozen} < 0")
        if bal - frozen < 0:
            problems.append(f"u{u}: balance {bal} - frozen {frozen} < 0")
        db_frozen = sum(a for rid, uu, a, st in logs if uu == u and st == "frozen")
        db_settled = sum(a for rid, uu, a, st in logs if uu == u and st == "settled")
        app_frozen = sum(a for rid, (uu, a) in frozen_by_app.items() if uu == u and expect_status[rid] == "frozen")
        app_settled = sum(a for rid, (uu, a) in frozen_by_app.items() if uu == u and expect_status[rid] == "settled")
        if frozen != db_frozen:
            problems.append(f"u{u}: frozen_balance {frozen} != sum of frozen logs {db_frozen}")
        if frozen != app_frozen:
            problems.append(f"u{u}: frozen_balance {frozen} != what the app froze and did not close {app_frozen}")
        want_bal = init + topups[u] - app_settled
        if bal != want_bal:
            problems.append(f"u{u}: balance {bal} != initial {init} + topups {topups[u]} - settled {app_settled}"
                            f" = {want_bal} (settled logs in db: {db_settled})")
        chain = row["username"].split(".")
        if chain[0] != f"u{u}" or sorted(chain[1:]) != sorted(tokens[u]):
            problems.append(f"u{u}: username {row['username']!r}, committed renames {tokens[u]}")
    return problems


def report(db: str, res: RunResult, problems: list[str], route: str, extra: str = "") -> str:
    users, logs = read_state(db)
    parts = [
        f"interleaving run FAILED via {route}: seed {res.workload.seed} "
        f"(rerun: THAW_FUZZ_SEEDS={res.workload.seed})",
        res.summary(),
        "problems:\n  " + "\n  ".join(problems),
        "workload:\n" + res.workload.describe(),
        f"final users: {users}",
        f"final logs: {logs}",
        "outcomes:\n  " + "\n  ".join(f"{o.tx.describe()} -> {o.status} ({o.attempts}) {o.detail}"
                                      for o in sorted(res.outcomes, key=lambda o: o.tx.txid)),
        "transcript:\n" + res.transcript.text(limit=int(os.environ.get("THAW_FUZZ_TRANSCRIPT_LINES", "1500"))),
    ]
    if extra:
        parts.append(extra)
    return "\n\n".join(parts)
