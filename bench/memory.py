#!/usr/bin/env python3
"""Peak RSS of thaw under large and hostile client packets (issue 10).

    .venv/bin/python bench/memory.py BIN [BIN ...]

For each binary, a fresh thaw per scenario; prints one markdown row per
scenario with the VmRSS before and the peak VmRSS sampled every 10 ms
(/proc/<pid>/status) while it runs. Needs MariaDB on 127.0.0.1:3306 as
root without a password; raises the GLOBAL max_allowed_packet to 64 MiB
for the large-packet rows and restores it. Results go into
docs/operations.md (Resources), with the machine and date.
"""

from __future__ import annotations

import datetime
import os
import platform
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
sys.path.insert(0, str(ROOT / "tests" / "python" / "hardening"))

import pymysql  # noqa: E402
from conftest import admin_exec, global_var  # noqa: E402
from memsupport import MIB, RssSampler, read_packet, send_frame_chain  # noqa: E402
from thawproc import ThawProc  # noqa: E402


def login(t, **kw):
    return pymysql.connect(host=t.host, port=t.port, user="root", password="", max_allowed_packet=1 << 30,
                           read_timeout=120, write_timeout=120, **kw)


def chain_before_login(t):
    s = socket.create_connection((t.host, t.port))
    read_packet(s)
    send_frame_chain(s, frames=8, first_seq=1)
    s.close()


def chain_after_login(t):
    c = login(t)
    send_frame_chain(c._sock, frames=12, first_seq=0, first_byte=b"\x03")
    c._sock.close()


BLOB = os.urandom(40 * MIB)


def big_insert(t, db):
    c = login(t, database=db)
    with c.cursor() as cur:
        cur.execute("INSERT INTO big VALUES (NULL, %s)", (BLOB,))
    c.commit()
    c.close()


def big_row(t, db):
    c = login(t, database=db)
    with c.cursor() as cur:
        cur.execute("SELECT REPEAT('z', 20 * 1024 * 1024)")
        cur.fetchall()
    c.close()


SCENARIOS = [
    ("unterminated chain of 16 MiB frames before login (128 MiB sent)", chain_before_login, False),
    ("unterminated chain of 16 MiB frames after login (192 MiB sent)", chain_after_login, False),
    ("one 40 MiB INSERT", big_insert, True),
    ("one 20 MiB result row", big_row, True),
]


def main(bins):
    db = "thaw_bench_memory"
    admin_exec(f"DROP DATABASE IF EXISTS {db}", f"CREATE DATABASE {db}",
               f"CREATE TABLE {db}.big (id INT AUTO_INCREMENT PRIMARY KEY, b LONGBLOB)")
    print(f"<!-- {platform.node()}, {os.cpu_count()} cores, {datetime.date.today()} -->")
    print("| scenario | binary | RSS before | peak RSS |")
    print("|---|---|---|---|")
    try:
        with global_var("max_allowed_packet", 64 * MIB):
            for name, fn, needs_db in SCENARIOS:
                for b in bins:
                    os.environ["THAW_BIN"] = b
                    with ThawProc() as t:
                        login(t).close()
                        with RssSampler(t.pid) as rss:
                            try:
                                fn(t, db) if needs_db else fn(t)
                            except (OSError, pymysql.err.MySQLError) as e:
                                name_e = f" ({type(e).__name__})"
                            else:
                                name_e = ""
                        print(f"| {name}{name_e} | {b} | {rss.before / 1024:.1f} MiB | {rss.peak / 1024:.1f} MiB |", flush=True)
    finally:
        admin_exec(f"DROP DATABASE IF EXISTS {db}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
