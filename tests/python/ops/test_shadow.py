"""Shadow mode and the contention metrics (issue 11).

- A same-user burst of the legacy flow with every rule in shadow behaves as
  direct: lock waits end in 1205 for the app, nothing is rewritten, and the
  server's general log shows the app's own statements; the shadow counters
  name what enforce mode would have done for the statements that ran.
- A reload to enforce fixes the same burst without a restart, and the
  enforce counters then match what the shadow counted per statement.
- A scripted lock wait and a scripted deadlock show up under the locking
  read's shape in /metrics and /contention.
"""
from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections import Counter

import pymysql
import pytest

from conftest import admin_exec
from ops.helpers import atomic_write, http_get, scrape, wait_for
from thawproc import REPO_ROOT

READ = "SELECT id, balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE"
READ_SHAPE = "SELECT id, balance, frozen_balance FROM users WHERE id = ? FOR UPDATE"
N = 12


def rules_text(mode: str) -> str:
    text = (REPO_ROOT / "rules" / "billing.yaml").read_text()
    return text.replace("    unlock: true\n", f"    unlock: true\n    mode: {mode}\n")


def setup_users(db: str) -> None:
    admin_exec(
        f"USE `{db}`",
        "CREATE TABLE users (id BIGINT PRIMARY KEY, username VARCHAR(64), balance BIGINT NOT NULL DEFAULT 0,"
        " frozen_balance BIGINT NOT NULL DEFAULT 0, updated_at DATETIME NULL)",
        "INSERT INTO users (id, username, balance) VALUES (1, 'u1', 1000)",
    )


def burst(port: int, db: str) -> Counter:
    """N concurrent freezes of user 1: locking read, 300 ms of work,
    absolute write, COMMIT; 1 s lock wait timeout per session."""
    results: Counter = Counter()
    lock = threading.Lock()
    start = threading.Barrier(N)

    def one() -> None:
        c = pymysql.connect(host="127.0.0.1", port=port, user="root", database=db, autocommit=False)
        try:
            with c.cursor() as cur:
                cur.execute("SET SESSION innodb_lock_wait_timeout = 1")
                start.wait()
                try:
                    cur.execute(READ)
                    (_, _, frozen) = cur.fetchone()
                    time.sleep(0.3)
                    cur.execute(f"UPDATE users SET frozen_balance = {frozen + 5} WHERE id = 1")
                    c.commit()
                    outcome = "ok"
                except pymysql.MySQLError as e:
                    c.rollback()
                    outcome = str(e.args[0])
            with lock:
                results[outcome] += 1
        finally:
            c.close()

    threads = [threading.Thread(target=one) for _ in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def frozen(db: str) -> int:
    return admin_exec(f"SELECT frozen_balance FROM `{db}`.users WHERE id = 1")[0][0]


@pytest.fixture
def general_log():
    """The server's general log as a table, for this test only (restored after)."""
    before = admin_exec("SELECT @@GLOBAL.general_log, @@GLOBAL.log_output")[0]
    admin_exec("SET GLOBAL log_output = 'TABLE'", "SET GLOBAL general_log = 1")
    yield
    admin_exec(f"SET GLOBAL general_log = {int(before[0])}", f"SET GLOBAL log_output = '{before[1]}'")


def test_shadow_burst_is_direct_then_a_reload_enforces(start_thaw, db_name, tmp_path, general_log):
    setup_users(db_name)
    rules = tmp_path / "rules"
    rules.mkdir()
    atomic_write(rules / "billing.yaml", rules_text("shadow"))
    t = start_thaw(rules=str(rules))

    got = burst(t.port, db_name)
    # Direct, the same burst has lock waits that end in 1205 for most requests.
    assert got["1205"] > 0 and got["ok"] + got["1205"] == N, got
    assert frozen(db_name) == 5 * got["ok"]
    m = scrape(t.admin_port)
    assert m.sum("thaw_statements_rewritten_total") == 0
    assert m.sum("thaw_retries_total") == 0 and m.sum("thaw_replays_total") == 0
    assert m.get("thaw_shadow_actions_total", rule="users-balance", action="unlock") == N
    # Only the requests that got past their read sent the write.
    assert m.get("thaw_shadow_actions_total", rule="users-balance", action="delta") == got["ok"]
    # The server ran the app's statements: every read kept its lock clause
    # (the backend threads are the ones thaw's log names).
    threads = sorted(set(re.findall(r"thread_id=(\d+)\}: thaw::session::decide: shadow", t.log_text())))
    assert len(threads) == N, threads
    reads = admin_exec(
        "SELECT COUNT(*), COALESCE(SUM(argument LIKE '%FOR UPDATE'), 0) FROM mysql.general_log"
        " WHERE command_type = 'Query' AND argument LIKE 'SELECT id, balance, frozen_balance FROM users%'"
        f" AND thread_id IN ({', '.join(threads)})"
    )[0]
    assert reads[0] == N and reads[1] == N, reads
    assert m.get("thaw_locking_read_lock_errors_total", table="users", shape=READ_SHAPE, code="1205") == got["1205"]

    # Enforce, by a reload: the same burst now passes whole.
    atomic_write(rules / "billing.yaml", rules_text("enforce"))
    t.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: scrape(t.admin_port).get("thaw_rules_generation") >= 2, what="the reload")
    before = frozen(db_name)
    got = burst(t.port, db_name)
    assert got == Counter({"ok": N}), got
    assert frozen(db_name) == before + 5 * N
    m = scrape(t.admin_port)
    assert m.get("thaw_statements_rewritten_total", rule="users-balance", action="unlock") == N
    assert m.get("thaw_statements_rewritten_total", rule="users-balance", action="delta") == N


def test_lock_wait_and_deadlock_are_counted_under_the_shape(start_thaw, db_name):
    admin_exec(f"USE `{db_name}`", "CREATE TABLE accounts (id INT PRIMARY KEY, v INT)", "INSERT INTO accounts VALUES (1, 0), (2, 0)")
    # No rule governs `accounts`: contention is visible before any rule exists.
    t = start_thaw(rules=str(REPO_ROOT / "rules" / "billing.yaml"), extra_args=[])
    mk = lambda: pymysql.connect(host="127.0.0.1", port=t.port, user="root", database=db_name, autocommit=False)  # noqa: E731
    a, b = mk(), mk()
    ac, bc = a.cursor(), b.cursor()
    bc.execute("SET SESSION innodb_lock_wait_timeout = 1")
    # A lock wait: b waits for a's row lock until 1205 (thaw's retries included).
    ac.execute("SELECT v FROM accounts WHERE id = 1 FOR UPDATE")
    with pytest.raises(pymysql.MySQLError) as e:
        bc.execute("SELECT v FROM accounts WHERE id = 1 FOR UPDATE")
    assert e.value.args[0] == 1205
    a.rollback()
    b.rollback()
    # A deadlock: a holds 1 and wants 2, b holds 2 and wants 1.
    ac.execute("SELECT v FROM accounts WHERE id = 1 FOR UPDATE")
    bc.execute("SELECT v FROM accounts WHERE id = 2 FOR UPDATE")
    errors: list[int] = []

    def a_wants_2():
        try:
            ac.execute("UPDATE accounts SET v = v + 1 WHERE id = 2")
        except pymysql.MySQLError as err:
            errors.append(err.args[0])

    th = threading.Thread(target=a_wants_2)
    th.start()
    time.sleep(0.3)
    try:
        bc.execute("UPDATE accounts SET v = v + 1 WHERE id = 1")
    except pymysql.MySQLError as err:
        errors.append(err.args[0])
    th.join()
    a.rollback()
    b.rollback()
    a.close()
    b.close()
    m = scrape(t.admin_port)
    shape1 = "SELECT v FROM accounts WHERE id = ? FOR UPDATE"
    assert m.get("thaw_locking_reads_total", table="accounts", shape=shape1) == 4
    assert m.get("thaw_locking_read_lock_errors_total", table="accounts", shape=shape1, code="1205") >= 1
    assert m.get("thaw_locking_read_lock_errors_total", table="accounts", shape=shape1, code="1213") >= 1
    assert m.get("thaw_locking_read_seconds_total", table="accounts", shape=shape1) >= 1.0
    status, body = http_get(t.admin_port, "/contention")
    assert status == 200
    top = json.loads(body)["shapes"][0]
    assert top["shape"] == shape1 and top["table"] == "accounts" and top["reads"] == 4
    assert top["lock_errors"]["1205"] >= 1 and top["lock_errors"]["1213"] >= 1
