"""Helpers for the lock-error retry/replay tests (tests/python/retry/).

Everything here talks to a real MariaDB and a real thaw process; nothing is
mocked. Two client stacks are driven through the same small interface
(`Tx`): raw pymysql and a SQLAlchemy 2.x sync ORM Session over pymysql, so
every scenario checks what each of them sees.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pymysql
import sqlalchemy as sa
from sqlalchemy import orm

DB_HOST = "127.0.0.1"
DB_USER = "root"
CLIENTS = ("pymysql", "sqlalchemy")


# --------------------------------------------------------------------- config
def write_config(path: Path, retry: dict | None = None, extra: str = "") -> Path:
    """A thaw YAML config with a `retry:` section (block style)."""
    lines = []
    if retry:
        lines.append("retry:")
        for k, v in retry.items():
            if isinstance(v, bool):
                v = "true" if v else "false"
            elif isinstance(v, (list, tuple)):
                v = "[" + ", ".join(str(x) for x in v) + "]"
            lines.append(f"  {k}: {v}")
    text = "\n".join(lines) + "\n" + extra
    path.write_text(text)
    return path


# -------------------------------------------------------------------- metrics
_METRIC = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+([0-9.eE+-]+|NaN|\+Inf|-Inf)\s*$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(admin_port: int) -> dict[tuple[str, frozenset], float]:
    """GET /metrics from thaw's admin port: {(name, frozenset(labels)): value}."""
    # thaw binds the admin port just after the listen port ThawProc waits for:
    # give it a moment right after start.
    deadline = time.monotonic() + 5
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
                body = r.read().decode()
            break
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    out: dict[tuple[str, frozenset], float] = {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _METRIC.match(line)
        if not m:
            continue
        labels = frozenset(_LABEL.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def metric(snapshot: dict, name: str, **labels) -> float:
    return snapshot.get((name, frozenset((k, str(v)) for k, v in labels.items())), 0.0)


class Metrics:
    """Before/after deltas of thaw's retry and replay counters."""

    FAMILIES = ("thaw_retries_total", "thaw_replays_total")

    def __init__(self, thaw):
        self.thaw = thaw
        self.before = scrape(thaw.admin_port)

    def delta(self, name: str, **labels) -> float:
        return metric(scrape(self.thaw.admin_port), name, **labels) - metric(self.before, name, **labels)

    def changes(self) -> dict:
        """Every retry/replay series that moved, for assertion messages."""
        now = scrape(self.thaw.admin_port)
        keys = {k for k in set(now) | set(self.before) if k[0] in self.FAMILIES}
        return {
            f"{k[0]}{{{','.join(f'{a}={b}' for a, b in sorted(k[1]))}}}": now.get(k, 0) - self.before.get(k, 0)
            for k in sorted(keys, key=str)
            if now.get(k, 0) != self.before.get(k, 0)
        }


# ------------------------------------------------------------------ databases
def admin(port: int, database: str | None = None) -> pymysql.connections.Connection:
    return pymysql.connect(host=DB_HOST, port=port, user=DB_USER, password="", database=database,
                           autocommit=True, connect_timeout=5, read_timeout=120)


def admin_rows(port: int, database: str | None, sql: str, args=None) -> list[tuple]:
    conn = admin(port, database)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()


SCHEMA = (
    "CREATE TABLE acct (id INT PRIMARY KEY, v INT NOT NULL DEFAULT 0) ENGINE=InnoDB",
    "CREATE TABLE log (id INT AUTO_INCREMENT PRIMARY KEY, who VARCHAR(32) NOT NULL) ENGINE=InnoDB",
)
ROW_IDS = list(range(1, 4)) + list(range(10, 30))  # 1..3 play; 10..29 give a winner weight


def create_db(port: int) -> str:
    name = "thaw_retry_" + uuid.uuid4().hex[:10]
    conn = admin(port)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
            cur.execute(f"USE `{name}`")
            for s in SCHEMA:
                cur.execute(s)
            cur.executemany("INSERT INTO acct (id, v) VALUES (%s, 0)", [(i,) for i in ROW_IDS])
    finally:
        conn.close()
    return name


def drop_db(port: int, name: str) -> None:
    admin_rows(port, None, f"DROP DATABASE IF EXISTS `{name}`")


def values(port: int, db: str) -> dict[int, int]:
    return dict(admin_rows(port, db, "SELECT id, v FROM acct"))


def log_rows(port: int, db: str) -> list[str]:
    return [r[0] for r in admin_rows(port, db, "SELECT who FROM log ORDER BY id")]


# ---------------------------------------------------------------- row locking
class Holder:
    """A direct connection holding a row lock (SELECT ... FOR UPDATE) until release()."""

    def __init__(self, port: int, db: str, row_id: int):
        self.conn = admin(port, db)
        self.conn.autocommit(False)
        with self.conn.cursor() as cur:
            cur.execute("SET SESSION innodb_lock_wait_timeout = 30")
            cur.execute("BEGIN")
            cur.execute("SELECT v FROM acct WHERE id = %s FOR UPDATE", (row_id,))
        self._timer: threading.Timer | None = None
        self.released_at: float | None = None

    def release(self) -> None:
        if self.conn is not None:
            try:
                self.conn.rollback()
            finally:
                self.released_at = time.monotonic()
                self.conn.close()
                self.conn = None

    def release_after(self, seconds: float) -> None:
        self._timer = threading.Timer(seconds, self.release)
        self._timer.start()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.join(10)
        self.release()


def wait_lock_wait(port: int, thread_id: int, timeout: float = 10.0, min_ms: int = 250) -> None:
    """Block until the backend connection `thread_id` waits for a row lock: its statement
    (a one-row UPDATE by primary key, microseconds when free) has run for min_ms.

    PROCESSLIST is live. information_schema.INNODB_TRX is not: it is served from a cache
    that InnoDB refreshes only after 100 ms without readers, so polling it (or anyone
    else polling it) can show a stale 'RUNNING' for as long as the polling goes on."""
    deadline = time.monotonic() + timeout
    conn = admin(port)
    try:
        while time.monotonic() < deadline:
            with conn.cursor() as cur:
                cur.execute("SELECT command, time_ms, info FROM information_schema.PROCESSLIST WHERE id = %s",
                            (thread_id,))
                row = cur.fetchone()
            if row and row[0] in ("Query", "Execute") and row[2] is not None and row[1] >= min_ms:
                return
            time.sleep(0.03)
        with conn.cursor() as cur:
            cur.execute("SELECT id, db, command, time_ms, state, info FROM information_schema.PROCESSLIST "
                        "WHERE db LIKE 'thaw_retry_%%' OR id = %s", (thread_id,))
            procs = cur.fetchall()
    finally:
        conn.close()
    raise AssertionError(f"backend thread {thread_id} never started waiting for a lock within {timeout} s\n"
                         f"PROCESSLIST: {procs}")


def rollback_on_timeout(port: int) -> bool:
    (row,) = admin_rows(port, None, "SELECT @@GLOBAL.innodb_rollback_on_timeout")
    return str(row[0]).upper() in ("1", "ON")


# ---------------------------------------------------------- client stacks
def error_code(exc: BaseException) -> int | None:
    """MySQL error code of a pymysql or SQLAlchemy exception (None if not a server error)."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig
    if isinstance(exc, pymysql.err.MySQLError) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    errno = getattr(exc, "errno", None)  # mysql.connector.Error
    return errno if isinstance(errno, int) else None


class Base(orm.DeclarativeBase):
    pass


class Acct(Base):
    __tablename__ = "acct"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    v: orm.Mapped[int]


class Log(Base):
    __tablename__ = "log"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True, autoincrement=True)
    who: orm.Mapped[str] = orm.mapped_column(sa.String(32))


class Tx:
    """One client connection running one transaction at a time (autocommit off, as the
    drivers default). Subclasses: raw pymysql and a SQLAlchemy ORM Session."""

    kind = "?"
    thread_id: int

    def incr(self, row_id: int) -> int: ...
    def incr_many(self, lo: int, hi: int) -> int: ...
    def read(self, row_id: int) -> int: ...
    def read_for_update(self, row_id: int) -> int: ...
    def insert_log(self, who: str) -> int: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...


class PyMySQLTx(Tx):
    kind = "pymysql"

    def __init__(self, port: int, db: str, lock_wait_timeout: int = 30):
        self.conn = pymysql.connect(
            host=DB_HOST, port=port, user=DB_USER, password="", database=db, autocommit=False,
            connect_timeout=5, read_timeout=120,
            init_command=f"SET SESSION innodb_lock_wait_timeout = {lock_wait_timeout}",
        )
        self.thread_id = self.conn.thread_id()

    def _exec(self, sql: str, args=None):
        with self.conn.cursor() as cur:
            n = cur.execute(sql, args)
            return n, cur.fetchall(), cur.lastrowid

    def incr(self, row_id):
        return self._exec("UPDATE acct SET v = v + 1 WHERE id = %s", (row_id,))[0]

    def incr_many(self, lo, hi):
        return self._exec("UPDATE acct SET v = v + 1 WHERE id BETWEEN %s AND %s", (lo, hi))[0]

    def read(self, row_id):
        return self._exec("SELECT v FROM acct WHERE id = %s", (row_id,))[1][0][0]

    def read_for_update(self, row_id):
        return self._exec("SELECT v FROM acct WHERE id = %s FOR UPDATE", (row_id,))[1][0][0]

    def insert_log(self, who):
        return self._exec("INSERT INTO log (who) VALUES (%s)", (who,))[2]

    def commit(self):
        self.conn.commit()

    def rollback(self):
        self.conn.rollback()

    def close(self):
        try:
            self.conn.close()
        except Exception:
            pass


class SQLAlchemyTx(Tx):
    """SQLAlchemy 2.x sync ORM Session on mysql+pymysql, one pooled connection."""

    kind = "sqlalchemy"

    def __init__(self, port: int, db: str, lock_wait_timeout: int = 30):
        self.engine = sa.create_engine(
            f"mysql+pymysql://{DB_USER}@{DB_HOST}:{port}/{db}",
            pool_size=1, max_overflow=0,
            connect_args={"init_command": f"SET SESSION innodb_lock_wait_timeout = {lock_wait_timeout}",
                          "connect_timeout": 5, "read_timeout": 120},
        )
        self.session = orm.Session(self.engine)
        # Check out the connection now (dialect initialisation queries run here,
        # outside the transactions under test) and learn its backend thread id.
        self.thread_id = self.session.connection().connection.dbapi_connection.thread_id()
        self.session.commit()

    def _update(self, where):
        stmt = sa.update(Acct).where(where).values(v=Acct.v + 1).execution_options(synchronize_session=False)
        return self.session.execute(stmt).rowcount

    def incr(self, row_id):
        return self._update(Acct.id == row_id)

    def incr_many(self, lo, hi):
        return self._update(Acct.id.between(lo, hi))

    def read(self, row_id):
        return self.session.scalar(sa.select(Acct.v).where(Acct.id == row_id))

    def read_for_update(self, row_id):
        return self.session.scalar(sa.select(Acct.v).where(Acct.id == row_id).with_for_update())

    def insert_log(self, who):
        row = Log(who=who)
        self.session.add(row)
        self.session.flush()
        return row.id

    def commit(self):
        self.session.commit()

    def rollback(self):
        self.session.rollback()

    def close(self):
        try:
            self.session.close()
        finally:
            self.engine.dispose()


class PreparedTx(Tx):
    """mysql-connector-python with a prepared cursor: COM_STMT_PREPARE/EXECUTE,
    binary protocol. One SQL text per operation, so the statement is prepared
    once and re-executed (the cursor closes a statement when its text changes)."""

    kind = "connector-prepared"

    def __init__(self, port: int, db: str, lock_wait_timeout: int = 30):
        import mysql.connector

        self.conn = mysql.connector.connect(host=DB_HOST, port=port, user=DB_USER, password="", database=db,
                                            autocommit=False, connection_timeout=120)
        cur = self.conn.cursor()
        cur.execute(f"SET SESSION innodb_lock_wait_timeout = {lock_wait_timeout}")
        cur.close()
        self.cur = self.conn.cursor(prepared=True)
        self.thread_id = self.conn.connection_id

    def incr(self, row_id):
        self.cur.execute("UPDATE acct SET v = v + 1 WHERE id = ?", (row_id,))
        return self.cur.rowcount

    def incr_many(self, lo, hi):
        self.cur.execute("UPDATE acct SET v = v + 1 WHERE id BETWEEN ? AND ?", (lo, hi))
        return self.cur.rowcount

    def read(self, row_id):
        self.cur.execute("SELECT v FROM acct WHERE id = ?", (row_id,))
        return self.cur.fetchall()[0][0]

    def commit(self):
        self.conn.commit()

    def rollback(self):
        self.conn.rollback()

    def close(self):
        try:
            self.conn.close()
        except Exception:
            pass


def make_tx(kind: str, port: int, db: str, lock_wait_timeout: int = 30) -> Tx:
    return {"pymysql": PyMySQLTx, "sqlalchemy": SQLAlchemyTx, "connector-prepared": PreparedTx}[kind](
        port, db, lock_wait_timeout)


@dataclass
class Result:
    value: object = None
    error: BaseException | None = None
    finished: float | None = None


def in_thread(fn, *args) -> tuple[threading.Thread, Result]:
    """Run fn(*args) in a thread; the Result gets its return value or exception."""
    res = Result()

    def run():
        try:
            res.value = fn(*args)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            res.error = e
        finally:
            res.finished = time.monotonic()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, res


def join(t: threading.Thread, res: Result, timeout: float, what: str) -> Result:
    t.join(timeout)
    assert not t.is_alive(), f"{what} still running after {timeout} s (hang)"
    return res


# ------------------------------------------------------------------ deadlocks
def deadlock(port: int, db: str, victim: Tx, winner_first, victim_last=None, winner_rest=None,
             thread_timeout: float = 60):
    """Make `victim` (usually through thaw) the victim of a deadlock with a direct
    pymysql winner W.

    The victim has already run its first statements and holds row 2. W runs
    winner_first(W) (which must lock row 1 and make W heavier than the victim:
    InnoDB rolls back the lighter transaction), then in a thread updates row 2
    (waiting for the victim) and commits as soon as it has it. Once W waits,
    the victim runs victim_last (default: update row 1) and closes the cycle.
    winner_rest(W), if given, runs in W's thread after it got row 2, before COMMIT.
    Returns (the victim's exception or None, W's Result)."""
    w = PyMySQLTx(port, db)
    try:
        winner_first(w)

        def w_rest():
            assert w.incr(2) == 1
            if winner_rest is not None:
                winner_rest(w)
            w.commit()

        tw, rw = in_thread(w_rest)
        wait_lock_wait(port, w.thread_id)
        err = None
        try:
            (victim_last or (lambda v: v.incr(1)))(victim)
        except Exception as e:  # noqa: BLE001
            err = e
        join(tw, rw, thread_timeout, "the winner")
        return err, rw
    finally:
        w.close()


def heavy_winner(w: Tx) -> None:
    """winner_first for deadlock(): 20 extra rows, then row 1."""
    assert w.incr_many(10, 29) == 20
    assert w.incr(1) == 1
