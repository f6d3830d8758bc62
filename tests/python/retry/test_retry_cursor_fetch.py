"""A read through a server-side cursor (COM_STMT_EXECUTE with
CURSOR_TYPE_READ_ONLY, rows by COM_STMT_FETCH: what JDBC's useCursorFetch
and C apps with STMT_ATTR_CURSOR_TYPE do) is a read the client decided on,
like any other. When a deadlock victim's replay would read a different value,
the replay must be refused exactly as for a text-protocol read
(test_retry_deadlock.py::test_replayed_read_differs_gives_1213).

No Python driver opens server-side cursors, so the binary-protocol commands
are sent on a pymysql connection through its packet layer (handshake,
framing and sequence checks stay pymysql's).
"""

from __future__ import annotations

import struct

import pytest
from pymysql.constants import COMMAND

from retry import retry_support as R

PORT = 3306
CURSOR_TYPE_READ_ONLY = 1
SERVER_STATUS_CURSOR_EXISTS = 0x40


def prepare(conn, sql: str) -> int:
    conn._execute_command(COMMAND.COM_STMT_PREPARE, sql)
    ok = conn._read_packet().get_all_data()
    assert ok[0] == 0, ok
    stmt_id, ncols, nparams = struct.unpack("<IHH", ok[1:9])
    assert nparams == 0
    for _ in range(ncols + (1 if ncols else 0)):  # column definitions + EOF
        conn._read_packet()
    return stmt_id


def execute_with_cursor(conn, stmt_id: int) -> None:
    conn._execute_command(COMMAND.COM_STMT_EXECUTE, struct.pack("<IBI", stmt_id, CURSOR_TYPE_READ_ONLY, 1))
    ncols = conn._read_packet().read_length_encoded_integer()
    for _ in range(ncols):
        conn._read_packet()
    eof = conn._read_packet()
    assert eof.is_eof_packet()
    server_status = struct.unpack("<H", eof.get_all_data()[3:5])[0]
    assert server_status & SERVER_STATUS_CURSOR_EXISTS, "the server did not open a cursor"


def fetch_ints(conn, stmt_id: int, n: int = 100) -> list[int]:
    """COM_STMT_FETCH of a one-INT-column cursor."""
    conn._execute_command(COMMAND.COM_STMT_FETCH, struct.pack("<II", stmt_id, n))
    out = []
    while True:
        p = conn._read_packet()
        if p.is_eof_packet():
            return out
        data = p.get_all_data()  # 0x00, NULL bitmap (1 byte for one column), INT32
        out.append(struct.unpack("<i", data[2:6])[0])


def test_replayed_cursor_read_that_differs_gives_1213(db, make_thaw):
    # Backoff 250..500 ms: the winner has committed before the replay reads again.
    thaw = make_thaw(retry={"backoff_base_ms": 500, "backoff_cap_ms": 500})
    m = R.Metrics(thaw)
    v = R.PyMySQLTx(thaw.port, db)
    try:
        stmt = prepare(v.conn, "SELECT v FROM acct WHERE id = 3")
        execute_with_cursor(v.conn, stmt)
        assert fetch_ints(v.conn, stmt) == [0]  # the client decided on v = 0
        assert v.incr(2) == 1

        def winner_first(w):
            assert w.incr_many(10, 29) == 20
            assert w.incr(3) == 1  # changes the row the victim read
            assert w.incr(1) == 1

        err, rw = R.deadlock(PORT, db, v, winner_first)
        assert rw.error is None, f"the direct winner failed: {rw.error!r}"
        assert err is not None and R.error_code(err) == 1213, (
            "the victim read row 3 = 0 through a cursor; after the replay row 3 = 1, yet the replay "
            f"was accepted (client saw {err!r}); metrics moved: {m.changes()}")
        v.rollback()
    finally:
        v.close()
    vals = R.values(PORT, db)
    assert (vals[1], vals[2], vals[3]) == (1, 1, 1), f"rows 1..3 = {vals[1]}, {vals[2]}, {vals[3]}"
    assert m.delta("thaw_replays_total", code=1213, outcome="succeeded") == 0, m.changes()
