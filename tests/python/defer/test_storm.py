"""Books exact under a storm with deferral: many sessions freeze random
amounts from ONE user through the deferring thaw, with the legacy flow
(locking read, check in Python, log INSERT, absolute write, COMMIT). Some
are refused by the app's own check, some only at COMMIT (another freeze
got in between the read and the commit), some retry a 1213. Afterwards
the frozen balance is the initial one plus exactly the committed logs, the
invariants hold, and every freeze the app thinks committed is logged.

The case proves something only if writes were held and some guard failed
at COMMIT: it asserts both from thaw's counters."""
from __future__ import annotations

import random
import threading

import pymysql

from conftest import DB_PASSWORD, DB_USER, admin_exec
from defer.support import Counters
from safety.harness import DEADLOCK, VIOLATION, exec_in, STD_SCHEMA

SESSIONS = 16
FREEZES = 25
BALANCE = 3000
SEED = 20261201


def test_books_exact_under_a_storm(thaws, db_name):
    exec_in(db_name, *STD_SCHEMA, f"UPDATE users SET balance = {BALANCE}, frozen_balance = 0 WHERE id = 1")
    c = Counters(thaws.defer.admin_port)
    committed: dict[str, int] = {}
    outcomes = {"frozen": 0, "checked_insufficient": 0, "violation_at_commit": 0, "retried": 0}
    errors: list = []
    lock = threading.Lock()

    def worker(n: int):
        rnd = random.Random(SEED + n)
        conn = pymysql.connect(host=thaws.defer.host, port=thaws.defer.port, user=DB_USER, password=DB_PASSWORD,
                               database=db_name, autocommit=False, read_timeout=60)
        cur = conn.cursor()
        try:
            for i in range(FREEZES):
                amount, rid = rnd.randint(1, 40), f"s{n}-{i}"
                for _attempt in range(10):
                    try:
                        cur.execute("SELECT balance, frozen_balance FROM users WHERE id = 1 FOR UPDATE")
                        bal, frozen = cur.fetchone()
                        if bal - frozen < amount:
                            conn.rollback()
                            outcome = "checked_insufficient"
                            break
                        cur.execute("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES (%s, 1, %s)", (rid, amount))
                        cur.execute("UPDATE users SET frozen_balance = %s, updated_at = NOW() WHERE id = 1", (frozen + amount,))
                        conn.commit()
                        outcome = "frozen"
                        with lock:
                            committed[rid] = amount
                        break
                    except pymysql.err.OperationalError as e:
                        code = e.args[0]
                        conn.rollback()
                        if code == VIOLATION:
                            outcome = "violation_at_commit"
                            break
                        if code != DEADLOCK:
                            raise
                        with lock:
                            outcomes["retried"] += 1
                else:
                    raise AssertionError(f"{rid}: 10 attempts, all 1213")
                with lock:
                    outcomes[outcome] += 1
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            errors.append((n, repr(e)))
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads), "a session did not finish"

    ((bal, frozen),) = admin_exec(f"SELECT balance, frozen_balance FROM `{db_name}`.users WHERE id = 1")
    logs = dict(admin_exec(f"SELECT request_id, amount FROM `{db_name}`.freeze_logs WHERE user_id = 1"))
    d = c.delta()
    report = f"outcomes {outcomes}, thaw {d}, frozen {frozen}, logged {sum(logs.values())}"
    assert sum(outcomes.values()) - outcomes["retried"] == SESSIONS * FREEZES, report
    assert logs == committed, f"logs differ from the freezes the app saw committed; {report}"
    assert frozen == sum(logs.values()), report
    assert 0 <= frozen <= bal == BALANCE, report
    print(report)
    # What makes the storm a test of deferral:
    assert d["committed"] >= outcomes["frozen"] > 0, report
    assert d["violations"] == outcomes["violation_at_commit"] > 0, report
