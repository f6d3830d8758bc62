"""Adversarial cases for the binary protocol path (COM_STMT_PREPARE /
EXECUTE planned like text: sql::bind literals, lock-cut shadow statements,
guarded writes sent as text, bound types written into later executes).

Each case runs direct (the reference) and through thaw with the shipped
rules/billing.yaml. Statements are sent with a raw binary-protocol client
(safety/binproto.py) where the case needs control over what is prepared
when and which types an execute carries, or with mysql-connector's
prepared cursor where a real driver sends it that way."""
from __future__ import annotations

import struct

import mysql.connector
import pytest

from conftest import admin_connect
from safety.binproto import T_DATETIME, BinClient, execute_packet, param
from safety.harness import STD_SCHEMA, Env, check, exec_in, run_with_retry, std_setup

USER_READ = "SELECT id, balance, frozen_balance FROM users WHERE id = ? FOR UPDATE"
FREEZE = "UPDATE users SET frozen_balance = ? WHERE id = ?"


def two_tenants(second_balance: int):
    """db0: the standard schema (alice: 1000 / 100 frozen); db1 (a second
    tenant on the same server): the same schema, alice has ``second_balance``."""
    def setup(env: Env) -> None:
        exec_in(env.db, *STD_SCHEMA)
        other = env.extra_db()
        exec_in(other, *STD_SCHEMA, f"UPDATE users SET balance = {second_balance}, frozen_balance = 0 WHERE id = 1")
    return setup


# ------------------------------------------------ the database of a PREPARE
def test_statement_prepared_in_one_database_runs_there_after_use(via, subject, direct):
    """A driver prepares its statements once per connection (here at
    connect, in the tenant's database db0). The connection then switches
    its default database (`USE db1`: a pooled connection handed to another
    part of the app) and runs the freeze with the cached statements.

    The server runs a prepared statement in the database it was prepared in:
    direct the read locks and shows db0's alice, and the freeze is written to
    db0. Through thaw the lock-cut shadow is prepared at the first execute,
    in the *current* database db1, and the guarded write is sent as text,
    also in db1: the app is shown db1's row and its freeze lands in the
    other database (db0 never gets it, db1 gets a freeze nobody logged).
    prepared.rs: PreparedUnder has no database; shadow_for prepares the cut
    text under whatever database is current; the text route sends the
    rewritten UPDATE with unqualified names; decide() plans with
    state.schema (the current database), not the statement's."""
    def scenario(env: Env, db: str):
        conn = env()
        b = BinClient(conn)
        rec = env.recorder("app")
        (_, sel, _, _) = b.prepare(USER_READ)
        (_, upd, _, _) = b.prepare(FREEZE)
        rec.note("use", b.query(f"USE `{env.dbs[1]}`"))
        read = b.execute(sel, [1])
        rec.note("read", read)
        _, bal, frozen = read[2][0]
        rec.note("freeze", b.execute(upd, [frozen + 50, 1]))
        rec.note("commit", b.query("COMMIT"))
        return "done"

    check(scenario, setup=two_tenants(60), via=via, subject=subject, direct=direct)


def test_shadow_of_another_database_is_not_reused(via, subject, direct):
    """A driver that caches statements per (database, text), as Connector/J
    does: tenant db0 runs the locking read; later the same connection serves
    tenant db1 (`USE db1`) and prepares the same text again, its own
    statement in db1. Alice of db1 has 60: a freeze of 100 must be refused
    by the app's own check.

    Direct the db1 statement reads db1 (60): insufficient, ROLLBACK. Through
    thaw the shadow is found by its text alone and the one prepared in db0
    runs: the app is shown db0's alice (1000 available), goes on to freeze
    100 in db1, and gets thaw's guard error 1644 for an overdraft it never
    attempted direct. prepared.rs shadow_for: `self.shadows` is keyed by the
    cut text only (not database, sql_mode or character set)."""
    def scenario(env: Env, db: str):
        conn = env()
        b = BinClient(conn)
        rec = env.recorder("app")
        (_, sel0, _, _) = b.prepare(USER_READ)
        rec.note("db0 read", b.execute(sel0, [1]))
        rec.note("commit", b.query("COMMIT"))
        b.query(f"USE `{env.dbs[1]}`")
        (_, sel1, _, _) = b.prepare(USER_READ)
        (_, upd1, _, _) = b.prepare(FREEZE)
        read = b.execute(sel1, [1])
        rec.note("db1 read", read)
        _, bal, frozen = read[2][0]
        if bal - frozen < 100:
            rec.note("insufficient", b.query("ROLLBACK"))
            return "insufficient"
        rec.note("freeze", b.execute(upd1, [frozen + 100, 1]))
        rec.note("commit", b.query("COMMIT"))
        return "frozen"

    check(scenario, setup=two_tenants(60), via=via, subject=subject, direct=direct)


# ------------------------------------------------ max_prepared_stmt_count
def test_shadows_do_not_use_up_the_apps_prepared_statement_slots(via, subject, direct):
    """max_prepared_stmt_count is the server's limit on statements, global to
    all connections. The app prepares its read and its write; while it does,
    the server has room for exactly the app's statements (the limit set to
    what is in use now + 2, restored afterwards).

    Direct both PREPAREs succeed and the freeze commits. Through thaw the
    first execute of the read prepares a shadow, which takes a slot the app
    never asked for: the app's second PREPARE fails with 1461 ("Can't create
    more than max_prepared_stmt_count statements"). Shadows are kept up to 16
    per connection and survive the app's CLOSE (prepared.rs MAX_SHADOWS,
    shadow_for; stmt_no_response closes only the app's statement), so a pool
    of ~1000 connections exhausts the default limit (16382) for every app on
    the server."""
    def scenario(env: Env, db: str):
        conn = env()
        b = BinClient(conn)
        rec = env.recorder("app")
        admin = admin_connect()
        try:
            with admin.cursor() as cur:
                cur.execute("SELECT @@GLOBAL.max_prepared_stmt_count")
                (old,) = cur.fetchone()
                cur.execute("SHOW GLOBAL STATUS LIKE 'Prepared_stmt_count'")
                in_use = int(cur.fetchone()[1])
                cur.execute(f"SET GLOBAL max_prepared_stmt_count = {in_use + 2}")
            try:
                sel = b.prepare(USER_READ)
                rec.note("prepare read", sel[:2] if sel[0] == "err" else sel[0])
                read = b.execute(sel[1], [1])
                rec.note("read", read)
                upd = b.prepare(FREEZE)
                rec.note("prepare write", upd[:2] if upd[0] == "err" else upd[0])
                if upd[0] == "prepared":
                    rec.note("freeze", b.execute(upd[1], [read[2][0][2] + 50, 1]))
                rec.note("commit", b.query("COMMIT"))
                b.close(sel[1])
                if upd[0] == "prepared":
                    b.close(upd[1])
            finally:
                with admin.cursor() as cur:
                    cur.execute(f"SET GLOBAL max_prepared_stmt_count = {old}")
        finally:
            admin.close()
        return "done"

    check(scenario, setup=std_setup(), via=via, subject=subject, direct=direct)


# ------------------------------------------------ a DOUBLE bound into BIGINT
def test_float_written_to_integer_balance_rounds_as_the_server_does(via, subject, direct):
    """mysql-connector's prepared cursor sends a Python float as a DOUBLE.
    The app reads alice FOR UPDATE (balance 1000, BIGINT) and charges a fee
    of 3.5 computed in floats: `UPDATE users SET balance = 996.5 WHERE id = 1`.

    Direct the server stores a double into BIGINT with rint(): 996.5 -> 996
    (half to even). Through thaw sql::bind writes the double as `9.965e2`,
    the planner reads that approximate literal as the exact decimal 996.5
    (rules/decimal.rs Decimal::parse accepts exponents; plan/update.rs turns
    it into `balance - 3.5`), and the server evaluates the delta in DECIMAL
    and rounds half away from zero: 997. One coin created per such write
    (and 2.5 -> 998 vs 998 hides it, so it depends on the parity)."""
    def scenario(env: Env, db: str):
        conn = env.connector()
        rec = env.recorder("app")

        def txn():
            ps = conn.cursor(prepared=True)
            ps.execute("SELECT id, balance, frozen_balance FROM users WHERE id = %s FOR UPDATE", (1,))
            ((_, bal, frozen),) = ps.fetchall()
            rec.note("read", (bal, frozen))
            ps2 = conn.cursor(prepared=True)
            ps2.execute("UPDATE users SET balance = %s WHERE id = %s", (bal - 3.5, 1))
            rec.note("charged", ps2.rowcount)
            conn.commit()
            return "charged"

        return run_with_retry(txn, rec=rec, rollback=conn.rollback)

    check(scenario, setup=std_setup(), via=via, subject=subject, direct=direct)


# ------------------------------------------------ types of a streamed execute
def test_types_of_a_streamed_execute_are_the_ones_later_executes_reuse(via, subject, direct):
    """A C client (libmariadb sends types only after mysql_stmt_bind_param)
    executes a statement with (BIGINT, VARCHAR), then rebinds it as
    (DOUBLE, BLOB) for an execute with a 1.1 MB document, then executes it
    again without rebinding: new-params-bound = 0, the server reuses the
    (DOUBLE, BLOB) types.

    Direct the third execute returns 2.5 and 2. Through thaw the large
    execute is streamed (over limits.connection_buffer_bytes) and its types
    are never recorded (stream.rs streamed_execute does not update
    Stmt.types); the third execute gets the first execute's types written
    into it (prepared.rs original_packet / binary::with_types), so the
    server reads the double's 8 bytes as a BIGINT: the app is given
    4612811918334230528 instead of 2.5 (with other types, 1210 or any
    value)."""
    def scenario(env: Env, db: str):
        conn = env(autocommit=True, max_allowed_packet=64 << 20)
        b = BinClient(conn)
        rec = env.recorder("app")
        (_, s, _, _) = b.prepare("SELECT ? AS a, LENGTH(?) AS n")
        rec.note("first", b.execute(s, [1, "x"]))
        big = b.execute(s, [2.0, b"z" * (1100 << 10)])
        rec.note("large", big)
        rec.note("again", b.execute(s, [2.5, b"yy"], send_types=False))
        return "done"

    check(scenario, setup=None, via=via, subject=subject, direct=direct)


# ------------------------------------------------ a cursor left open
def test_execute_sent_to_a_shadow_closes_the_statements_cursor(via, subject, direct):
    """The app executes its locking read with a read-only cursor (the driver
    fetches rows on demand), then executes the same statement again without
    one, and then asks for rows of the cursor.

    Direct a new execute closes the statement's cursor: the FETCH gets 1421
    ("The statement (N) has no open cursor"). Through thaw the second execute
    runs on the lock-cut shadow, so the app's own statement still has its
    cursor open on the server and the FETCH returns the old cursor's row.
    prepared.rs execute: Route::Shadow sends to the shadow id; nothing closes
    or resets the original statement's cursor."""
    def scenario(env: Env, db: str):
        conn = env()
        b = BinClient(conn)
        rec = env.recorder("app")
        (_, s, _, _) = b.prepare(USER_READ)
        rec.note("begin", b.query("BEGIN"))
        b._send(execute_packet(s, [param(1)], flags=1))
        first = b._read()
        rec.note("cursor opened", first if isinstance(first, tuple) else first.hex())
        if not isinstance(first, tuple) and first[0] not in (0x00, 0xFF):
            for _ in range(first[0] + 1):  # column definitions and EOF
                b._read()
        rec.note("execute", b.execute(s, [1]))
        b._send(bytes([0x1C]) + struct.pack("<II", s, 10))
        got = []
        while True:
            p = b._read()
            if isinstance(p, tuple):
                got = p
                break
            got.append(p.hex())
            if p[0] == 0xFE and len(p) < 9:
                break
        rec.note("fetch", got[:2] if isinstance(got, tuple) else got)
        rec.note("commit", b.query("COMMIT"))
        return "done"

    check(scenario, setup=std_setup(), via=via, subject=subject, direct=direct)


# ------------------------------------------------ a bound date with no literal
@pytest.mark.parametrize("sql_mode", ["NO_ENGINE_SUBSTITUTION", "STRICT_TRANS_TABLES"])
def test_bound_datetime_of_a_guarded_write_means_what_the_server_reads(via, subject, direct, sql_mode):
    """The freeze also stamps updated_at (last-writer-wins) with a bound
    DATETIME that is not a calendar date (2024-02-31, e.g. "the last day of
    the month" computed as day 31).

    Direct the server stores the bound MYSQL_TIME as a column value: not
    strict, a warning and 0000-00-00 00:00:00 (the freeze commits); strict,
    error 1292 for the column. Through thaw the guarded write is sent as
    text with `TIMESTAMP'2024-02-31 10:00:00.000000'`, a literal the parser
    refuses with 1525 in any sql_mode: not strict, the freeze is lost; strict,
    another error code and message. sql/bind.rs literal(): DateTime checks
    each field's range (day 1..=31) but not that the day exists in that
    month, so the literal does not mean what the bound value meant."""
    def scenario(env: Env, db: str):
        conn = env()
        b = BinClient(conn)
        rec = env.recorder("app")
        b.query(f"SET SESSION sql_mode = '{sql_mode}'")
        (_, sel, _, _) = b.prepare(USER_READ)
        (_, upd, _, _) = b.prepare("UPDATE users SET frozen_balance = ?, updated_at = ? WHERE id = ?")
        read = b.execute(sel, [1])
        rec.note("read", read)
        stamp = (T_DATETIME, 0, bytes([7]) + struct.pack("<HBBBBB", 2024, 2, 31, 10, 0, 0))
        out = b.execute_raw(execute_packet(upd, [param(read[2][0][2] + 50), stamp, param(1)]))
        rec.note("freeze", out[:2])
        rec.note("commit", b.query("COMMIT"))
        return "done"

    check(scenario, setup=std_setup(), via=via, subject=subject, direct=direct)



def test_float_step_leaves_the_capture_at_what_the_server_stored(via, subject, direct):
    """The same fee written relatively: `UPDATE users SET balance = balance - ?`
    with the float 3.5 (a DOUBLE), then the app re-reads its row (plain
    prepared SELECT) and stamps frozen_balance. No other session runs.

    Direct the server computes 1000 - 3.5 in double and stores rint(996.5)
    = 996; the re-read shows 996 and the transaction commits. Through thaw
    the planner follows the step exactly (plan/update.rs step_of reads
    `3.5e0` as the decimal 3.5, `stored` rounds half away from zero) and
    records 997 as what the row holds; the re-read shows 996, which thaw
    takes for a concurrent change and answers 1213. Every retry repeats it:
    the app gives up."""
    def scenario(env: Env, db: str):
        conn = env.connector()
        rec = env.recorder("app")

        def txn():
            ps = conn.cursor(prepared=True)
            ps.execute("SELECT id, balance, frozen_balance FROM users WHERE id = %s FOR UPDATE", (1,))
            ((_, bal, frozen),) = ps.fetchall()
            rec.note("read", (bal, frozen))
            ps2 = conn.cursor(prepared=True)
            ps2.execute("UPDATE users SET balance = balance - %s WHERE id = %s", (3.5, 1))
            rec.note("charged", ps2.rowcount)
            ps3 = conn.cursor(prepared=True)
            ps3.execute("SELECT id, balance, frozen_balance FROM users WHERE id = %s", (1,))
            rec.note("reread", ps3.fetchall())
            ps4 = conn.cursor(prepared=True)
            ps4.execute("UPDATE users SET frozen_balance = %s WHERE id = %s", (frozen + 10, 1))
            conn.commit()
            return "charged"

        return run_with_retry(txn, rec=rec, rollback=conn.rollback)

    check(scenario, setup=std_setup(), via=via, subject=subject, direct=direct)
