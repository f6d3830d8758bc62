"""Real client tools through thaw: the mysql CLI, mysqldump and sysbench.

The CLI and mysqldump must print byte-for-byte what they print direct (minus
the lines that name the port or the time). sysbench oltp_read_write (server-side
prepared statements by default) must finish through thaw with 0 errors.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from conftest import DIRECT_HOST, DIRECT_PORT, admin_exec

TOOLS = {"mysql": "mariadb-client", "mysqldump": "mariadb-client", "sysbench": "sysbench"}


@pytest.fixture(scope="module", autouse=True)
def _tools_installed():
    missing = [f"{t} (apt package {p})" for t, p in TOOLS.items() if shutil.which(t) is None]
    assert not missing, f"missing tools: {missing}; scripts/test.sh installs them"


def sh(args: list[str], stdin: bytes | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, input=stdin, capture_output=True, timeout=timeout)


def mysql_cli(port: int, db: str, *extra: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return sh(["mysql", f"-h{DIRECT_HOST}", f"-P{port}", "--protocol=TCP", "-uroot",
               "--default-character-set=utf8mb4", *extra, db], stdin=stdin)


def same_run(direct: subprocess.CompletedProcess, thawed: subprocess.CompletedProcess, what: str):
    d = (direct.returncode, direct.stdout, direct.stderr)
    t = (thawed.returncode, thawed.stdout, thawed.stderr)
    if d != t:
        import difflib
        diff = "\n".join(difflib.unified_diff(
            direct.stdout.decode("utf-8", "replace").splitlines() + ["--stderr--"]
            + direct.stderr.decode("utf-8", "replace").splitlines(),
            thawed.stdout.decode("utf-8", "replace").splitlines() + ["--stderr--"]
            + thawed.stderr.decode("utf-8", "replace").splitlines(),
            "direct", "thaw", lineterm=""))
        pytest.fail(f"{what}: direct rc={direct.returncode} thaw rc={thawed.returncode}\n{diff[:20000]}")


SCHEMA = r"""
CREATE TABLE items (
  id INT AUTO_INCREMENT PRIMARY KEY,
  name VARCHAR(40) NOT NULL,
  price DECIMAL(12,2) DEFAULT 0.00,
  ratio DOUBLE,
  raw VARBINARY(32),
  bits BIT(10),
  born DATE, at DATETIME(6), dur TIME(3), yr YEAR,
  kind ENUM('a','b','c'), tags SET('x','y'), doc JSON, geo POINT, ip INET6, uid UUID,
  note TEXT, blobby BLOB,
  KEY idx_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='tools ü';
INSERT INTO items (name, price, ratio, raw, bits, born, at, dur, yr, kind, tags, doc, geo, ip, uid, note, blobby) VALUES
 ('plain', 1.50, 0.1, X'00FF80', b'1010101010', '2024-02-29', '2024-02-29 12:34:56.789012', '-01:02:03.456', 2024,
  'b', 'x,y', '{"k": [1, "ü😀"]}', POINT(1, 2), '::1', '123e4567-e89b-12d3-a456-426614174000',
  'line1\nline2\ttab \\ backslash ''quote''', X'DEADBEEF0001FEFF'),
 ('emoji 😀 中文', -99.99, 1e-300, X'', b'0', '1000-01-01', '9999-12-31 23:59:59.999999', '838:59:59.000', 1901,
  'a', '', '[]', POINT(-1.5, 1e10), 'ffff::', '00000000-0000-0000-0000-000000000000', '', X''),
 ('nulls', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO items (name, note) SELECT CONCAT('bulk-', seq), REPEAT('n', seq) FROM seq_1_to_500;
CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, item_id INT, msg VARCHAR(100));
CREATE VIEW cheap AS SELECT id, name, price FROM items WHERE price < 10;
CREATE TRIGGER items_ai AFTER INSERT ON items FOR EACH ROW INSERT INTO audit (item_id, msg) VALUES (NEW.id, 'new');
CREATE PROCEDURE two_sets(IN n INT) BEGIN SELECT n AS n; SELECT COUNT(*) AS c FROM items; END;
CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2;
"""


def load_schema(db: str):
    # via the CLI itself (it splits statements; DELIMITER needed for the bodies)
    script = "DELIMITER //\n" + SCHEMA.replace(";\n", "//\n") + "DELIMITER ;\n"
    r = mysql_cli(DIRECT_PORT, db, stdin=script.encode())
    assert r.returncode == 0, r.stderr.decode()


CLI_QUERIES = [
    ("select all", "SELECT * FROM items ORDER BY id LIMIT 10"),
    ("functions", "SELECT twice(21), 1/0, CAST('x' AS INT), NULL, X'00FF', 'ü😀', 18446744073709551615"),
    ("call two result sets", "CALL two_sets(7)"),
    ("empty", "SELECT * FROM items WHERE 1 = 0"),
    ("error", "SELECT * FROM no_such_table"),
    ("syntax error", "SELEC 1"),
    ("show", "SHOW CREATE TABLE items"),
    ("view", "SELECT * FROM cheap ORDER BY id LIMIT 3"),
    ("warnings", "SELECT CAST('12abc' AS INT), 1/0; SHOW WARNINGS"),
]



@pytest.mark.parametrize("mode", [[], ["-t"], ["--xml"], ["--html"], ["-N", "-B", "--raw"], ["--show-warnings", "-t"]],
                         ids=["batch", "table", "xml", "html", "raw", "show-warnings"])
def test_mysql_cli_e(mode, db_name, thaw):
    load_schema(db_name)
    for name, sql in CLI_QUERIES:
        d = mysql_cli(DIRECT_PORT, db_name, *mode, "-e", sql)
        t = mysql_cli(thaw.port, db_name, *mode, "-e", sql)
        same_run(d, t, f"mysql {' '.join(mode)} -e [{name}] {sql}")




def test_mysql_cli_column_type_info(db_name, thaw):
    """Full column metadata as libmariadb reports it (name, org name, db, table,
    type, collation, length, max length, decimals, flags), compared strictly."""
    load_schema(db_name)
    for name, sql in CLI_QUERIES:
        d = mysql_cli(DIRECT_PORT, db_name, "-t", "--column-type-info", "-e", sql)
        t = mysql_cli(thaw.port, db_name, "-t", "--column-type-info", "-e", sql)
        same_run(d, t, f"mysql --column-type-info -e [{name}] {sql}")


def test_mysql_cli_extended_type_info(db_name, thaw):
    load_schema(db_name)
    sql = "SELECT doc, geo, ip, uid FROM items ORDER BY id LIMIT 1"
    d = mysql_cli(DIRECT_PORT, db_name, "-t", "--column-type-info", "-e", sql)
    assert b"(format=json)" in d.stdout and b"(type=uuid)" in d.stdout, d.stdout
    same_run(d, mysql_cli(thaw.port, db_name, "-t", "--column-type-info", "-e", sql),
             "mysql --column-type-info, extended metadata")


def test_mysql_cli_script_stdin(db_name, thaw):
    """A whole script on stdin, with DELIMITER, warnings, an error (--force) and a
    transaction; same output and same resulting data."""
    script = b"""
SET sql_mode = '';
CREATE TABLE s (id INT PRIMARY KEY, v VARCHAR(3));
INSERT INTO s VALUES (1, 'toolong'), (2, 'ok');
SHOW WARNINGS;
SELECT * FROM s;
DELIMITER $$
CREATE PROCEDURE p() BEGIN SELECT 'in proc' AS x; SELECT COUNT(*) FROM s; END$$
DELIMITER ;
CALL p();
SELECT * FROM missing_table;
START TRANSACTION;
INSERT INTO s VALUES (3, 'trx');
COMMIT;
SELECT * FROM s ORDER BY id;
DROP PROCEDURE p;
DROP TABLE s;
"""
    out = []
    for port in (DIRECT_PORT, thaw.port):
        admin_exec(f"DROP DATABASE IF EXISTS `{db_name}`", f"CREATE DATABASE `{db_name}`")
        out.append(mysql_cli(port, db_name, "--force", "--show-warnings", "-t", stdin=script))
    assert b"in proc" in out[0].stdout and b"1146" in out[0].stderr, out[0]
    same_run(out[0], out[1], "mysql < script")


DUMP_VOLATILE = re.compile(rb"^-- (Dump completed on|Host: |Server version).*$", re.M)


def mysqldump(port: int, db: str, *extra: str) -> subprocess.CompletedProcess:
    r = sh(["mysqldump", f"-h{DIRECT_HOST}", f"-P{port}", "--protocol=TCP", "-uroot", "--default-character-set=utf8mb4",
            "--routines", "--triggers", "--events", *extra, db])
    r.stdout = DUMP_VOLATILE.sub(b"-- <volatile line>", r.stdout)
    return r


@pytest.mark.parametrize("extra", [[], ["--hex-blob", "--skip-extended-insert"], ["--single-transaction", "--tz-utc"]],
                         ids=["default", "hex-blob", "single-transaction"])
def test_mysqldump_identical(extra, db_name, thaw):
    load_schema(db_name)
    d = mysqldump(DIRECT_PORT, db_name, *extra)
    t = mysqldump(thaw.port, db_name, *extra)
    assert d.returncode == 0, d.stderr.decode()
    assert b"CREATE TABLE `items`" in d.stdout and b"two_sets" in d.stdout
    same_run(d, t, f"mysqldump {' '.join(extra)}")


def test_mysqldump_restore_through_thaw(db_name, thaw):
    """Restore a dump through thaw (big multi-row INSERTs, routines, triggers), then
    dump both copies directly: identical."""
    load_schema(db_name)
    dump = mysqldump(DIRECT_PORT, db_name)
    assert dump.returncode == 0, dump.stderr.decode()
    copy = db_name + "_copy"
    admin_exec(f"CREATE DATABASE `{copy}`")
    try:
        r = mysql_cli(thaw.port, copy, stdin=dump.stdout)
        assert r.returncode == 0, r.stderr.decode()
        a = mysqldump(DIRECT_PORT, db_name).stdout
        b = mysqldump(DIRECT_PORT, copy).stdout.replace(copy.encode(), db_name.encode())
        assert a == b, "restored-through-thaw copy differs from the original"
    finally:
        admin_exec(f"DROP DATABASE IF EXISTS `{copy}`")


def sysbench(port: int, db: str, cmd: str, *extra: str, timeout=180) -> subprocess.CompletedProcess:
    return sh(["sysbench", "oltp_read_write", f"--mysql-host={DIRECT_HOST}", f"--mysql-port={port}",
               "--mysql-user=root", f"--mysql-db={db}", "--mysql-ssl=off", "--tables=2",
               "--table-size=1000", "--threads=4", "--time=10", *extra, cmd], timeout=timeout)


def test_sysbench_oltp_read_write(db_name, thaw):
    """sysbench with its defaults (server-side prepared statements, --db-ps-mode=auto)
    through thaw: prepare, a 10 s run, cleanup, 0 errors."""
    prep = sysbench(thaw.port, db_name, "prepare")
    assert prep.returncode == 0, (prep.stdout + prep.stderr).decode()
    try:
        run = sysbench(thaw.port, db_name, "run")
        out = run.stdout.decode()
        assert run.returncode == 0, out + run.stderr.decode()
        # sysbench 1.0.20 aborts with "FATAL:" on any error it does not ignore, and
        # counts the ignored ones (--mysql-ignore-errors, default 1213,1020,1205)
        # on the "ignored errors:" line; newer versions also print "errors:".
        assert "FATAL" not in out + run.stderr.decode(), out + run.stderr.decode()
        for m in re.finditer(r"^\s*errors:\s+(\d+)", out, re.M):
            assert int(m.group(1)) == 0, f"sysbench through thaw had {m.group(1)} errors:\n{out}"
        ignored = re.search(r"^\s*ignored errors:\s+(\d+)", out, re.M)
        assert ignored, f"no 'ignored errors:' line in sysbench output:\n{out}"
        tx = re.search(r"^\s*transactions:\s+(\d+)", out, re.M)
        assert tx and int(tx.group(1)) > 0, out
        print(f"sysbench through thaw: {tx.group(1)} transactions, {ignored.group(1)} ignored errors "
              "(deadlocks sysbench retries by default)")
    finally:
        clean = sysbench(thaw.port, db_name, "cleanup")
        assert clean.returncode == 0, (clean.stdout + clean.stderr).decode()
