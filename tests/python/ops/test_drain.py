"""SIGTERM drain: stop accepting, let open transactions finish within
shutdown_grace_secs, report not-ready meanwhile, exit 0."""
from __future__ import annotations

import signal
import socket
import time

import pymysql
import pytest

from conftest import admin_exec, unique_name
from ops.helpers import http_get, scrape, wait_for


@pytest.fixture
def drain_table():
    db = unique_name("thaw_ops_")
    admin_exec(f"CREATE DATABASE `{db}`", f"CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB")
    yield db
    admin_exec(f"DROP DATABASE IF EXISTS `{db}`")


def grace_config(tmp_path, secs: int) -> str:
    p = tmp_path / "thaw.yaml"
    p.write_text(f"shutdown_grace_secs: {secs}\n")
    return str(p)


def connect(t, db):
    return pymysql.connect(host=t.host, port=t.port, user="root", password="", database=db,
                           autocommit=False, connect_timeout=5, read_timeout=30)


def refused(t) -> bool:
    try:
        with socket.create_connection((t.host, t.port), timeout=1):
            return False
    except (ConnectionRefusedError, ConnectionResetError):
        # A connect that reached the backlog as the listener closed is reset.
        return True


def rows(db):
    return admin_exec(f"SELECT id, v FROM `{db}`.t ORDER BY id")


def test_open_transaction_commits_within_grace(start_thaw, drain_table, tmp_path):
    t = start_thaw(config=grace_config(tmp_path, 20))
    busy = connect(t, drain_table)
    idle = connect(t, drain_table)
    with busy.cursor() as cur:
        cur.execute("INSERT INTO t VALUES (1, 'before')")   # autocommit=0: a transaction is open
    with idle.cursor() as cur:
        cur.execute("SELECT 1")
    idle.commit()                                           # idle: no transaction open

    t.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()

    # new connections are refused at once
    assert wait_for(lambda: refused(t), timeout=5, what="the listener to close after SIGTERM")
    # not ready while draining; still alive; the gauge says so
    status, body = http_get(t.admin_port, "/readyz")
    assert (status, body) == (503, "not ready: draining\n")
    assert http_get(t.admin_port, "/livez")[0] == 200
    assert scrape(t.admin_port).get("thaw_draining") == 1

    # the idle connection is closed right away
    with pytest.raises(pymysql.err.OperationalError):
        with idle.cursor() as cur:
            cur.execute("SELECT 1")

    # the open transaction goes on: more statements, then COMMIT
    time.sleep(1.0)
    with busy.cursor() as cur:
        cur.execute("INSERT INTO t VALUES (2, 'during')")
        cur.execute("SELECT COUNT(*) FROM t")
        assert cur.fetchone() == (2,)
    busy.commit()

    # after its COMMIT the session ends, and with it the process: well within the grace
    rc = t.proc.wait(timeout=15)
    took = time.monotonic() - signalled
    assert rc == 0, t.log_text()
    assert took < 10, f"thaw took {took:.1f} s to exit after the last transaction committed"
    assert rows(drain_table) == ((1, "before"), (2, "during"))
    log = t.log_text()
    assert "draining: no new connections" in log
    assert "thaw stopped" in log
    assert "grace period over" not in log
    # the connection thaw closed after COMMIT: the next statement fails
    with pytest.raises(pymysql.err.OperationalError):
        with busy.cursor() as cur:
            cur.execute("SELECT 1")


def test_grace_period_over_closes_and_rolls_back(start_thaw, drain_table, tmp_path):
    t = start_thaw(config=grace_config(tmp_path, 2))
    stuck = connect(t, drain_table)
    with stuck.cursor() as cur:
        cur.execute("INSERT INTO t VALUES (1, 'never committed')")

    t.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    rc = t.proc.wait(timeout=15)
    took = time.monotonic() - signalled
    assert rc == 0, t.log_text()
    assert 1.5 < took < 6, f"exit {took:.1f} s after SIGTERM with shutdown_grace_secs=2"
    assert "grace period over: closing remaining connections" in t.log_text()

    with pytest.raises(pymysql.err.OperationalError):
        stuck.commit()
    # the server rolled the transaction back when thaw closed its connection
    assert wait_for(lambda: rows(drain_table) == (), timeout=10, what="the open transaction to be rolled back")


def test_sigterm_with_no_connections_exits_at_once(start_thaw, tmp_path):
    t = start_thaw(config=grace_config(tmp_path, 30))
    signalled = time.monotonic()
    rc = t.stop(signal.SIGTERM, timeout=10)
    assert rc == 0
    assert time.monotonic() - signalled < 3
