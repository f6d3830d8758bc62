"""A minimal binary-protocol (COM_STMT_*) client over a pymysql connection's
socket, for tests that need control over what a driver would send: when a
statement is prepared, which types an execute carries (new-params-bound),
statement id 0xFFFFFFFF, streamed (large) executes.

Results are plain Python values: ("ok", affected, warnings, info),
("err", code, message), ("rows", [column names], [rows]) with rows decoded
from the binary row format (integers, DECIMAL/strings as text, doubles).
"""

from __future__ import annotations

import struct
from decimal import Decimal

import pymysql

COM_QUERY = 0x03
COM_STMT_PREPARE = 0x16
COM_STMT_EXECUTE = 0x17
COM_STMT_CLOSE = 0x19
COM_STMT_RESET = 0x1A
LAST = 0xFFFFFFFF

T_TINY, T_SHORT, T_LONG, T_FLOAT, T_DOUBLE, T_NULL = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
T_LONGLONG, T_INT24, T_DATE, T_DATETIME, T_TIMESTAMP = 0x08, 0x09, 0x0A, 0x0C, 0x07
T_NEWDECIMAL, T_BLOB, T_VAR_STRING, T_STRING, T_VARCHAR = 0xF6, 0xFC, 0xFD, 0xFE, 0x0F


def lenenc_int(n: int) -> bytes:
    if n < 251:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfc" + struct.pack("<H", n)
    if n < 1 << 24:
        return b"\xfd" + struct.pack("<I", n)[:3]
    return b"\xfe" + struct.pack("<Q", n)


def lenenc_str(b: bytes) -> bytes:
    return lenenc_int(len(b)) + b


def read_lenenc_int(p: bytes, i: int) -> tuple[int | None, int]:
    b = p[i]
    if b < 251:
        return b, i + 1
    if b == 0xFB:
        return None, i + 1
    if b == 0xFC:
        return struct.unpack_from("<H", p, i + 1)[0], i + 3
    if b == 0xFD:
        return int.from_bytes(p[i + 1:i + 4], "little"), i + 4
    return struct.unpack_from("<Q", p, i + 1)[0], i + 9


def read_lenenc_str(p: bytes, i: int) -> tuple[bytes | None, int]:
    n, i = read_lenenc_int(p, i)
    if n is None:
        return None, i
    return p[i:i + n], i + n


def param(v, *, as_type: int | None = None) -> tuple[int, int, bytes | None]:
    """(type, flags, encoded value) of a Python value, as a driver binds it."""
    if v is None:
        return (T_NULL, 0, None)
    if isinstance(v, int):
        return (as_type or T_LONGLONG, 0, struct.pack("<q", v))
    if isinstance(v, float):
        return (T_DOUBLE, 0, struct.pack("<d", v))
    if isinstance(v, Decimal):
        return (T_NEWDECIMAL, 0, lenenc_str(str(v).encode()))
    if isinstance(v, str):
        return (as_type or T_VAR_STRING, 0, lenenc_str(v.encode()))
    if isinstance(v, (bytes, bytearray)):
        return (as_type or T_BLOB, 0, lenenc_str(bytes(v)))
    raise TypeError(type(v))


def execute_packet(stmt_id: int, params: list[tuple[int, int, bytes | None]], *, send_types: bool = True,
                   flags: int = 0) -> bytes:
    p = bytes([COM_STMT_EXECUTE]) + struct.pack("<IBI", stmt_id, flags, 1)
    if not params:
        return p
    bitmap = bytearray((len(params) + 7) // 8)
    for i, (_, _, v) in enumerate(params):
        if v is None:
            bitmap[i // 8] |= 1 << (i % 8)
    p += bytes(bitmap) + bytes([1 if send_types else 0])
    if send_types:
        for t, f, _ in params:
            p += bytes([t, f])
    for _, _, v in params:
        if v is not None:
            p += v
    return p


class Column:
    def __init__(self, p: bytes):
        i = 0
        fields = []
        for _ in range(6):
            s, i = read_lenenc_str(p, i)
            fields.append(s or b"")
        if p[i] != 0x0C:  # MariaDB extended metadata
            _, i = read_lenenc_str(p, i)
        self.schema = fields[1].decode()
        self.table = fields[2].decode()
        self.name = fields[4].decode()
        self.charset, self.length, self.type, self.flags, self.decimals = struct.unpack_from("<HIBHB", p, i + 1)


def decode_value(p: bytes, i: int, col: Column):
    t = col.type
    unsigned = col.flags & 0x20
    if t == T_TINY:
        return struct.unpack_from("<B" if unsigned else "<b", p, i)[0], i + 1
    if t in (T_SHORT, 0x0D):
        return struct.unpack_from("<H" if unsigned else "<h", p, i)[0], i + 2
    if t in (T_LONG, T_INT24):
        return struct.unpack_from("<I" if unsigned else "<i", p, i)[0], i + 4
    if t == T_LONGLONG:
        return struct.unpack_from("<Q" if unsigned else "<q", p, i)[0], i + 8
    if t == T_FLOAT:
        return struct.unpack_from("<f", p, i)[0], i + 4
    if t == T_DOUBLE:
        return struct.unpack_from("<d", p, i)[0], i + 8
    if t in (T_DATE, T_DATETIME, T_TIMESTAMP, 0x0B):
        n = p[i]
        return p[i + 1:i + 1 + n], i + 1 + n
    s, i = read_lenenc_str(p, i)
    if t == T_NEWDECIMAL:
        return Decimal(s.decode()), i
    return s, i


class BinClient:
    """Raw COM_STMT_* over a pymysql connection (which keeps doing the handshake and text queries)."""

    def __init__(self, conn: pymysql.connections.Connection):
        self.c = conn

    def _read(self) -> bytes | tuple:
        try:
            return self.c._read_packet().get_all_data()
        except pymysql.err.MySQLError as e:
            return ("err", e.args[0], e.args[1] if len(e.args) > 1 else "")

    def _send(self, payload: bytes) -> None:
        self.c._execute_command(payload[0], payload[1:])

    def prepare(self, sql: str):
        """("prepared", id, params, columns) or ("err", code, message)."""
        self._send(bytes([COM_STMT_PREPARE]) + sql.encode())
        p = self._read()
        if isinstance(p, tuple):
            return p
        sid, cols, params = struct.unpack_from("<IHH", p, 1)
        for _ in range(params):
            self._read()
        if params:
            self._read()  # EOF
        for _ in range(cols):
            self._read()
        if cols:
            self._read()  # EOF
        return ("prepared", sid, params, cols)

    def execute_raw(self, packet: bytes):
        self._send(packet)
        return self._response()

    def execute(self, stmt_id: int, values=(), *, send_types: bool = True, types: list[int | None] | None = None):
        ps = [param(v, as_type=(types[i] if types else None)) for i, v in enumerate(values)]
        return self.execute_raw(execute_packet(stmt_id, ps, send_types=send_types))

    def _response(self):
        p = self._read()
        if isinstance(p, tuple):
            return p
        if p[0] == 0x00:
            affected, i = read_lenenc_int(p, 1)
            _, i = read_lenenc_int(p, i)
            status, warnings = struct.unpack_from("<HH", p, i)
            info = p[i + 4:]
            if info and info[0] == len(info) - 1:  # CLIENT_SESSION_TRACK: length-encoded
                info = info[1:]
            return ("ok", affected, warnings, info.decode(errors="replace"))
        ncols, _ = read_lenenc_int(p, 0)
        cols = []
        for _ in range(ncols):
            cols.append(Column(self._read()))
        self._read()  # EOF
        rows = []
        while True:
            r = self._read()
            if isinstance(r, tuple):
                return r
            if r[0] == 0xFE and len(r) < 9:
                break
            nb = (len(cols) + 9) // 8
            bitmap = r[1:1 + nb]
            i = 1 + nb
            row = []
            for k, c in enumerate(cols):
                bit = k + 2
                if bitmap[bit // 8] & (1 << (bit % 8)):
                    row.append(None)
                    continue
                v, i = decode_value(r, i, c)
                row.append(v)
            rows.append(tuple(row))
        return ("rows", [c.name for c in cols], rows)

    def close(self, stmt_id: int) -> None:
        self._send(bytes([COM_STMT_CLOSE]) + struct.pack("<I", stmt_id))

    def reset(self, stmt_id: int):
        self._send(bytes([COM_STMT_RESET]) + struct.pack("<I", stmt_id))
        return self._response()

    def query(self, sql: str):
        """One text statement; ("ok", ...) / ("err", ...) / ("rows", names, rows) (text rows as pymysql gives them)."""
        cur = self.c.cursor()
        try:
            cur.execute(sql)
            rows = cur.fetchall()
            if cur.description:
                return ("rows", [d[0] for d in cur.description], [tuple(r) for r in rows])
            return ("ok", cur.rowcount)
        except pymysql.err.MySQLError as e:
            return ("err", e.args[0], e.args[1] if len(e.args) > 1 else "")
        finally:
            cur.close()
