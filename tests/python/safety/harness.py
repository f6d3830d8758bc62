"""Differential harness for the safety suite (tests/python/safety/).

A case is a function ``scenario(env, db)``: ``env`` is the connection
factory (``env()`` is a pymysql connection to the endpoint under test, with
``database=db`` and ``autocommit=0``; ``env.sqlalchemy_engine()`` an engine
over it) and ``db`` the case's fresh database. The scenario runs an
application sequence through ``env.app()`` (or ``env.recorder()`` notes for
ORM code), wrapped in ``run_with_retry`` where the app retries deadlocks, so
everything the app saw (rows, rowcounts, error codes, in order, one list per
attempt) ends up in a transcript; its return value is recorded too. A second
session is ``env.concurrent(fn)``: the scenario calls ``.fire()`` where the
concurrent change happens and ``.join()`` after the app's transaction.

``check(...)`` runs the scenario once per *run*, each on its own fresh
database (schema from ``setup(env)``), and compares outcome = final rows of
every table + transcripts:

- reference: direct against MariaDB, the other session (``env.concurrent``)
  really concurrent: it blocks on the app's lock, so this is a serial order;
- subject: the endpoint under test (``via`` = "direct" or "thaw");
- with a concurrent session, also the two explicit serial orders direct:
  "other first" (it runs before the app) and "other last" (after the app).

Without a concurrent session, the subject must equal the reference exactly,
every attempt included (no 1213 either). With one, it must equal one of the
references in final rows, in what the other session saw, and in the shape of
the app's final attempt (statements and their success or error code; the
values read may differ, as they do between serial orders). Attempts before
the final one must each have ended in 1213 (the app's deadlock retry), and
``books`` (if given) must hold for every run. ``expect_retry`` also requires
that thaw refused the first attempt with its own 1213 ("thaw: ...").

THAW_SAFETY_DEBUG=1 prints whether the reference's other session blocked.
"""

from __future__ import annotations

import decimal
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pymysql

from conftest import DB_PASSWORD, DB_USER, DIRECT_HOST, DIRECT_PORT, admin_connect, admin_exec, unique_name
from safety.deferral import DEFER, at_the_update

DEADLOCK = 1213
LOCK_WAIT = 1205
VIOLATION = 1644
DUP_KEY = 1062
# per-session innodb_lock_wait_timeout of every connection the harness opens:
# long enough that a session blocked on the app's lock outlives the app's
# transaction, short enough that a bug cannot hang the suite.
LOCK_WAIT_TIMEOUT = 8
RETRY_ATTEMPTS = 5


# --------------------------------------------------------------------- errors
def error_code(exc: BaseException) -> int | None:
    """The server error code of a pymysql / MySQLdb / mysql-connector /
    SQLAlchemy / Django exception, else None."""
    for e in (exc, getattr(exc, "orig", None), getattr(exc, "__cause__", None)):
        if e is None:
            continue
        errno = getattr(e, "errno", None)
        if isinstance(errno, int) and errno > 0:
            return errno
        args = getattr(e, "args", ())
        if args and isinstance(args[0], int):
            return args[0]
    return None


def error_message(exc: BaseException) -> str:
    for e in (exc, getattr(exc, "orig", None), getattr(exc, "__cause__", None)):
        if isinstance(getattr(e, "msg", None), str) and isinstance(getattr(e, "errno", None), int):
            return e.msg  # mysql-connector
        args = getattr(e, "args", ()) if e is not None else ()
        if len(args) >= 2 and isinstance(args[1], str):
            return args[1]
    return str(exc)


class DbError(Exception):
    """A server error the app saw (raised by App.q after recording it)."""

    def __init__(self, code: int, msg: str, sql: str):
        super().__init__(code, msg)
        self.code = code
        self.msg = msg
        self.sql = sql


# ----------------------------------------------------------------- recording
_LITERAL = re.compile(r"'(?:[^'\\]|\\.|'')*'|\b\d+(?:\.\d+)?\b")


def shape_of(sql: str) -> str:
    """The statement with its literals replaced by ?, for shape comparison."""
    return re.sub(r"\s+", " ", _LITERAL.sub("?", sql)).strip()


def _plain(v):
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    if isinstance(v, (list, tuple)):
        return tuple(_plain(x) for x in v)
    return v


class Recorder:
    """What one session saw, one list of entries per attempt.

    Entries: ("ok", sql, rowcount, rows), ("err", sql, code),
    ("note", label, value), ("raised", code) (an attempt ended with it),
    ("result", value)."""

    def __init__(self, name: str, normalize: Callable[[str], str]):
        self.name = name
        self.normalize = normalize
        self.attempts: list[list[tuple]] = [[]]
        self.messages: list[tuple[int, str]] = []  # (code, message) of every error seen
        self.loops = 0
        self.tries = 0

    def new_attempt(self, first: bool) -> None:
        """Start the transcript of a (re)try: a new list opened by
        ("attempt", loop, n) (loop counts run_with_retry calls, n the tries of
        one call). Statements outside any attempt stay in their own lists."""
        if first:
            self.loops += 1
            self.tries = 0
        self.tries += 1
        if not self.attempts[-1]:
            self.attempts.pop()
        self.attempts.append([("attempt", self.loops, self.tries)])

    def end_attempt(self) -> None:
        self.attempts.append([])

    def add(self, entry: tuple) -> None:
        self.attempts[-1].append(entry)

    def note(self, label: str, value: Any) -> None:
        self.add(("note", label, _plain(value)))

    @property
    def final(self) -> list[tuple]:
        return self.attempts[-1]

    def codes(self) -> list[int]:
        """Every error code this session saw, in order."""
        return [e[2] for a in self.attempts for e in a if e[0] == "err"]


def skeleton(entries: list[tuple]) -> list[tuple]:
    """Statement shapes and outcomes, without values."""
    out = []
    for e in entries:
        if e[0] == "ok":
            out.append(("ok", shape_of(e[1])))
        elif e[0] == "err":
            out.append(("err", shape_of(e[1]), e[2]))
        elif e[0] == "note":
            out.append(("note", e[1]))
        else:
            out.append(e)
    return out


class App:
    """An application connection that records what it sees."""

    def __init__(self, conn, rec: Recorder):
        self.conn = conn
        self.rec = rec

    def q(self, sql: str, args=None) -> tuple:
        """Run one COM_QUERY; record every result set (or the error); return
        the first result set's rows. An error is recorded, then raised as DbError."""
        cur = self.conn.cursor()
        label = self.rec.normalize(sql if isinstance(sql, str) else sql.decode("latin1"))
        try:
            cur.execute(sql, args)
            first = tuple(_plain(r) for r in cur.fetchall())
            self.rec.add(("ok", label, cur.rowcount, first))
            while cur.nextset():
                self.rec.add(("ok", label + " <next result>", cur.rowcount, tuple(_plain(r) for r in cur.fetchall())))
            return first
        except pymysql.err.MySQLError as e:
            code = error_code(e)
            if code is None:
                raise
            self.rec.add(("err", label, code))
            self.rec.messages.append((code, error_message(e)))
            raise DbError(code, error_message(e), sql) from e
        finally:
            cur.close()

    def try_q(self, sql: str, args=None):
        """q() for a statement the app expects may fail: returns rows or the DbError."""
        try:
            return self.q(sql, args)
        except DbError as e:
            return e

    def rollback(self) -> None:
        self.try_q("ROLLBACK")

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:
            pass


def run_with_retry(txn_fn: Callable[[], Any], *, rec: Recorder | None = None, rollback: Callable[[], None] | None = None,
                   attempts: int = RETRY_ATTEMPTS, codes=(DEADLOCK,)):
    """Run txn_fn() the way an app retries a deadlock: on an error whose code
    is in ``codes``, roll back (``rollback``), back off a little and run it
    again, up to ``attempts`` times. Any other error propagates. Every attempt
    gets its own transcript in ``rec``."""
    for i in range(attempts):
        if rec is not None:
            rec.new_attempt(first=i == 0)
        try:
            result = txn_fn()
            if rec is not None:
                rec.add(("result", _plain(result)))
                rec.end_attempt()
            return result
        except Exception as e:
            code = error_code(e)
            if rec is not None:
                rec.add(("raised", code))
                if not isinstance(e, DbError) and code is not None:
                    rec.messages.append((code, error_message(e)))
            if code not in codes or i == attempts - 1:
                if rec is not None:
                    rec.end_attempt()
                raise
            if rollback is not None:
                rollback()
            time.sleep(0.02 * (i + 1))
    raise AssertionError("unreachable")


# ------------------------------------------------------------ the other session
def wait_blocked_or_done(thread: threading.Thread, dbs: list[str], timeout: float = 5.0) -> str:
    """Wait until ``thread`` ended or some session whose default database is
    one of ``dbs`` waits for a row lock. Returns "done", "blocked" or "timeout".

    InnoDB refreshes its INFORMATION_SCHEMA transaction tables only when they
    were not read for 100 ms, so this polls every 120 ms."""
    conn = admin_connect()
    try:
        marks = ", ".join(["%s"] * len(dbs))
        deadline = time.monotonic() + timeout
        thread.join(0.12)
        while True:
            if not thread.is_alive():
                return "done"
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT COUNT(*) FROM information_schema.INNODB_TRX t JOIN information_schema.PROCESSLIST p"
                    f" ON p.ID = t.trx_mysql_thread_id WHERE t.trx_state = 'LOCK WAIT' AND p.DB IN ({marks})",
                    dbs,
                )
                if cur.fetchone()[0]:
                    return "blocked"
            if time.monotonic() > deadline:
                return "timeout"
            thread.join(0.12)
    finally:
        conn.close()


class Other:
    """A second session running ``fn(app)`` concurrently with the app.

    The scenario creates it before the app's first statement and calls
    ``fire()`` at the point where the concurrent change happens (only the
    first call counts, so a retried attempt does not repeat it) and
    ``join()`` after the app's transaction ended. What fire/join do depends
    on env.order: "concurrent" runs fn in a thread at fire() and waits until
    it finished or blocks on a lock; "other_first" runs it to completion at
    creation; "other_last" runs it at join()."""

    def __init__(self, env: "Env", fn: Callable[[App], Any], through: bool, name: str):
        self.env = env
        self.fn = fn
        self.app = env.app(name=name, direct=not through)
        self.rec = self.app.rec
        self.thread: threading.Thread | None = None
        self.exc: BaseException | None = None
        self.ran = False
        self.fired_state: str | None = None
        if env.order == "other_first":
            self._run()

    def _run(self) -> None:
        self.ran = True
        try:
            result = self.fn(self.app)
            done = [a for a in self.rec.attempts if a]
            if not (done and done[-1][-1][0] == "result" and not self.rec.attempts[-1]):
                self.rec.add(("result", _plain(result)))  # unless fn's run_with_retry recorded it
        except DbError as e:
            self.rec.add(("raised", e.code))
        except BaseException as e:  # noqa: BLE001 - re-raised by join()
            self.exc = e

    def fire(self) -> None:
        if self.env.order != "concurrent" or self.ran:
            return
        self.ran = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.fired_state = wait_blocked_or_done(self.thread, self.env.dbs)

    def join(self, timeout: float = 30) -> None:
        if self.thread is not None:
            self.thread.join(timeout)
            assert not self.thread.is_alive(), "the other session did not finish"
        elif not self.ran:
            self._run()
        if self.exc is not None:
            raise self.exc


# ----------------------------------------------------------------------- env
@dataclass
class Endpoint:
    via: str
    host: str
    port: int


class Env:
    """Connection factory + bookkeeping for one run of a scenario."""

    def __init__(self, endpoint: Endpoint, db: str, order: str = "concurrent"):
        self.endpoint = endpoint
        self.via = endpoint.via
        self.db = db
        self.dbs = [db]
        self.order = order
        self.recorders: list[Recorder] = []
        self._closers: list[Callable[[], None]] = []
        self.others: list[Other] = []

    # connections ------------------------------------------------------------
    def __call__(self, db: str | None = None, direct: bool = False, **kw):
        """A pymysql connection (autocommit=0) to the endpoint (or MariaDB itself)."""
        host, port = (DIRECT_HOST, DIRECT_PORT) if direct else (self.endpoint.host, self.endpoint.port)
        params = dict(host=host, port=port, user=DB_USER, password=DB_PASSWORD, database=db or self.db,
                      autocommit=False, connect_timeout=10, read_timeout=60, write_timeout=60,
                      init_command=f"SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_TIMEOUT}")
        params.update(kw)
        conn = pymysql.connect(**params)
        self._closers.append(conn.close)
        return conn

    def normalize(self, sql: str) -> str:
        for i, d in enumerate(self.dbs):
            sql = sql.replace(d, f"<db{i}>")
        return sql

    def recorder(self, name: str) -> Recorder:
        taken = {r.name for r in self.recorders}
        base, n = name, 1
        while name in taken:
            n += 1
            name = f"{base}#{n}"
        rec = Recorder(name, self.normalize)
        self.recorders.append(rec)
        return rec

    def app(self, name: str = "app", direct: bool = False, **kw) -> App:
        """A recorded app connection; kw go to pymysql.connect."""
        return App(self(direct=direct, **kw), self.recorder(name))

    def concurrent(self, fn: Callable[[App], Any], through: bool = False, name: str = "other") -> Other:
        """The concurrent second session (direct to MariaDB unless through=True)."""
        o = Other(self, fn, through, name)
        self.others.append(o)
        return o

    def connector(self, **kw):
        """A mysql-connector (pure Python) connection to the endpoint, autocommit=0."""
        import mysql.connector

        params = dict(host=self.endpoint.host, port=self.endpoint.port, user=DB_USER, password=DB_PASSWORD,
                      database=self.db, autocommit=False, use_pure=True, connection_timeout=10)
        params.update(kw)
        conn = mysql.connector.connect(**params)
        cur = conn.cursor()
        cur.execute(f"SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_TIMEOUT}")
        cur.close()
        self._closers.append(conn.close)
        return conn

    def sqlalchemy_engine(self, **kw):
        import sqlalchemy as sa
        from sqlalchemy.pool import NullPool

        eng = sa.create_engine("mysql+pymysql://", creator=lambda: self(**kw), poolclass=NullPool)
        self._closers.append(eng.dispose)
        return eng

    def extra_db(self) -> str:
        """Another fresh database for this run (dropped with the run)."""
        name = unique_name("thaw_s_")
        admin_exec(f"CREATE DATABASE `{name}`")
        self.dbs.append(name)
        return name

    def close(self) -> None:
        for c in reversed(self._closers):
            try:
                c()
            except Exception:
                pass
        self._closers.clear()


# ------------------------------------------------------------------- outcome
def dump(dbs: list[str]) -> dict[str, list[tuple]]:
    """Every row of every base table of dbs, as {"<dbN>.table": sorted rows}."""
    out = {}
    conn = admin_connect()
    try:
        with conn.cursor() as cur:
            for i, d in enumerate(dbs):
                cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE'", (d,))
                for (t,) in sorted(cur.fetchall()):
                    cur.execute(f"SELECT * FROM `{d}`.`{t}`")
                    out[f"<db{i}>.{t}"] = sorted((_plain(r) for r in cur.fetchall()), key=repr)
    finally:
        conn.close()
    return out


@dataclass
class Outcome:
    label: str
    rows: dict
    transcripts: dict  # recorder name -> list of attempts
    result: Any = None
    messages: dict = field(default_factory=dict)
    fired: dict = field(default_factory=dict)  # other session -> "done" / "blocked" / "timeout" / None (not fired)

    def final(self, name: str) -> list[tuple]:
        return self.transcripts[name][-1]

    def retries(self, name: str = "app") -> int:
        """How many attempts of session ``name`` were retried."""
        return len(retried_indexes(self.transcripts[name]))

    def summary(self) -> str:
        lines = [f"--- {self.label}: result={self.result!r}"]
        for k, v in self.rows.items():
            lines.append(f"  {k}: {v}")
        for name, attempts in self.transcripts.items():
            for i, a in enumerate(attempts):
                lines.append(f"  {name} attempt {i + 1}:")
                lines.extend(f"    {e}" for e in a)
        for name, msgs in self.messages.items():
            if msgs:
                lines.append(f"  {name} error messages: {msgs}")
        return "\n".join(lines)


def run(scenario, setup, endpoint: Endpoint, order: str = "concurrent", db: str | None = None, label: str | None = None,
        capture_errors: bool = False) -> Outcome:
    """Run scenario once on a fresh database (``db`` if given: it exists and is
    dropped by its owner) and return its outcome. With ``capture_errors`` a
    server error escaping the scenario (e.g. a 1213 on every retry) becomes
    its result ("escaped", code, message) instead of propagating."""
    own = db is None
    db = db or unique_name("thaw_s_")
    if own:
        admin_exec(f"CREATE DATABASE `{db}`")
    env = Env(endpoint, db, order)
    try:
        if setup is not None:
            setup(env)
        try:
            result = scenario(env, db)
        except Exception as e:
            if not capture_errors or error_code(e) is None:
                raise
            result = ("escaped", error_code(e), error_message(e))
        finally:
            env.close()
        for o in env.others:
            if o.thread is not None:
                o.thread.join(30)
        rows = dump(env.dbs)
        transcripts = {r.name: [a for a in r.attempts if a] for r in env.recorders}
        messages = {r.name: r.messages for r in env.recorders}
        fired = {o.rec.name: o.fired_state for o in env.others}
        return Outcome(label or f"{endpoint.via}/{order}", rows, transcripts, _plain(result), messages, fired)
    finally:
        env.close()
        for i, d in enumerate(env.dbs):
            if i or own:
                admin_exec(f"DROP DATABASE IF EXISTS `{d}`")


def retried_indexes(attempts: list[list[tuple]]) -> list[int]:
    """Indexes of the attempts that a later attempt of the same loop replaced."""
    last = {}
    for i, a in enumerate(attempts):
        if a[:1] and a[0][0] == "attempt":
            last[a[0][1]] = i
    return [i for i, a in enumerate(attempts) if a[:1] and a[0][0] == "attempt" and last[a[0][1]] != i]


def without_retried(attempts: list[list[tuple]]) -> list[list[tuple]]:
    """The transcript without retried attempts (the kept one renumbered 1)."""
    drop = set(retried_indexes(attempts))
    return [[(a[0][0], a[0][1], 1)] + a[1:] if a[:1] and a[0][0] == "attempt" else a
            for i, a in enumerate(attempts) if i not in drop]


def _comparable(o: Outcome, exact: bool):
    if exact:
        return (o.rows, o.transcripts, o.result)
    return (
        o.rows,
        {n: [skeleton(a) if n == "app" else a for a in without_retried(att)] for n, att in o.transcripts.items()},
        o.result,
    )


def _check_retries(o: Outcome) -> None:
    for name, attempts in o.transcripts.items():
        for i in retried_indexes(attempts):
            a = attempts[i]
            assert ("raised", DEADLOCK) in a or ("raised", LOCK_WAIT) in a, (
                f"{o.label}: {name} attempt {a[0]} was retried without a 1213:\n{o.summary()}"
            )


def thaw_refusals(o: Outcome, name: str = "app") -> list[str]:
    """Messages of the 1213s thaw itself produced for session ``name``."""
    return [m for c, m in o.messages.get(name, []) if c == DEADLOCK and m.startswith("thaw:")]


def check(scenario, *, setup, via: str, subject: Endpoint, direct: Endpoint, concurrent: bool = False,
          books: Callable[[Outcome], None] | None = None, expect_retry: bool = False, db: str | None = None) -> Outcome:
    """Run ``scenario`` direct (the reference, plus both serial orders when
    ``concurrent``) and on ``subject``, each on a fresh database, and assert
    the criterion of the module docstring. Returns the subject's outcome."""
    refs = [run(scenario, setup, direct, "concurrent", label="direct (reference)")]
    if concurrent:
        refs.append(run(scenario, setup, direct, "other_first", label="direct, other session first"))
        refs.append(run(scenario, setup, direct, "other_last", label="direct, other session last"))
    if os.environ.get("THAW_SAFETY_DEBUG"):
        print(f"\n[safety] reference other sessions: {refs[0].fired}")
    assert "timeout" not in refs[0].fired.values(), (
        f"harness: direct, the other session neither finished nor waited for a lock within 5 s\n{refs[0].summary()}"
    )
    for r in refs:
        _check_retries(r)
        if books is not None:
            books(r)
    got = run(scenario, setup, subject, "concurrent", db=db, label=f"{via} (subject)", capture_errors=True)
    if isinstance(got.result, tuple) and got.result[:1] == ("escaped",):
        raise AssertionError(f"through {via} the app gave up: error {got.result[1]} escaped its retries"
                             f" ({got.result[2]})\n{got.summary()}")
    if DEFER and via == "thaw":
        # The documented difference of defer_writes: a violation (or a lost
        # race) is told at COMMIT. Read back at the UPDATE, nothing else moves.
        got.transcripts = {n: [at_the_update(a) for a in att] for n, att in got.transcripts.items()}
    _check_retries(got)
    if books is not None:
        books(got)
    allowed = [_comparable(r, exact=not concurrent) for r in refs]
    mine = _comparable(got, exact=not concurrent)
    assert mine in allowed, (
        f"outcome through {via} equals no allowed outcome\n{got.summary()}\n\nallowed:\n"
        + "\n".join(r.summary() for r in refs)
    )
    if expect_retry and via == "thaw":
        assert got.retries() >= 1 and thaw_refusals(got), (
            f"expected thaw to refuse the first attempt with 1213 'thaw: ...'\n{got.summary()}"
        )
    return got


# ------------------------------------------------------------ common schemas
STD_SCHEMA = [
    "CREATE TABLE users (id BIGINT PRIMARY KEY, username VARCHAR(64), balance BIGINT NOT NULL DEFAULT 0,"
    " frozen_balance BIGINT NOT NULL DEFAULT 0, updated_at DATETIME NULL)",
    "CREATE TABLE freeze_logs (request_id VARCHAR(64) PRIMARY KEY, user_id BIGINT NOT NULL, amount BIGINT NOT NULL)",
    "CREATE TABLE conversations (id BIGINT PRIMARY KEY, message_count INT NOT NULL DEFAULT 0, total_tokens BIGINT NOT NULL DEFAULT 0)",
    "INSERT INTO users (id, username, balance, frozen_balance) VALUES (1, 'alice', 1000, 100), (2, 'bob', 50, 0), (3, 'carol', 500, 0)",
    "INSERT INTO conversations VALUES (1, 5, 100)",
]
STD_FROZEN = {1: 100, 2: 0, 3: 0}


def exec_in(db: str, *sqls: str) -> None:
    admin_exec(f"USE `{db}`", *sqls)


def std_setup(*extra: str):
    def setup(env: Env) -> None:
        exec_in(env.db, *STD_SCHEMA, *extra)
    return setup


def std_books(o: Outcome) -> None:
    """Every user's frozen_balance = initial + sum of its freeze_logs; invariants hold."""
    users = o.rows["<db0>.users"]
    logs = o.rows.get("<db0>.freeze_logs", [])
    for uid, _name, bal, frozen, *_ in users:
        logged = sum(a for _r, u, a in logs if u == uid)
        assert frozen == STD_FROZEN.get(uid, 0) + logged, f"{o.label}: books of user {uid}: frozen {frozen}, logged {logged}\n{o.summary()}"
        assert bal - frozen >= 0 and frozen >= 0, f"{o.label}: invariant broken for user {uid}\n{o.summary()}"


def other_freeze(amount: int = 200, uid: int = 1, rid: str = "other-1"):
    """The concurrent session's freeze: log + relative update, one transaction."""
    def fn(app: App):
        app.q(f"INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('{rid}', {uid}, {amount})")
        app.q(f"UPDATE users SET frozen_balance = frozen_balance + {amount} WHERE id = {uid}")
        app.q("COMMIT")
        return "frozen"
    return fn


def freeze_flow(write: Callable[[App, dict], None], *, change: bool, amount: int = 50, uid: int = 1,
                conn_kw: dict | None = None, before: Callable[[App], None] | None = None):
    """The billing app's check-then-freeze: locking read, Python check, log,
    then ``write(app, row)`` (the absolute write in some shape), COMMIT; retried
    on 1213. With ``change`` a concurrent session freezes 200 right after the read."""
    def scenario(env: Env, db: str):
        other = env.concurrent(other_freeze(uid=uid)) if change else None
        app = env.app(**(conn_kw or {}))
        if before is not None:
            before(app)

        def txn():
            (row,) = app.q(f"SELECT id, username, balance, frozen_balance FROM users WHERE id = {uid} FOR UPDATE")
            if other is not None:
                other.fire()
            r = dict(zip(("id", "username", "balance", "frozen_balance"), row))
            if r["balance"] - r["frozen_balance"] < amount:
                app.q("ROLLBACK")
                return "insufficient"
            app.q(f"INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-1', {uid}, {amount})")
            r["new_frozen"] = r["frozen_balance"] + amount
            write(app, r)
            app.q("COMMIT")
            return "frozen"

        res = run_with_retry(txn, rec=app.rec, rollback=app.rollback)
        if other is not None:
            other.join()
        return res
    return scenario


def as_decimal(v) -> decimal.Decimal:
    return v if isinstance(v, decimal.Decimal) else decimal.Decimal(str(v))

