"""The differential fidelity suite again, with the compressed protocol on (issue 13).

Every test of tests/python/fidelity/ (the statement corpus, the protocol
commands, big packets, SQLAlchemy) and the mysql CLI / mysqldump tests of
test_tools.py run here once per mode, against a thaw configured for it:

  client   the app's leg to thaw is compressed, thaw's leg to the server is not
           (client_compression: allowed, backend_compression: off)
  backend  the app talks plain text to thaw, thaw's leg to the server is
           compressed (backend_compression: preferred): every driver runs
  both     both legs (the default config: backend_compression: as_client)

In `client` and `both` the drivers that can compress do so, direct and
through thaw alike: mysqlclient (`compress=True`), mysql-connector-python
pure (`use_pure=True, compress=True`, plain and prepared cursors) and the
mysql CLI / mysqldump (`--compress`). PyMySQL, aiomysql and SQLAlchemy on
them have no compression (PyMySQL's `compress=` raises "not supported"), so
their tests run only in `backend` mode and are skipped, with that reason, in
the other two. mysql-connector-python's C extension is not installed on this
platform (mysql.connector.HAVE_CEXT is False; the pinned wheel has none).

Each test also checks, from thaw's metrics, that the legs of its mode were
compressed and the other leg was not.
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest
from _pytest.fixtures import FixtureFunctionDefinition

import test_tools
from fidelity import drivers, test_bigpacket, test_commands, test_corpus, test_sqlalchemy
from fidelity.harness import differential
from thawproc import ThawProc

from .support import legs

MODES = {
    "client": "client_compression: allowed\nbackend_compression: off\n",
    "backend": "backend_compression: preferred\n",
    "both": "",
}
# Drivers that speak the compressed protocol, and how they are asked to.
COMPRESSING = {"mysqlclient": {"compress": True}, "connector": {"compress": True}, "connector_prep": {"compress": True}}
NO_COMPRESSION = {
    "pymysql": "PyMySQL has no compressed protocol (compress= is 'not supported')",
    "pymysql_fr": "PyMySQL has no compressed protocol",
    "pymysql_ss": "PyMySQL has no compressed protocol",
    "aiomysql": "aiomysql (PyMySQL's protocol code) has no compressed protocol",
    "sqla": "SQLAlchemy here runs on PyMySQL, which has no compressed protocol",
    "sqla_async": "SQLAlchemy here runs on aiomysql, which has no compressed protocol",
}
TOOL_TESTS = [
    "test_mysql_cli_e",
    "test_mysql_cli_column_type_info",
    "test_mysql_cli_extended_type_info",
    "test_mysql_cli_script_stdin",
    "test_mysqldump_identical",
    "test_mysqldump_restore_through_thaw",
]
# Tests in which no connection through thaw logs in (nothing to compress).
NO_LOGIN = {"test_connect_auth_failure", "test_connect_unknown_database"}
# What a driver cannot do compressed, direct just as through thaw.
CONNECTOR_CHANGE_USER = ("mysql-connector-python refuses COM_CHANGE_USER on a compressed connection "
                         "('Change user is not supported with compression'), direct too")
DRIVER_LIMITS = {
    ("test_change_user", "connector"): CONNECTOR_CHANGE_USER,
    ("test_change_user_wrong_password", "connector"): CONNECTOR_CHANGE_USER,
    ("test_big_packets", "connector_prep"): (
        "mysql-connector-python, prepared cursor, compress=True: the server resets the connection on the "
        "20 MiB parameter of the first step (direct too), and every later step needs that row"),
}


def _adopt(mod, only=None):
    """Collect another module's tests (and the fixtures they use) here."""
    for name, obj in vars(mod).items():
        fixture = isinstance(obj, FixtureFunctionDefinition) and not name.startswith("_")
        if fixture or (name.startswith("test_") and (only is None or name in only)):
            globals()[name] = obj


for _mod in (test_corpus, test_commands, test_sqlalchemy):
    _adopt(_mod)
_adopt(test_bigpacket, only=())
_adopt(test_tools, TOOL_TESTS)

# libmariadb on a compressed connection loses the connection (2013) on a
# text row of exactly 0xFFFFFF bytes from MariaDB, direct (through thaw the
# row arrives: thaw frames it differently): that one step is left out for it
# when the app's leg is compressed. Every other size, 0xFFFFFF-1 and +1
# included, still runs.
EXACT_FRAME_ROW = "text row payload 0xFFFFFF+0"
COMPRESSED_BIG_STEPS = [
    dataclasses.replace(st, not_on={**st.not_on, "mysqlclient": "libmariadb, compressed: 2013 on a 0xFFFFFF-byte row direct (through thaw, whose frames differ, the row arrives)"})
    if st.name == EXACT_FRAME_ROW else st
    for st in test_bigpacket.STEPS
]
assert any(st.name == EXACT_FRAME_ROW for st in test_bigpacket.STEPS)


@pytest.mark.parametrize("driver", ["pymysql", "aiomysql", "mysqlclient", "connector", "connector_prep"])
def test_big_packets(driver, big_packets, db_name, direct_addr, thaw_addr, thaw):
    """fidelity/test_bigpacket.py's steps (20 MiB BLOBs, 0xFFFFFF boundaries, 40 MiB values)."""
    steps = test_bigpacket.STEPS if thaw.mode == "backend" else COMPRESSED_BIG_STEPS
    differential(driver, drivers.factory(driver), steps, db_name, direct_addr, thaw_addr)


@pytest.fixture(scope="module", params=list(MODES))
def thaw(request, tmp_path_factory):
    cfg = tmp_path_factory.mktemp(f"compress-{request.param}") / "thaw.yaml"
    cfg.write_text(MODES[request.param])
    proc = ThawProc(config=str(cfg))
    proc.start()
    proc.mode = request.param
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def thaw_addr(thaw):
    return (thaw.host, thaw.port)


def _with_kw(cls, kw):
    class Compressed(cls):
        def __init__(self, host, port, db, **more):
            super().__init__(host, port, db, **{**kw, **more})

    Compressed.__name__ = cls.__name__
    return Compressed


def _refused(name):
    class NoCompression:
        def __init__(self, *a, **kw):
            pytest.skip(f"{name}: {NO_COMPRESSION[name]}")

    return NoCompression


def _uses_a_compressing_driver(item) -> bool:
    spec = getattr(item, "callspec", None)
    driver = spec.params.get("driver") if spec else None
    if driver is not None:
        return driver in COMPRESSING
    if item.originalname in TOOL_TESTS:
        return True
    src = inspect.getsource(item.function)
    return any(f'"{d}"' in src for d in COMPRESSING)


@pytest.fixture(autouse=True)
def _compressed_clients(request, thaw, monkeypatch):
    mode = thaw.mode
    spec = getattr(request.node, "callspec", None)
    driver = spec.params.get("driver") if spec else None
    if mode != "backend":
        limit = DRIVER_LIMITS.get((request.node.originalname, driver))
        if limit:
            pytest.skip(f"{mode} mode: {limit}")
        if not _uses_a_compressing_driver(request.node):
            why = NO_COMPRESSION.get(driver, "uses only PyMySQL/aiomysql, which have no compressed protocol")
            pytest.skip(f"{mode} mode: {why}")
        for name, kw in COMPRESSING.items():
            monkeypatch.setitem(drivers.ADAPTERS, name, _with_kw(drivers.ADAPTERS[name], kw))
        for name in NO_COMPRESSION:
            monkeypatch.setitem(drivers.ADAPTERS, name, _refused(name))
        plain_sh = test_tools.sh

        def sh(args, *a, **kw):
            if args and args[0] in ("mysql", "mysqldump"):
                args = [args[0], "--compress", *args[1:]]
            return plain_sh(args, *a, **kw)

        monkeypatch.setattr(test_tools, "sh", sh)
    before = legs(thaw.admin_port)
    yield
    client, backend = (a - b for a, b in zip(legs(thaw.admin_port), before))
    if request.node.originalname in NO_LOGIN:
        return
    want = {"client": (True, False), "backend": (False, True), "both": (True, True)}[mode]
    if request.node.originalname == "test_compress_requested":
        want = (True, mode != "client")  # it asks for compression in every mode
    assert (client > 0, backend > 0) == want, (
        f"{mode} mode: compressed legs opened during the test: client {client:.0f}, backend {backend:.0f}")
