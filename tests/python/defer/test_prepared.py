"""Held-back writes through the binary protocol: mysql-connector's prepared
cursor (COM_STMT_PREPARE / EXECUTE) runs the legacy freeze. The execute of
the UPDATE is answered with the OK thaw makes up, the same bytes as the
server's; a violation moves to COMMIT as in the text protocol."""
from __future__ import annotations

import mysql.connector

from conftest import DB_PASSWORD, DB_USER, admin_connect
from defer.support import Counters, comparable, run_all
from safety.harness import LOCK_WAIT_TIMEOUT, VIOLATION, Env, std_setup

READ = "SELECT id, balance, frozen_balance FROM users WHERE id = %s FOR UPDATE"
LOG = "INSERT INTO freeze_logs (request_id, user_id, amount) VALUES (%s, %s, %s)"
FREEZE = "UPDATE users SET frozen_balance = %s WHERE id = %s"


def connector(env: Env):
    """A pure-Python mysql-connector connection whose packets are kept."""
    conn = mysql.connector.connect(host=env.endpoint.host, port=env.endpoint.port, user=DB_USER, password=DB_PASSWORD,
                                   database=env.db, autocommit=False, use_pure=True, connection_timeout=10)
    env._closers.append(conn.close)
    wire = []
    recv = conn._socket.recv

    def keep(*a, **kw):
        p = recv(*a, **kw)
        wire.append(bytes(p[4:]))
        return p

    conn._socket.recv = keep
    cur = conn.cursor()
    cur.execute(f"SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_TIMEOUT}")
    cur.close()
    return conn, wire


def prepared_freeze(change: str | None = None, amount: int = 50):
    def scenario(env: Env, db: str):
        conn, wire = connector(env)
        rec = env.recorder("app")
        cur = conn.cursor(prepared=True)

        def step(label, fn):
            wire.clear()
            try:
                out = fn()
                rec.note(label, (out, cur.rowcount, cur.warning_count))
            except mysql.connector.Error as e:
                rec.note(label, ("err", e.errno, e.msg))
                out = e
            # OK, ERR and binary row packets compare byte for byte (column
            # definitions carry the database name: compared through the values
            # above); a PREPARE's OK carries the server's statement id, which
            # counts statements of every connection.
            rec.note(label + " packets", tuple(p[:1] + b"<id>" + p[5:] if len(p) == 12 and p[:1] == b"\x00" else p
                                               for p in wire if p[:1] in (b"\x00", b"\xff") and len(p) < 200))
            return out

        (row,) = step("read", lambda: (cur.execute(READ, (1,)), cur.fetchall())[1])
        if change:
            a = admin_connect(database=db)
            a.cursor().execute(change)
            a.close()
        step("log", lambda: cur.execute(LOG, ("app-1", 1, amount)))
        e = step("freeze", lambda: cur.execute(FREEZE, (row[2] + amount, 1)))
        if isinstance(e, mysql.connector.Error):
            step("rollback", conn.rollback)
        else:
            step("commit", conn.commit)
        step("re-read", lambda: (cur.execute(READ, (1,)), cur.fetchall())[1])
        step("commit again", conn.commit)
        return "done"
    return scenario


def test_prepared_freeze_is_held_and_answered_as_the_server_would(endpoints, thaws):
    c = Counters(thaws.defer.admin_port)
    outs = run_all(prepared_freeze(), std_setup(), endpoints)
    d = c.delta()
    assert d["writes"] == 1 and d["committed"] == 1, d
    for n in ("plain", "defer"):
        assert comparable(outs[n]) == comparable(outs["direct"]), f"{n}\n{outs[n].summary()}\n\ndirect\n{outs['direct'].summary()}"


def test_prepared_violation_is_answered_at_commit(endpoints, thaws):
    """A concurrent freeze of 850 makes the app's +200 an overdraft: plain,
    the execute of the UPDATE gets 1644; deferred, conn.commit() does, with
    the same error packet, and the log row is not committed."""
    c = Counters(thaws.defer.admin_port)
    scenario = prepared_freeze("UPDATE users SET frozen_balance = frozen_balance + 850 WHERE id = 1", amount=200)
    outs = run_all(scenario, std_setup(), endpoints, names=("plain", "defer"))
    assert c.delta()["violations"] == 1, c.delta()
    plain, defer = (dict((e[1], e[2]) for e in o.transcripts["app"][0]) for o in (outs["plain"], outs["defer"]))
    assert plain["freeze"][:2] == ("err", VIOLATION) and "rollback" in plain, plain
    assert defer["freeze"][0] is None and defer["commit"][:2] == ("err", VIOLATION), defer
    # The freeze packets of plain begin with the PREPARE of the UPDATE; the ERR is last.
    assert defer["commit packets"] == plain["freeze packets"][-1:], (plain, defer)
    assert defer["re-read"] == plain["re-read"]
    assert comparable(outs["plain"])[0] == comparable(outs["defer"])[0]
    assert outs["defer"].rows["<db0>.freeze_logs"] == [], outs["defer"].summary()
