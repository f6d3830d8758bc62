"""/metrics, /livez and the admin HTTP surface, after a scripted workload."""
from __future__ import annotations

import socket

import pymysql
import pytest

from conftest import admin_exec, unique_name
from ops.helpers import http_get, scrape, wait_for


@pytest.fixture
def workdb():
    name = unique_name("thaw_ops_")
    admin_exec(f"CREATE DATABASE `{name}`")
    yield name
    admin_exec(f"DROP DATABASE IF EXISTS `{name}`")


def connect(t, db=None, **kw):
    # autocommit=None: pymysql sends no SET AUTOCOMMIT of its own, so every
    # command on the wire is one the test issued.
    return pymysql.connect(host=t.host, port=t.port, user="root", password="", database=db,
                           autocommit=None, connect_timeout=5, **kw)


def settled(t):
    """A scrape once no connection is open (ThawProc.start() itself opened
    and closed one TCP connection to see thaw listening)."""
    return wait_for(lambda: (m := scrape(t.admin_port)).get("thaw_client_connections_open") == 0
                    and m.get("thaw_client_connections_total") >= 1 and m,
                    what="the start-up check's connection to be counted and closed")


def test_counters_move_by_exactly_the_workload(start_thaw, workdb):
    t = start_thaw()
    before = settled(t)

    conn = connect(t, workdb)
    during = wait_for(lambda: (m := scrape(t.admin_port)).get("thaw_client_connections_open") == 1 and m,
                      what="thaw_client_connections_open == 1")
    assert during.get("thaw_client_connections_total") - before.get("thaw_client_connections_total") == 1

    codes = []
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY)")            # query 1
        cur.execute("INSERT INTO t VALUES (1)")                       # query 2
        for sql in ("INSERT INTO t VALUES (1)",                       # query 3: 1062
                    "SELECT * FROM no_such_table"):                   # query 4: 1146
            with pytest.raises(pymysql.MySQLError) as e:
                cur.execute(sql)
            codes.append(e.value.args[0])
        cur.execute("SELECT COUNT(*) FROM t")                         # query 5
        assert cur.fetchone() == (1,)
    conn.ping(reconnect=False)                                        # ping
    conn.close()                                                      # quit
    assert codes == [1062, 1146]

    after = wait_for(lambda: (m := scrape(t.admin_port)).get("thaw_client_connections_open") == 0 and m,
                     what="thaw_client_connections_open back to 0 after COM_QUIT")

    def delta(name, **labels):
        return after.get(name, **labels) - before.get(name, **labels)

    assert delta("thaw_client_connections_total") == 1
    # pymysql's connect() always sends one `SET NAMES ...` query: 1 + the 5 above
    assert delta("thaw_commands_total", command="query") == 6
    assert delta("thaw_commands_total", command="ping") == 1
    assert delta("thaw_commands_total", command="quit") == 1
    # nothing else was counted as a client command (thaw's own setup queries are not)
    assert after.sum("thaw_commands_total") - before.sum("thaw_commands_total") == 8
    assert delta("thaw_backend_errors_total", code="1062") == 1
    assert delta("thaw_backend_errors_total", code="1146") == 1
    assert after.sum("thaw_backend_errors_total") - before.sum("thaw_backend_errors_total") == 2
    # every command is timed, including the final COM_QUIT
    assert delta("thaw_statement_duration_seconds_count") == 8
    assert delta("thaw_statement_duration_seconds_bucket", le="+Inf") == 8
    assert after.get("thaw_backend_connect_failures_total") == 0
    assert after.get("thaw_draining") == 0
    assert after.get("thaw_rules_generation") == 1
    # a second client that never authenticates still counts as a connection
    with socket.create_connection((t.host, t.port), timeout=5) as s:
        assert s.recv(4)  # the relayed server greeting starts to arrive
    final = wait_for(lambda: (m := scrape(t.admin_port)).get("thaw_client_connections_open") == 0 and m,
                     what="the unauthenticated connection to be closed")
    assert final.get("thaw_client_connections_total") - before.get("thaw_client_connections_total") == 2


def test_metrics_exposition_is_openmetrics(start_thaw):
    t = start_thaw()
    status, body = http_get(t.admin_port, "/metrics")
    assert status == 200
    # metric families an operator's dashboards and alerts rely on
    for family in ("thaw_client_connections_open", "thaw_client_connections_total",
                   "thaw_backend_connect_failures_total", "thaw_commands_total",
                   "thaw_statement_duration_seconds_bucket", "thaw_rules_generation", "thaw_draining"):
        assert f"\n{family}" in "\n" + body, f"{family} missing from /metrics"
    assert body.rstrip().endswith("# EOF")


def test_backend_connect_failure_is_counted_and_reported(start_thaw):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # bound, never listening: connections are refused
        t = start_thaw(backend=f"127.0.0.1:{dead}")
        # ThawProc.start()'s own TCP check already cost one backend attempt
        before = wait_for(lambda: (m := scrape(t.admin_port)).get("thaw_client_connections_open") == 0
                          and m.get("thaw_backend_connect_failures_total") >= 1 and m,
                          what="the start-up TCP check's connection to be over")
        with pytest.raises(pymysql.MySQLError) as e:
            connect(t)
    assert e.value.args[0] == 1040, e.value.args
    assert "cannot connect to backend" in str(e.value.args[1])
    m = scrape(t.admin_port)
    assert m.get("thaw_backend_connect_failures_total") - before.get("thaw_backend_connect_failures_total") == 1
    assert m.get("thaw_client_connections_total") - before.get("thaw_client_connections_total") == 1
    status, body = http_get(t.admin_port, "/readyz")
    assert status == 503 and body.startswith("not ready"), (status, body)


def test_livez_and_admin_routes(start_thaw):
    t = start_thaw()
    assert http_get(t.admin_port, "/livez") == (200, "ok\n")
    assert http_get(t.admin_port, "/readyz") == (200, "ready\n")
    assert http_get(t.admin_port, "/livez?verbose=1")[0] == 200
    assert http_get(t.admin_port, "/nope")[0] == 404
    assert http_get(t.admin_port, "/metrics", method="POST")[0] == 405
