"""Large packets direct vs through thaw: a 20 MiB BLOB round trip, and payloads of
exactly 0xFFFFFF bytes (which the protocol follows with an empty frame) in both
directions.

Needs max_allowed_packet >= 64 MiB: the GLOBAL value is raised for the test and
restored afterwards; new connections (the drivers', and thaw's backend
connections, which are opened per client connection) pick up the global.
"""

from __future__ import annotations

import hashlib

import pytest

from conftest import global_var

from .drivers import factory
from .harness import Q, differential

MIB = 1 << 20
MAX_FRAME = 0xFFFFFF
BLOB = hashlib.shake_256(b"thaw 20 MiB blob").digest(20 * MIB)  # non-UTF-8 bytes


@pytest.fixture
def big_packets():
    with global_var("max_allowed_packet", 64 * MIB) as old:
        yield old


def text_row_exact(extra=0):
    """REPEAT length whose one-column text row payload is 0xFFFFFF + extra bytes
    (lenenc prefix of a >= 64 KiB string is 4 bytes)."""
    return MAX_FRAME - 4 + extra


def binary_row_exact(extra=0):
    """Same for a binary-protocol row: 0x00 header, 1-byte NULL bitmap, lenenc 4."""
    return MAX_FRAME - 6 + extra


CONNECTOR_BIG_ROW_BUG = {"connector_prep": (
    "mysql-connector-python (pure) fails to decode a binary-protocol row in which a value "
    "of 16 MiB or more is followed by another column (struct.error), identical direct")}

CONNECTOR_EXACT_FRAME_BUG = {"connector_prep": (
    "mysql-connector-python (pure) raises IndexError on a binary-protocol row of exactly "
    "0xFFFFFF bytes (the empty continuation frame), identical direct")}

STEPS = [
    Q("CREATE TABLE big (id INT PRIMARY KEY, b LONGBLOB, t LONGTEXT)"),
    Q("INSERT INTO big (id, b) VALUES (1, %s)", (BLOB,), name="insert 20 MiB BLOB (param)"),
    Q("SELECT id, LENGTH(b), MD5(b) FROM big"),
    Q("SELECT b FROM big WHERE id = 1", name="select 20 MiB BLOB"),
    Q("SELECT id, b, LENGTH(b) FROM big WHERE id = 1", name="20 MiB BLOB between columns",
      not_on=CONNECTOR_BIG_ROW_BUG),
    Q("UPDATE big SET t = REPEAT('ü', 9 * 1024 * 1024) WHERE id = 1", name="18 MiB of utf8mb4 text"),
    Q("SELECT t FROM big"),
    Q("SELECT t, b FROM big", name="two values over 16 MiB in one row",
      not_on=CONNECTOR_BIG_ROW_BUG),
] + [
    Q(f"SELECT REPEAT('a', {n})", name=f"text row payload 0xFFFFFF{extra:+d}")
    for extra in (-1, 0, 1) for n in [text_row_exact(extra)]
] + [
    Q(f"SELECT REPEAT('b', {n})", name=f"binary row payload 0xFFFFFF{extra:+d}",
      not_on=CONNECTOR_EXACT_FRAME_BUG if extra == 0 else None)
    for extra in (-1, 0, 1) for n in [binary_row_exact(extra)]
] + [
    # COM_QUERY payload = 1 command byte + SQL text
    Q("SELECT LENGTH('" + "x" * (MAX_FRAME - 1 - len("SELECT LENGTH('')") + extra) + "')",
      name=f"COM_QUERY payload 0xFFFFFF{extra:+d}")
    for extra in (-1, 0, 1)
] + [
    Q("SELECT LENGTH('" + "y" * (2 * MAX_FRAME - 1 - len("SELECT LENGTH('')")) + "')",
      name="COM_QUERY payload 2*0xFFFFFF"),
    Q("SELECT REPEAT('z', 40 * 1024 * 1024) AS forty_mib", name="40 MiB value"),
    Q("SELECT REPEAT('z', 70 * 1024 * 1024)", name="over max_allowed_packet -> NULL + warning", warn=True),
    Q("SELECT 'still fine'"),
]


@pytest.mark.parametrize("driver", ["pymysql", "aiomysql", "mysqlclient", "connector", "connector_prep"])
def test_big_packets(driver, big_packets, db_name, direct_addr, thaw_addr):
    differential(driver, factory(driver), STEPS, db_name, direct_addr, thaw_addr)
