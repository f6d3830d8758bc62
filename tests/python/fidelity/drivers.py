"""One adapter per Python MySQL driver, all with the same small interface.

    adapter = ADAPTERS[name](host, port, db)
    adapter.connect_info() -> dict     what the client sees right after connecting
    adapter.query(sql, params) -> dict every result set, warnings, status, error
    adapter.action(name, *args) -> dict  ping, select_db, change_user, ...
    adapter.close()

Observations hold only what the driver exposes to an application (public
attributes, plus the few internal fields a debugging user would look at, such
as pymysql's OK-packet `message`). Values go through harness.typed(), which
keeps the Python type of each value.

Drivers:
  pymysql            PyMySQL, default Cursor, local_infile, MULTI_STATEMENTS on
  pymysql_fr         same with CLIENT_FOUND_ROWS (rowcount = matched rows)
  pymysql_ss         same with the unbuffered SSCursor
  aiomysql           aiomysql (asyncio), run on a private event loop
  mysqlclient        MySQLdb (C, libmariadb), default cursor
  connector          mysql-connector-python, use_pure=True (the pure-Python
                     protocol; the C extension is not shipped in the pinned
                     wheel for this platform), buffered text cursor
  connector_prep     same, prepared=True cursor (COM_STMT_PREPARE/EXECUTE,
                     binary result sets)
  sqla               SQLAlchemy 2.x Core, sync engine, mysql+pymysql
  sqla_async         SQLAlchemy 2.x Core, async engine, mysql+aiomysql
"""

from __future__ import annotations

import asyncio
import io
import re
import threading
import time

import aiomysql
import MySQLdb
import mysql.connector
import pymysql
from pymysql.constants import CLIENT
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from .harness import err_info, typed

USER = "root"
PASSWORD = ""
CLIENT_MAX_PACKET = 256 * 1024 * 1024
TIMEOUT = 120

DIGITS = re.compile(r"\d+(\.\d+)?")


def normalize_stats(s: str) -> str:
    """COM_STATISTICS text with the numbers (uptime, counters) replaced by N."""
    return DIGITS.sub("N", s)


def _kill_later(host, port, target_id: int, delay: float, kind: str, errors: list):
    """From a second connection on the same side, KILL <kind> target_id after delay s."""

    def run():
        time.sleep(delay)
        try:
            c = pymysql.connect(host=host, port=port, user=USER, password=PASSWORD,
                                connect_timeout=10, read_timeout=30)
            try:
                with c.cursor() as cur:
                    cur.execute(f"KILL {kind} {int(target_id)}")
            finally:
                c.close()
        except Exception as e:  # reported by the caller, not swallowed
            errors.append(err_info(e))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


class Adapter:
    name = "?"
    collect_warnings = True  # set per step by the harness

    def __init__(self, host: str, port: int, db: str):
        self.host, self.port, self.db = host, port, db

    # actions -----------------------------------------------------------
    def action(self, name: str, *args, **kwargs) -> dict:
        fn = getattr(self, "act_" + name, None)
        if fn is None:
            raise NotImplementedError(f"{self.name} has no action {name!r}")
        obs: dict = {}
        try:
            obs["result"] = typed(fn(*args, **kwargs))
        except Exception as e:
            obs["error"] = err_info(e)
        obs["status"] = self.status()
        return obs

    def status(self):
        return None

    def connection_id(self) -> int:
        obs = self.query("SELECT CONNECTION_ID()", None)
        return int(obs["results"][0]["rows"][0][0].split(":", 1)[1])

    def _kill_during(self, sql: str, delay: float, kind: str):
        """Run sql while a second connection KILLs this one's query/connection."""
        errors: list = []
        cid = self.connection_id()
        t = _kill_later(self.host, self.port, cid, delay, kind, errors)
        obs = self.query(sql, None)
        t.join(30)
        assert not t.is_alive(), "killer thread hung"
        obs["killer_errors"] = errors
        return obs

    def act_kill_query(self, sql="SELECT SLEEP(10)", delay=0.5):
        return self._kill_during(sql, delay, "QUERY")

    def act_kill_connection(self, sql="SELECT SLEEP(10)", delay=0.5):
        return self._kill_during(sql, delay, "CONNECTION")

    def act_sleep(self, seconds):
        time.sleep(seconds)

    def show_warnings(self):
        raise NotImplementedError

    def close(self):
        pass


# ===================================================================== pymysql
class PyMySQLAdapter(Adapter):
    name = "pymysql"
    cursorclass = pymysql.cursors.Cursor

    def __init__(self, host, port, db, **kw):
        super().__init__(host, port, db)
        opts = dict(host=host, port=port, user=USER, password=PASSWORD, database=db,
                    local_infile=True, client_flag=CLIENT.MULTI_STATEMENTS,
                    max_allowed_packet=CLIENT_MAX_PACKET, connect_timeout=10,
                    read_timeout=TIMEOUT, write_timeout=TIMEOUT, cursorclass=self.cursorclass)
        opts.update(kw)
        self.conn = pymysql.connect(**opts)

    def connect_info(self):
        c = self.conn
        return {
            "server_version": typed(c.server_version),
            "protocol_version": typed(c.protocol_version),
            "server_charset": typed(c.server_charset),
            "server_status": c.server_status,
            "autocommit": c.get_autocommit(),
            "charset": c.charset, "encoding": c.encoding,
        }

    def status(self):
        return self.conn.server_status

    @staticmethod
    def _capture(cur) -> dict:
        r = cur._result
        out = {"description": typed(cur.description)}
        if cur.description:
            out["rows"] = typed(cur.fetchall())
        out.update(
            rowcount=cur.rowcount, lastrowid=cur.lastrowid, warning_count=cur.warning_count,
            message=typed(getattr(r, "message", None)),
            affected_rows=getattr(r, "affected_rows", None), insert_id=getattr(r, "insert_id", None),
            result_status=getattr(r, "server_status", None), has_next=getattr(r, "has_next", None),
        )
        return out

    def query(self, sql, params):
        results, error, cur = [], None, None
        try:
            cur = self.conn.cursor()
            cur.execute(sql, params)
            while True:
                results.append(self._capture(cur))
                if not cur.nextset():
                    break
        except Exception as e:
            error = err_info(e)
        obs = {"results": results, "error": error, "status": self.status()}
        if self.collect_warnings and (error or any(r["warning_count"] for r in results)):
            obs["show_warnings"] = self.show_warnings()
        if cur is not None:
            try:
                cur.close()
            except Exception:
                pass
        return obs

    def show_warnings(self):
        try:
            with self.conn.cursor(pymysql.cursors.Cursor) as c:
                c.execute("SHOW WARNINGS")
                return typed(c.fetchall())
        except Exception as e:
            return {"error": err_info(e)}

    # actions
    def act_ping(self):
        return self.conn.ping(reconnect=False)

    def act_select_db(self, db):
        return self.conn.select_db(db)

    def act_commit(self):
        return self.conn.commit()

    def act_rollback(self):
        return self.conn.rollback()

    def act_begin(self):
        return self.conn.begin()

    def act_autocommit(self, on):
        return self.conn.autocommit(on)

    def act_callproc(self, proc, args):
        out = []
        with self.conn.cursor() as cur:
            ret = cur.callproc(proc, args)
            while True:
                out.append(self._capture(cur))
                if not cur.nextset():
                    break
            cur.execute("SELECT " + ", ".join(f"@_{proc}_{i}" for i in range(len(args))))
            out.append(self._capture(cur))
        return {"returned": typed(ret), "results": out}

    def act_executemany(self, sql, seq):
        with self.conn.cursor() as cur:
            n = cur.executemany(sql, seq)
            return {"returned": n, **self._capture(cur)}

    def close(self):
        try:
            self.conn.close()
        except Exception:
            pass


class PyMySQLFoundRowsAdapter(PyMySQLAdapter):
    """pymysql with CLIENT_FOUND_ROWS (affected rows = matched rows), as SQLAlchemy sets it."""
    name = "pymysql_fr"

    def __init__(self, host, port, db, **kw):
        kw.setdefault("client_flag", CLIENT.MULTI_STATEMENTS | CLIENT.FOUND_ROWS)
        super().__init__(host, port, db, **kw)


class PyMySQLSSAdapter(PyMySQLAdapter):
    """pymysql with an unbuffered (server-side streaming) cursor."""
    name = "pymysql_ss"
    cursorclass = pymysql.cursors.SSCursor


# ===================================================================== aiomysql
class AioMySQLAdapter(Adapter):
    name = "aiomysql"

    def __init__(self, host, port, db, **kw):
        super().__init__(host, port, db)
        self.loop = asyncio.new_event_loop()
        opts = dict(host=host, port=port, user=USER, password=PASSWORD, db=db,
                    local_infile=True, client_flag=CLIENT.MULTI_STATEMENTS, connect_timeout=10)
        opts.update(kw)
        self.conn = self.run(aiomysql.connect(**opts))

    def run(self, coro):
        return self.loop.run_until_complete(asyncio.wait_for(coro, TIMEOUT))

    def connect_info(self):
        c = self.conn
        return {
            "server_version": typed(c.get_server_info()),
            "server_status": c.server_status,
            "autocommit": c.get_autocommit(),
            "charset": c.charset, "encoding": c.encoding,
            "in_transaction": c.get_transaction_status(),
        }

    def status(self):
        return self.conn.server_status

    async def _capture(self, cur) -> dict:
        r = cur._result
        out = {"description": typed(cur.description)}
        if cur.description:
            out["rows"] = typed(await cur.fetchall())
        out.update(
            rowcount=cur.rowcount, lastrowid=cur.lastrowid,
            warning_count=getattr(r, "warning_count", None),
            message=typed(getattr(r, "message", None)),
            affected_rows=getattr(r, "affected_rows", None), insert_id=getattr(r, "insert_id", None),
            result_status=getattr(r, "server_status", None), has_next=getattr(r, "has_next", None),
        )
        return out

    async def _query(self, sql, params):
        results, error, cur = [], None, None
        try:
            cur = await self.conn.cursor()
            await cur.execute(sql, params)
            while True:
                results.append(await self._capture(cur))
                if not await cur.nextset():
                    break
        except Exception as e:
            error = err_info(e)
        obs = {"results": results, "error": error, "status": self.status(),
               "in_transaction": self.conn.get_transaction_status() if self.conn.server_status is not None else None}
        if self.collect_warnings and (error or any(r["warning_count"] for r in results)):
            obs["show_warnings"] = await self._show_warnings()
        if cur is not None:
            try:
                await cur.close()
            except Exception:
                pass
        return obs

    def query(self, sql, params):
        return self.run(self._query(sql, params))

    async def _show_warnings(self):
        try:
            cur = await self.conn.cursor()
            await cur.execute("SHOW WARNINGS")
            rows = await cur.fetchall()
            await cur.close()
            return typed(rows)
        except Exception as e:
            return {"error": err_info(e)}

    def act_ping(self):
        return self.run(self.conn.ping(reconnect=False))

    def act_select_db(self, db):
        return self.run(self.conn.select_db(db))

    def act_commit(self):
        return self.run(self.conn.commit())

    def act_rollback(self):
        return self.run(self.conn.rollback())

    def act_begin(self):
        return self.run(self.conn.begin())

    def act_autocommit(self, on):
        return self.run(self.conn.autocommit(on))

    def close(self):
        try:
            # ensure_closed sends COM_QUIT and lets the loop close the socket; a
            # bare close() would leave the server session (and its locks) behind
            self.run(self.conn.ensure_closed())
        except Exception:
            self.conn.close()
        finally:
            self.loop.close()


# ===================================================================== mysqlclient
class MySQLdbAdapter(Adapter):
    name = "mysqlclient"

    def __init__(self, host, port, db, **kw):
        super().__init__(host, port, db)
        opts = dict(host=host, port=port, user=USER, password=PASSWORD, database=db,
                    local_infile=1, connect_timeout=10, read_timeout=TIMEOUT, write_timeout=TIMEOUT)
        opts.update(kw)
        self.conn = MySQLdb.connect(**opts)

    def connect_info(self):
        c = self.conn
        return {
            "server_info": c.get_server_info(),
            "proto_info": c.get_proto_info(),
            "charset": c.character_set_name(),
            "charset_info": typed(c.get_character_set_info()),
            "autocommit": c.get_autocommit(),
        }

    def status(self):
        try:
            return {"autocommit": self.conn.get_autocommit()}
        except Exception as e:
            return {"error": err_info(e)}

    def _capture(self, cur) -> dict:
        out = {"description": typed(cur.description)}
        if cur.description:
            out["rows"] = typed(cur.fetchall())
        out.update(rowcount=cur.rowcount, lastrowid=cur.lastrowid,
                   warning_count=self.conn.warning_count(), info=typed(self.conn.info()),
                   field_count=self.conn.field_count())
        return out

    def query(self, sql, params):
        results, error, cur = [], None, None
        try:
            cur = self.conn.cursor()
            cur.execute(sql, params)
            while True:
                results.append(self._capture(cur))
                if not cur.nextset():
                    break
        except Exception as e:
            error = err_info(e)
            try:
                error["conn_sqlstate"] = self.conn.sqlstate()
            except Exception:
                pass
        obs = {"results": results, "error": error, "status": self.status()}
        if self.collect_warnings and (error or any(r["warning_count"] for r in results)):
            obs["show_warnings"] = self.show_warnings()
        if cur is not None:
            try:
                cur.close()
            except Exception:
                pass
        return obs

    def show_warnings(self):
        try:
            c = self.conn.cursor()
            c.execute("SHOW WARNINGS")
            rows = c.fetchall()
            c.close()
            return typed(rows)
        except Exception as e:
            return {"error": err_info(e)}

    def act_ping(self):
        return self.conn.ping()

    def act_select_db(self, db):
        return self.conn.select_db(db)

    def act_commit(self):
        return self.conn.commit()

    def act_rollback(self):
        return self.conn.rollback()

    def act_autocommit(self, on):
        return self.conn.autocommit(on)

    def act_statistics(self):
        return normalize_stats(self.conn.stat())

    def act_change_user(self, user, password, db):
        return self.conn.change_user(user, password, db)

    def act_set_multi_statements(self, on: bool):
        # MYSQL_OPTION_MULTI_STATEMENTS_ON = 0, _OFF = 1 (COM_SET_OPTION)
        return self.conn.set_server_option(0 if on else 1)

    def act_callproc(self, proc, args):
        out = []
        cur = self.conn.cursor()
        ret = cur.callproc(proc, args)
        while True:
            out.append(self._capture(cur))
            if not cur.nextset():
                break
        cur.execute("SELECT " + ", ".join(f"@_{proc}_{i}" for i in range(len(args))))
        out.append(self._capture(cur))
        cur.close()
        return {"returned": typed(ret), "results": out}

    def act_executemany(self, sql, seq):
        cur = self.conn.cursor()
        n = cur.executemany(sql, seq)
        out = {"returned": n, **self._capture(cur)}
        cur.close()
        return out

    def act_kill_thread(self, delay=0.5):
        """COM_PROCESS_KILL of this connection's own id from a second MySQLdb connection."""
        cid = self.conn.thread_id()
        other = MySQLdb.connect(host=self.host, port=self.port, user=USER, password=PASSWORD)
        try:
            other.kill(cid)
        finally:
            other.close()
        time.sleep(delay)
        return self.query("SELECT 1", None)

    def act_thread_id_matches(self):
        """The id libmariadb read from the greeting equals CONNECTION_ID()."""
        return self.conn.thread_id() == self.connection_id()

    def close(self):
        try:
            self.conn.close()
        except Exception:
            pass


# ===================================================================== mysql-connector
class ConnectorAdapter(Adapter):
    name = "connector"
    prepared = False

    def __init__(self, host, port, db, **kw):
        super().__init__(host, port, db)
        opts = dict(host=host, port=port, user=USER, password=PASSWORD, database=db,
                    use_pure=True, allow_local_infile=True, connection_timeout=10,
                    read_timeout=TIMEOUT, write_timeout=TIMEOUT, ssl_disabled=True)
        opts.update(kw)
        self.conn = mysql.connector.connect(**opts)

    def connect_info(self):
        c = self.conn
        return {
            "server_info": c.server_info,
            "server_version": typed(c.server_version),
            "charset": c.charset, "collation": c.collation,
            "autocommit": c.autocommit, "in_transaction": c.in_transaction,
            "sql_mode": c.sql_mode, "time_zone": c.time_zone,
            "database": c.database,
        }

    def status(self):
        try:
            return {"in_transaction": self.conn.in_transaction,
                    "unread_result": self.conn.unread_result}
        except Exception as e:
            return {"error": err_info(e)}

    def cursor(self):
        if self.prepared:
            return self.conn.cursor(prepared=True)
        return self.conn.cursor(buffered=True)

    @staticmethod
    def _capture(cur) -> dict:
        out = {"description": typed(cur.description), "with_rows": cur.with_rows}
        if cur.with_rows:
            out["rows"] = typed(cur.fetchall())
        out.update(rowcount=cur.rowcount, lastrowid=cur.lastrowid,
                   warning_count=cur.warning_count,
                   column_names=typed(cur.column_names) if cur.description else None)
        return out

    def query(self, sql, params):
        results, error, cur = [], None, None
        try:
            cur = self.cursor()
            cur.execute(sql, params)
            while True:
                results.append(self._capture(cur))
                if not cur.nextset():
                    break
        except Exception as e:
            error = err_info(e)
        obs = {"results": results, "error": error, "status": self.status()}
        if cur is not None:
            try:
                cur.close()
            except Exception as e:
                obs["close_error"] = err_info(e)
        if self.collect_warnings and (error or any(r["warning_count"] for r in results)):
            obs["show_warnings"] = self.show_warnings()
        return obs

    def show_warnings(self):
        try:
            c = self.conn.cursor(buffered=True)
            c.execute("SHOW WARNINGS")
            rows = c.fetchall()
            c.close()
            return typed(rows)
        except Exception as e:
            return {"error": err_info(e)}

    def act_ping(self):
        return self.conn.cmd_ping()

    def act_select_db(self, db):
        return self.conn.cmd_init_db(db)

    def act_commit(self):
        return self.conn.commit()

    def act_rollback(self):
        return self.conn.rollback()

    def act_start_transaction(self, **kw):
        return self.conn.start_transaction(**kw)

    def act_autocommit(self, on):
        self.conn.autocommit = on
        return self.conn.autocommit

    def act_statistics(self):
        stats = self.conn.cmd_statistics()
        # counters and uptime legitimately differ: compare names and types
        return {k: type(v).__name__ for k, v in stats.items()}

    def act_change_user(self, user, password, db):
        return self.conn.cmd_change_user(username=user, password=password, database=db)

    def act_reset_connection(self):
        return self.conn.cmd_reset_connection()

    def act_reset_session(self):
        return self.conn.reset_session()

    def act_process_kill_self_from_other(self, delay=0.5):
        """COM_PROCESS_KILL of this connection's id from a second connection."""
        cid = self.conn.connection_id
        other = mysql.connector.connect(host=self.host, port=self.port, user=USER,
                                        password=PASSWORD, use_pure=True, ssl_disabled=True)
        try:
            ok = other.cmd_process_kill(cid)
        finally:
            other.close()
        time.sleep(delay)
        return ok

    def act_connection_id_matches(self):
        return self.conn.connection_id == self.connection_id()

    def act_callproc(self, proc, args):
        cur = self.conn.cursor()
        ret = cur.callproc(proc, args)
        sets = []
        for r in cur.stored_results():
            sets.append({"description": typed(r.description), "rows": typed(r.fetchall())})
        cur.close()
        return {"returned": typed(ret), "results": sets}

    def act_executemany(self, sql, seq):
        cur = self.cursor()
        cur.executemany(sql, seq)
        out = self._capture(cur)
        cur.close()
        return out

    def act_long_data(self, sql, chunks: list[bytes], other_params=()):
        """Prepared execute with a file-like parameter: COM_STMT_SEND_LONG_DATA."""
        cur = self.conn.cursor(prepared=True)
        cur.execute(sql, tuple(other_params) + (io.BytesIO(b"".join(chunks)),))
        out = self._capture(cur)
        cur.close()
        return out

    def close(self):
        try:
            self.conn.close()
        except Exception:
            pass


class ConnectorPreparedAdapter(ConnectorAdapter):
    name = "connector_prep"
    prepared = True


# ===================================================================== SQLAlchemy
def _sa_params(sql: str, params):
    """Turn a %s-style corpus statement into SQLAlchemy text() with :pN binds."""
    if params is None:
        return sql, {}
    if isinstance(params, dict):
        return sql, params
    parts = sql.split("%s")
    assert len(parts) == len(params) + 1, (sql, params)
    out = parts[0]
    for i, p in enumerate(parts[1:]):
        out += f":p{i}" + p
    return out, {f"p{i}": v for i, v in enumerate(params)}


def _sa_capture(res) -> dict:
    out = {"returns_rows": res.returns_rows}
    cur = getattr(res, "cursor", None)
    out["description"] = typed(cur.description) if cur is not None else None
    if res.returns_rows:
        out["keys"] = list(res.keys())
        out["rows"] = typed([tuple(r) for r in res.fetchall()])
    out["rowcount"] = res.rowcount
    try:
        out["lastrowid"] = res.lastrowid
    except Exception as e:
        out["lastrowid"] = {"error": err_info(e)}
    return out


class SQLAlchemyAdapter(Adapter):
    """SQLAlchemy Core on a sync pymysql engine.

    The corpus runs with isolation_level=AUTOCOMMIT so that the corpus' own
    BEGIN/COMMIT statements (and errors) keep their meaning, exactly as for the
    plain drivers; test_sqlalchemy.py covers SQLAlchemy's own transactions/ORM."""
    name = "sqla"

    def __init__(self, host, port, db, isolation_level="AUTOCOMMIT", **kw):
        super().__init__(host, port, db)
        # no client_flag here: SQLAlchemy sets its own (CLIENT_FOUND_ROWS) and
        # connect_args would replace it
        args = dict(local_infile=True, max_allowed_packet=CLIENT_MAX_PACKET, read_timeout=TIMEOUT)
        args.update(kw)
        self.engine = create_engine(f"mysql+pymysql://{USER}@{host}:{port}/{db}?charset=utf8mb4",
                                    poolclass=NullPool, connect_args=args,
                                    isolation_level=isolation_level)
        self.conn = self.engine.connect()

    def connect_info(self):
        d = self.engine.dialect
        return {
            "server_version_info": typed(d.server_version_info),
            "is_mariadb": d.is_mariadb,
            "isolation_level": self.conn.get_isolation_level(),
            "default_isolation_level": self.conn.default_isolation_level,
            "supports_native_decimal": d.supports_native_decimal,
            "_backslash_escapes": getattr(d, "_backslash_escapes", None),
            "_server_ansiquotes": getattr(d, "_server_ansiquotes", None),
        }

    def status(self):
        dbapi = self.conn.connection.dbapi_connection
        return {"in_transaction": self.conn.in_transaction(),
                "server_status": getattr(dbapi, "server_status", None)}

    def _exec(self, stmt, binds=None):
        return self.conn.execute(text(stmt), binds or {})

    def query(self, sql, params):
        stmt, binds = _sa_params(sql, params)
        out = {"results": [], "error": None}
        try:
            out["results"].append(_sa_capture(self._exec(stmt, binds)))
        except Exception as e:
            out["error"] = err_info(e)
        out["status"] = self.status()
        if self.collect_warnings:
            out["show_warnings"] = self.show_warnings()
        return out

    def show_warnings(self):
        try:
            return typed([tuple(r) for r in self._exec("SHOW WARNINGS").fetchall()])
        except Exception as e:
            return {"error": err_info(e)}

    def act_commit(self):
        return self.conn.commit()

    def act_rollback(self):
        return self.conn.rollback()

    def close(self):
        try:
            self.conn.close()
        finally:
            self.engine.dispose()


class SQLAlchemyAsyncAdapter(SQLAlchemyAdapter):
    """SQLAlchemy Core on an async aiomysql engine, driven from a private loop."""
    name = "sqla_async"

    def __init__(self, host, port, db, isolation_level="AUTOCOMMIT", **kw):
        self.host, self.port, self.db = host, port, db
        self.loop = asyncio.new_event_loop()
        args = dict(local_infile=True)
        args.update(kw)
        self.engine = create_async_engine(
            f"mysql+aiomysql://{USER}@{host}:{port}/{db}?charset=utf8mb4",
            poolclass=NullPool, connect_args=args, isolation_level=isolation_level)
        self.conn = self.run(self.engine.connect())

    def run(self, coro):
        return self.loop.run_until_complete(asyncio.wait_for(coro, TIMEOUT))

    def connect_info(self):
        d = self.engine.dialect
        return {
            "server_version_info": typed(d.server_version_info),
            "is_mariadb": d.is_mariadb,
            "isolation_level": self.run(self.conn.get_isolation_level()),
            "default_isolation_level": self.conn.default_isolation_level,
            "_backslash_escapes": getattr(d, "_backslash_escapes", None),
        }

    def status(self):
        return {"in_transaction": self.conn.in_transaction()}

    def _exec(self, stmt, binds=None):
        return self.run(self.conn.execute(text(stmt), binds or {}))

    def act_commit(self):
        return self.run(self.conn.commit())

    def act_rollback(self):
        return self.run(self.conn.rollback())

    def close(self):
        try:
            self.run(self.conn.close())
            self.run(self.engine.dispose())
        finally:
            self.loop.close()


ADAPTERS = {
    a.name: a
    for a in (PyMySQLAdapter, PyMySQLFoundRowsAdapter, PyMySQLSSAdapter, AioMySQLAdapter, MySQLdbAdapter, ConnectorAdapter,
              ConnectorPreparedAdapter, SQLAlchemyAdapter, SQLAlchemyAsyncAdapter)
}
ALL_DRIVERS = ["pymysql", "pymysql_fr", "pymysql_ss", "aiomysql", "mysqlclient", "connector", "connector_prep",
               "sqla", "sqla_async"]
# drivers that send several statements in one COM_QUERY (CLIENT_MULTI_STATEMENTS)
MULTI_DRIVERS = ["pymysql", "pymysql_ss", "aiomysql", "mysqlclient", "connector"]


def factory(driver: str, **kw):
    cls = ADAPTERS[driver]
    return lambda host, port, db: cls(host, port, db, **kw)
