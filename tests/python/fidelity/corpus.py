"""The statement corpus of the differential fidelity suite.

GROUPS maps a group name to a list of steps. Each group runs on one fresh
connection, in order, in its own freshly created database (same name on both
sides). Values that legitimately differ between two runs (connection ids,
NOW(), uptime, creation times) are deliberately not in the corpus.

SQL is written to work through SQLAlchemy text() as well: no `:word` after a
non-word character (JSON is written `{"k": 1}` with a space after the colon).
`%s` marks a parameter; the SQLAlchemy adapters turn it into a named bind.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from .harness import Q, Step

TEXT_DRIVERS = ["pymysql", "pymysql_ss", "aiomysql", "mysqlclient", "connector", "sqla", "sqla_async"]
PREP_UNSUPPORTED = 1295  # "This command is not supported in the prepared statement protocol yet"

# Driver bugs seen identically direct and through thaw. A step that triggers one
# leaves that driver's connection unusable, so it is excluded from the main run
# and repeated as the last step of its group (where the failure itself is compared).
CONNECTOR_YEAR_BUG = {"connector_prep": (
    "mysql-connector-python (pure) misreads a binary-protocol YEAR value followed by another column "
    "(IndexError) and leaves the connection with an unread result; YEAR is therefore the last column")}
CONNECTOR_CALL_BUG = {"connector_prep": (
    "mysql-connector-python prepared cursor fails on CALL results "
    "(ProgrammingError 'Failed handling non-resultset; affected_rows') and leaves the connection unusable")}
CONNECTOR_ERR_AFTER_ROWS_BUG = {"connector_prep": (
    "mysql-connector-python prepared cursor does not notice an ERR packet after binary rows and "
    "waits for its read timeout (3024)")}

# ------------------------------------------------------------------ all column types
TYPES_DDL = """
CREATE TABLE types_all (
  id INT AUTO_INCREMENT PRIMARY KEY,
  ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
  mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED,
  bi BIGINT, biu BIGINT UNSIGNED, bool_ BOOLEAN, izf INT(8) ZEROFILL,
  dec1 DECIMAL(20,6), dec2 DECIMAL(65,30), dec0 DECIMAL(10,0) UNSIGNED,
  f FLOAT, f2 FLOAT(7,3), d DOUBLE, d2 DOUBLE(12,4),
  b1 BIT(1), b13 BIT(13), b64 BIT(64),
  dt DATE, tm TIME(6), tm0 TIME, dtm DATETIME(6), dtm0 DATETIME,
  ts TIMESTAMP NULL DEFAULT NULL, ts6 TIMESTAMP(6) NULL DEFAULT NULL,
  ch CHAR(10), vc VARCHAR(255), ch_l1 VARCHAR(20) CHARACTER SET latin1, vc_bin VARCHAR(20) COLLATE utf8mb4_bin,
  bin16 BINARY(16), vb VARBINARY(64),
  tb TINYBLOB, bl BLOB, mb MEDIUMBLOB, lb LONGBLOB,
  ttx TINYTEXT, tx TEXT, mtx MEDIUMTEXT, ltx LONGTEXT,
  en ENUM('a','b','c','ü😀'), st SET('x','y','z'), js JSON,
  geo GEOMETRY, pt POINT, ls LINESTRING, poly POLYGON,
  ip6 INET6, uu UUID,
  yr YEAR
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
"""

_COLS = ("ti, tiu, si, siu, mi, miu, i, iu, bi, biu, bool_, izf, dec1, dec2, dec0, f, f2, d, d2, "
         "b1, b13, b64, dt, tm, tm0, dtm, dtm0, ts, ts6, ch, vc, ch_l1, vc_bin, bin16, vb, "
         "tb, bl, mb, lb, ttx, tx, mtx, ltx, en, st, js, geo, pt, ls, poly, ip6, uu, yr")

ROW_MIN = (
    "-128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0, FALSE, 0, "
    "-99999999999999.999999, -99999999999999999999999999999999999.999999999999999999999999999999, 0, "
    "-3.40282e38, -9999.999, -1.7976931348623157e308, -99999999.9999, "
    "b'0', b'0', 0, '1000-01-01', '-838:59:59.000000', '-838:59:59', "
    "'1000-01-01 00:00:00.000000', '1000-01-01 00:00:00', '1970-01-01 00:00:01', '1970-01-01 00:00:01.000000', "
    "'', '', '', '', X'00000000000000000000000000000000', X'', X'', X'', X'', X'', '', '', '', '', "
    "'a', '', '[]', ST_GeomFromText('POINT(0 0)'), ST_GeomFromText('POINT(-1.5 2.25)'), "
    "ST_GeomFromText('LINESTRING(0 0, 1 1)'), ST_GeomFromText('POLYGON((0 0, 1 0, 1 1, 0 0))'), "
    "'::', '00000000-0000-0000-0000-000000000000', 1901"
)
ROW_MAX = (
    "127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295, 9223372036854775807, "
    "18446744073709551615, TRUE, 99999999, "
    "99999999999999.999999, 99999999999999999999999999999999999.999999999999999999999999999999, 9999999999, "
    "3.40282e38, 9999.999, 1.7976931348623157e308, 99999999.9999, "
    "b'1', b'1111111111111', 18446744073709551615, '9999-12-31', '838:59:59.999999', '838:59:59', "
    "'9999-12-31 23:59:59.999999', '9999-12-31 23:59:59', '2038-01-19 03:14:07', '2038-01-19 03:14:07.999999', "
    "'ÿÿÿÿÿÿÿÿÿÿ', REPEAT('z', 255), 'ÿ¥©®°±µ', 'ZzAa', X'FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF', "
    "REPEAT(X'FF', 64), REPEAT(X'FE', 255), REPEAT(X'FD', 65535), REPEAT(X'FC', 70000), REPEAT(X'FB', 70001), "
    "REPEAT('t', 255), REPEAT('é', 16383), REPEAT('m', 70000), REPEAT('L', 70001), "
    "'ü😀', 'x,y,z', '{\"max\": 18446744073709551615}', "
    "ST_GeomFromText('MULTIPOINT(1 1, 2 2)'), ST_GeomFromText('POINT(1e300 -1e300)'), "
    "ST_GeomFromText('LINESTRING(0 0, 1 1, 2 0)'), ST_GeomFromText('POLYGON((0 0, 10 0, 10 10, 0 10, 0 0), (1 1, 2 1, 2 2, 1 1))'), "
    "'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'ffffffff-ffff-ffff-ffff-ffffffffffff', 2155"
)
ROW_TYPICAL = (
    "-5, 200, -300, 60000, -70000, 70000, -123456, 3000000000, -1234567890123, 12345678901234567890, TRUE, 42, "
    "1234.5678, 0.000000000000000000000000000001, 17, "
    "0.1, 3.25, 1e-300, 0.5, "
    "b'1', b'1010101010101', b'1000000000000000000000000000000000000000000000000000000000000001', "
    "'2024-02-29', '00:00:00.5', '-00:00:01', '2024-02-29 12:34:56.789012', '2024-02-29 12:34:56', "
    "'2024-02-29 12:34:56', '2024-02-29 12:34:56.000001', "
    "'héllo', 'emoji 😀 🎉 👩‍👩‍👧 and 中文 and عربى', 'café', 'BiN', "
    "X'00FF80FE7F0110C3A9E29C93F09F9880', X'80818283C0C1F5F6F7F8F9FAFBFCFDFE', "
    "X'C328', X'DEADBEEF00FFFE', X'F09F98', X'E28228', "
    "'tiny 😀', 'text\\nwith\\ttabs and \\\\ backslash', 'medium ☃', 'long ✓', "
    "'c', 'x,z', '{\"k\": [1, 2.5, \"😀\", null, true], \"n\": {\"a\": \"b\"}}', "
    "ST_GeomFromText('GEOMETRYCOLLECTION(POINT(1 2), LINESTRING(0 0, 3 4))'), ST_GeomFromText('POINT(3.14159 -2.71828)'), "
    "ST_GeomFromText('LINESTRING(-1 -1, 5 5)'), ST_GeomFromText('POLYGON((0 0, 4 0, 4 4, 0 0))'), "
    "'2001:db8::ff00:42:8329', '123e4567-e89b-12d3-a456-426614174000', 2024"
)

TYPES = [
    Q("DROP TABLE IF EXISTS types_all", warn=True),
    Q(TYPES_DDL, name="create types_all"),
    Q(f"INSERT INTO types_all ({_COLS}) VALUES ({ROW_MIN})", name="insert min row"),
    Q(f"INSERT INTO types_all ({_COLS}) VALUES ({ROW_MAX})", name="insert max row"),
    Q("INSERT INTO types_all (id) VALUES (NULL)", name="insert all-NULL row"),
    Q(f"INSERT INTO types_all ({_COLS}) VALUES ({ROW_TYPICAL})", name="insert typical row"),
    Q("SELECT * FROM types_all ORDER BY id", name="select * all types"),
    Q("SELECT * FROM types_all WHERE id = %s", (4,), name="select * with param"),
    Q("SELECT id, ti, tiu, si, siu, mi, miu, i, iu, bi, biu, bool_, izf FROM types_all ORDER BY id"),
    Q("SELECT id, dec1, dec2, dec0, f, f2, d, d2 FROM types_all ORDER BY id"),
    Q("SELECT id, b1, b13, b64, b64 + 0, BIN(b13), HEX(b64) FROM types_all ORDER BY id"),
    Q("SELECT id, dt, tm, tm0, dtm, dtm0, ts, ts6, yr FROM types_all ORDER BY id"),
    Q("SELECT id, yr, vc FROM types_all ORDER BY id", name="YEAR then string", not_on=CONNECTOR_YEAR_BUG),
    Q("SELECT id, ch, vc, ch_l1, vc_bin, en, st, js FROM types_all ORDER BY id"),
    Q("SELECT id, bin16, vb, tb, bl, HEX(bin16), LENGTH(mb), LENGTH(lb) FROM types_all ORDER BY id"),
    Q("SELECT id, ttx, tx, LENGTH(mtx), CHAR_LENGTH(ltx) FROM types_all ORDER BY id"),
    Q("SELECT id, geo, pt, ls, poly, ST_AsText(geo), ST_X(pt), ST_AsGeoJSON(ls) FROM types_all ORDER BY id"),
    Q("SELECT id, ip6, uu, CAST(ip6 AS CHAR), CAST(uu AS BINARY(16)) FROM types_all ORDER BY id"),
    Q("SELECT ti + 1, biu * 1, biu + 0.0, dec1 * 2, f * 1, d / 3, CONCAT(vc, ch), CONCAT(vc, bin16), "
      "JSON_EXTRACT(js, '$.k[1]'), JSON_TYPE(js), dt + INTERVAL 1 DAY, TIMEDIFF(tm, tm0), "
      "en + 0, st + 0, COALESCE(vc, 'null!'), yr + 0 FROM types_all ORDER BY id", name="expressions on columns"),
    Q("SELECT COUNT(*), SUM(i), AVG(i), MIN(dtm), MAX(dtm), SUM(dec1), AVG(d), STD(ti), "
      "GROUP_CONCAT(vc ORDER BY id SEPARATOR '|'), BIT_OR(b13), MAX(bl), MIN(uu) FROM types_all",
      name="aggregates"),
    Q("SELECT * FROM types_all WHERE ti = %s AND vc = %s AND dtm = %s AND bin16 = %s",
      (-5, "emoji 😀 🎉 👩‍👩‍👧 and 中文 and عربى", dt.datetime(2024, 2, 29, 12, 34, 56, 789012),
       bytes.fromhex("00FF80FE7F0110C3A9E29C93F09F9880")), name="select with typed params",),
    Q("INSERT INTO types_all (ti, biu, dec1, f, d, dt, tm, dtm, yr, vc, bin16, bl, js, en, st) "
      "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
      (7, 18446744073709551615, Decimal("-0.000001"), 1.5, 2.0 ** -1074, dt.date(2000, 2, 29),
       dt.timedelta(hours=-1, microseconds=1), dt.datetime(1999, 12, 31, 23, 59, 59, 999999), 1999,
       "päräm 😀", bytes(range(240, 256)), bytes([0x80, 0, 0xFF, 0xC3, 0x28]) * 100, '{"p": 1}', "b", "y"),
      name="insert with typed params"),
    Q("SELECT * FROM types_all WHERE id = LAST_INSERT_ID()"),
    Q("SELECT id, ti, biu, dec1, f, d, dt, tm, dtm, vc, bin16, bl, js, en, st, yr FROM types_all "
      "WHERE id = LAST_INSERT_ID()", name="select inserted typed params"),
    Q("UPDATE types_all SET vc = CONCAT(vc, '!') WHERE id IN (1, 4)", name="update 2 rows (info text)"),
    Q("UPDATE types_all SET ti = ti WHERE id = 1", name="update matching 1 row changing 0"),
    Q("DELETE FROM types_all WHERE id = 3"),
    Q("SELECT id, vc FROM types_all ORDER BY id DESC"),
    Q("SELECT id, yr, vc FROM types_all ORDER BY id", name="YEAR then string (connector binary YEAR bug, last)",
      only=["connector_prep"], err=-1),
]

# ------------------------------------------------------------------ literals and type inference
LITERALS = [
    Q("SELECT 1, -1, 0, 127, 128, 2147483648, 9223372036854775807, 18446744073709551615, -9223372036854775808",
      name="integer literals"),
    Q("SELECT 1.5, -0.000001, 12345678901234567890.123456789, 1e3, 1.0E-10, 0.1 + 0.2, PI(), 1/3",
      name="decimal/float literals"),
    Q("SELECT 'abc', '', 'it''s', \"dq\", 'ü😀', X'DEADBEEF', x'', b'1010', 0x41, _binary'bin', "
      "_latin1'lat', N'national', 'a' 'b' 'c'", name="string literals"),
    Q("SELECT NULL, TRUE, FALSE, NULL IS NULL, 1 = NULL", name="null and boolean"),
    Q("SELECT DATE '2024-01-01', TIME '12:00:00.123', TIMESTAMP '2024-01-01 00:00:00.5', "
      "DATE('2024-12-31 10:00'), MAKETIME(-838, 59, 59), MAKEDATE(2024, 60), FROM_UNIXTIME(0, '%Y'), "
      "SEC_TO_TIME(3601.5), '2024-01-01' + INTERVAL 1 MONTH", name="temporal literals"),
    Q("SELECT CAST(1 AS UNSIGNED), CAST(-1 AS UNSIGNED), CAST('2024-01-01' AS DATETIME(6)), "
      "CAST(1.23 AS DECIMAL(10,4)), CAST(0x41 AS CHAR), CAST('x' AS BINARY), CONVERT('x' USING latin1), "
      "CAST(1 AS DOUBLE), CAST(12 AS CHAR(1)), CAST(-1.5 AS SIGNED), CAST('1:2:3' AS TIME)", name="casts", warn=True),
    Q("SELECT 'x' AS `ünïcödé 中文 alias`, 1 AS ``, 2 AS `a``b`, 3 AS \"dq alias\"",
      name="column aliases"),
    Q("SELECT JSON_OBJECT('a', 1, 'b', 'ü'), JSON_ARRAY(1, 2.5, NULL, 'x'), JSON_VALID('{}'), "
      "JSON_QUERY('{\"a\": [1]}', '$.a'), JSON_VALUE('{\"a\": 5}', '$.a')", name="json functions"),
    Q("SELECT ST_GeomFromText('POINT(1 1)'), ST_AsWKB(ST_GeomFromText('POINT(1 1)')), "
      "ST_Distance(POINT(0, 0), POINT(3, 4)), ST_SRID(POINT(1, 2))", name="geometry functions"),
    Q("SELECT INET6_ATON('::1'), INET6_NTOA(INET6_ATON('10.0.0.1')), CAST('::1' AS INET6), "
      "UUID_SHORT() > 0, LENGTH(UUID()), SYS_GUID() IS NOT NULL", name="inet6/uuid functions"),
    Q("SELECT REPEAT('x', 300), REPEAT(X'AB', 70000), REPEAT('é', 100000)", name="long values"),
    Q("SELECT seq, seq * 2, CONCAT('row', seq) FROM seq_1_to_5000", name="5000 rows (seq id wrap)"),
    Q("SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT NULL", name="union"),
    Q("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 300) SELECT n, n * n FROM c",
      name="recursive CTE 300 rows"),
    Q("SELECT ROW_NUMBER() OVER (ORDER BY seq DESC), seq FROM seq_1_to_5", name="window function"),
    Q("VALUES (1, 'a'), (2, 'b')", name="VALUES statement"),
    Q("SELECT @@version_comment, @@max_allowed_packet > 0, @@sql_mode, @@character_set_client, "
      "@@collation_connection, @@autocommit, @@tx_isolation", name="session variables"),
]

# ------------------------------------------------------------------ empty results
EMPTY = [
    Q("CREATE TABLE e (id INT PRIMARY KEY, v VARCHAR(10), b BLOB)"),
    Q("SELECT * FROM e", name="empty table"),
    Q("SELECT * FROM e WHERE 1 = 0"),
    Q("SELECT 1 FROM DUAL WHERE FALSE", name="no rows from dual"),
    Q("SELECT id, COUNT(*) FROM e GROUP BY id", name="empty group by"),
    Q("SELECT COUNT(*), MAX(id), SUM(id) FROM e", name="aggregate over empty"),
    Q("UPDATE e SET v = 'x' WHERE id = 1", name="update 0 rows"),
    Q("DELETE FROM e", name="delete 0 rows"),
    Q("SELECT '' AS empty_string, X'' AS empty_binary, NULL AS n"),
    Q("DO 1", name="DO statement"),
    Q("SET @x = 1", name="SET returns OK"),
]

# ------------------------------------------------------------------ DML, ids, info text
DML = [
    Q("CREATE TABLE d (id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY, k VARCHAR(20) UNIQUE, n INT NOT NULL DEFAULT 0)"),
    Q("INSERT INTO d (k) VALUES ('a')", name="insert -> lastrowid 1"),
    Q("INSERT INTO d (k, n) VALUES ('b', 1), ('c', 2), ('d', 3)", name="multi-row insert (info text)"),
    Q("INSERT INTO d (id, k) VALUES (9223372036854775810, 'big')", name="explicit huge id"),
    Q("INSERT INTO d (k) VALUES ('after big')", name="lastrowid above 2^63"),
    Q("SELECT LAST_INSERT_ID(), ROW_COUNT()"),
    Q("INSERT INTO d (k, n) VALUES ('a', 10) ON DUPLICATE KEY UPDATE n = n + 1", name="upsert (affected 2)"),
    Q("INSERT INTO d (k, n) VALUES ('a', 10) ON DUPLICATE KEY UPDATE n = n", name="upsert no change (affected 0)"),
    Q("REPLACE INTO d (id, k, n) VALUES (1, 'a', 100)", name="replace (affected 2)"),
    Q("INSERT IGNORE INTO d (k) VALUES ('b')", name="insert ignore dup (warning)", warn=True),
    Q("INSERT INTO d (k, n) VALUES ('r1', 5) RETURNING id, k, n", name="insert returning"),
    Q("INSERT INTO d (k, n) VALUES ('r2', 6), ('r3', 7) RETURNING id, k, n * 2 AS dbl",
      name="multi insert returning"),
    Q("DELETE FROM d WHERE k IN ('r2', 'r3') RETURNING id, k", name="delete returning"),
    Q("UPDATE d SET n = n + 1 WHERE k IN ('b', 'c', 'zz')", name="update rows matched/changed"),
    Q("UPDATE d SET n = n WHERE k = 'b'", name="update matched 1 changed 0"),
    Q("SELECT SQL_CALC_FOUND_ROWS * FROM d ORDER BY id LIMIT 2"),
    Q("SELECT FOUND_ROWS()"),
    Q("INSERT INTO d (k, n) SELECT CONCAT('s', seq), seq FROM seq_1_to_100", name="insert select 100"),
    Q("DELETE FROM d WHERE n > 50 ORDER BY id LIMIT 10", name="delete limit"),
    Q("SELECT COUNT(*), SUM(n), MAX(id) FROM d"),
    Q("TRUNCATE TABLE d"),
    Q("INSERT INTO d (k) VALUES ('after truncate')"),
    Q("SELECT * FROM d"),
]

# ------------------------------------------------------------------ warnings
WARNINGS = [
    Q("CREATE TABLE w (id INT PRIMARY KEY, s VARCHAR(5), n TINYINT, d DATE)"),
    Q("SET SESSION sql_mode = ''", name="non-strict mode"),
    Q("INSERT INTO w VALUES (1, 'too long string', 1000, '2024-13-45')", name="truncation warnings", warn=True),
    Q("SELECT * FROM w"),
    Q("SHOW WARNINGS", name="show warnings after select (none)"),
    Q("INSERT INTO w VALUES (2, 'abcdefgh', -500, 'bad'), (3, 'ok', 1, NULL)", name="multi-row warnings", warn=True),
    Q("SHOW WARNINGS LIMIT 1"),
    Q("SHOW COUNT(*) WARNINGS"),
    Q("SET SESSION sql_mode = DEFAULT"),
    Q("SELECT 1/0", name="division by zero warning", warn=True),
    Q("SELECT 1 % 0, MOD(5, 0)", name="modulo by zero", warn=True),
    Q("SELECT CAST('abc' AS INT), CAST('12abc' AS DOUBLE)", name="truncated incorrect value", warn=True),
    Q("SELECT DATE('2024-02-30')", name="invalid date warning", warn=True),
    Q("DROP TABLE IF EXISTS no_such_table_here", name="note 1051", warn=True),
    Q("SET @@max_error_count = 3"),
    Q("SELECT CAST(CONCAT(seq, 'x') AS INT) FROM seq_1_to_10", name="10 warnings, max_error_count 3",
      warn=True),
    Q("SET @@max_error_count = DEFAULT"),
    Q("SELECT 'no warning here'"),
    Q("SHOW WARNINGS"),
    Q("SHOW ERRORS"),
]

# ------------------------------------------------------------------ errors
ERRORS = [
    Q("CREATE TABLE er (id INT PRIMARY KEY, u VARCHAR(10) UNIQUE, nn INT NOT NULL, s VARCHAR(3))"),
    Q("INSERT INTO er VALUES (1, 'one', 1, 'a')"),
    Q("SELEC 1", name="syntax error 1064", err=1064),
    Q("SELECT * FROM er WHERE", name="syntax error at end 1064", err=1064),
    Q("INSERT INTO er VALUES (1, 'dup', 1, 'a')", name="duplicate key 1062", err=1062),
    Q("INSERT INTO er VALUES (2, 'one', 1, 'a')", name="duplicate unique 1062", err=1062),
    Q("SELECT * FROM no_such_table", name="unknown table 1146", err=1146),
    Q("SELECT * FROM `表ü`", name="unknown unicode table 1146", err=1146),
    Q("SELECT * FROM `😀`", name="4-byte identifier 1300", err=1300),
    Q("SELECT 1 AS `😀`", name="4-byte alias 1300", err=1300),
    Q("SELECT no_such_col FROM er", name="unknown column 1054", err=1054),
    Q("INSERT INTO er (id, nn) VALUES (3, NULL)", name="null into not null 1048", err=1048),
    Q("INSERT INTO er VALUES (4, 'x', 1, 'toolong')", name="data too long strict 1406", err=1406),
    Q("SELECT no_such_function(1)", name="unknown function 1305", err=1305),
    Q("SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'custom ünïcode 😀 message', MYSQL_ERRNO = 1644",
      name="SIGNAL custom sqlstate", err=1644),
    Q("SIGNAL SQLSTATE '02000'", name="SIGNAL not found", err=1643),
    Q("SELECT 18446744073709551615 + 1", name="out of range 1690", err=1690),
    Q("SELECT * FROM er, er", name="not unique table 1066", err=1066),
    Q("DROP TABLE no_such_table", name="drop unknown 1051", err=1051),
    Q("SELECT 1 FROM er HAVING no_col > 0", name="unknown column in having", err=1054),
    Q("CREATE TABLE e1 (id INT PRIMARY KEY)"),
    Q("CREATE TABLE e2 (g INT, v INT)"),
    Q("INSERT INTO e1 VALUES (1), (2), (3), (4)"),
    Q("INSERT INTO e2 VALUES (1, 10), (2, 20), (3, 30), (3, 31)"),
    Q("SELECT id, (SELECT v FROM e2 WHERE e2.g = e1.id) FROM e1 ORDER BY id",
      name="error 1242 after rows were sent", err=1242, not_on=CONNECTOR_ERR_AFTER_ROWS_BUG),
    Q("SELECT 'still usable after error'"),
    Q("SELECT " + ", ".join(f"{i}" for i in range(1, 5000)), name="4999 columns"),
    Q("SELECT " + "x" * 70000, name="very long unknown column", err=1054),
    Q("SELECT '" + "q" * 200000 + "' AS big_literal", name="200 kB statement"),
]

# ------------------------------------------------------------------ transactions / status flags
TRANSACTIONS = [
    Q("CREATE TABLE tx (id INT PRIMARY KEY, v INT) ENGINE=InnoDB"),
    Q("SET autocommit = 1"),
    Q("SELECT @@autocommit", name="autocommit on"),
    Q("BEGIN", name="BEGIN sets IN_TRANS"),
    Q("INSERT INTO tx VALUES (1, 1)"),
    Q("SELECT * FROM tx"),
    Q("COMMIT", name="COMMIT clears IN_TRANS"),
    Q("SET autocommit = 0", name="autocommit off"),
    Q("SELECT 1", name="SELECT with autocommit off -> IN_TRANS"),
    Q("UPDATE tx SET v = 2 WHERE id = 1"),
    Q("SAVEPOINT sp1"),
    Q("UPDATE tx SET v = 3 WHERE id = 1"),
    Q("ROLLBACK TO SAVEPOINT sp1"),
    Q("SELECT v FROM tx WHERE id = 1"),
    Q("ROLLBACK"),
    Q("SELECT v FROM tx WHERE id = 1", name="after rollback"),
    Q("COMMIT"),
    Q("SET autocommit = 1"),
    Q("START TRANSACTION READ ONLY", name="read-only transaction flag"),
    Q("SELECT * FROM tx"),
    Q("INSERT INTO tx VALUES (9, 9)", name="write in read-only trx 1792", err=1792),
    Q("COMMIT"),
    Q("START TRANSACTION WITH CONSISTENT SNAPSHOT"),
    Q("SELECT COUNT(*) FROM tx"),
    Q("COMMIT AND CHAIN", name="commit and chain"),
    Q("ROLLBACK AND NO CHAIN"),
    Q("SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
    Q("SELECT @@tx_isolation"),
    Q("BEGIN"),
    Q("SELECT * FROM tx FOR UPDATE", name="locking read (no rules)"),
    Q("SELECT * FROM tx LOCK IN SHARE MODE"),
    Q("SELECT * FROM tx WHERE id = 1 FOR UPDATE NOWAIT"),
    Q("SELECT * FROM tx FOR UPDATE SKIP LOCKED"),
    Q("CREATE TABLE tx2 (id INT)", name="DDL implicitly commits"),
    Q("SELECT 1"),
    Q("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ"),
    Q("XA START 'xa1'"),
    Q("INSERT INTO tx VALUES (5, 5)"),
    Q("XA END 'xa1'"),
    Q("XA PREPARE 'xa1'"),
    Q("XA COMMIT 'xa1'"),
    Q("SELECT * FROM tx ORDER BY id"),
    Q("LOCK TABLES tx WRITE"),
    Q("UNLOCK TABLES"),
]

# ------------------------------------------------------------------ stored procedures
PROC_DDL = """CREATE PROCEDURE two_sets(IN a INT, OUT b INT, INOUT c VARCHAR(20))
BEGIN
  SELECT a AS x, 'first' AS label;
  SELECT a * 2 AS y, 'two' AS z, CAST(a AS DECIMAL(10,2)) AS dec_a UNION ALL SELECT a * 3, 'three', 1.5;
  SET b = a * 3;
  SET c = CONCAT(c, '+', a);
END"""

PROCS = [
    Q(PROC_DDL, name="create procedure two_sets"),
    Q("CREATE PROCEDURE no_result() BEGIN DECLARE v INT DEFAULT 0; SET v = 1; END"),
    Q("CREATE PROCEDURE fails_after_rows() BEGIN SELECT 1 AS ok; SELECT * FROM missing_tbl; END"),
    Q("CREATE PROCEDURE warns() BEGIN SELECT 1/0 AS w; END"),
    Q("CREATE PROCEDURE sig() BEGIN SIGNAL SQLSTATE '45001' SET MESSAGE_TEXT = 'from proc', MYSQL_ERRNO = 3000; END"),
    Q("CREATE FUNCTION add1(x INT) RETURNS INT DETERMINISTIC RETURN x + 1"),
    Q("SET @b = NULL, @c = 'in'"),
    Q("CALL two_sets(5, @b, @c)", name="CALL with two result sets", not_on=CONNECTOR_CALL_BUG),
    Q("SELECT @b, @c", name="OUT params via user vars"),
    Q("CALL no_result()", name="CALL without result set", not_on=CONNECTOR_CALL_BUG),
    Q("CALL fails_after_rows()", name="CALL with error after a result set", err=1146,
      err_by={"sqla": None}, not_on=CONNECTOR_CALL_BUG),
    Q("CALL warns()", name="CALL with warning", warn=True, not_on=CONNECTOR_CALL_BUG),
    Q("CALL sig()", name="CALL raising SIGNAL", err=3000, not_on=CONNECTOR_CALL_BUG),
    Q("SELECT add1(41), add1(NULL)"),
    Q("CALL no_such_proc()", name="unknown procedure 1305", err=1305),
    Q("CALL two_sets(%s, %s, %s)", (7, 0, "x"), name="CALL with OUT bound to ? (prepared OUT params)",
      err=1414, not_on=CONNECTOR_CALL_BUG),
    Q("SHOW CREATE PROCEDURE two_sets"),
    Q("SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE() "
      "ORDER BY ROUTINE_NAME"),
    Q("CALL two_sets(5, @b, @c)", name="CALL two result sets (connector prepared bug, last)",
      only=["connector_prep"], err=-1),
]

# ------------------------------------------------------------------ SQL-level prepared statements
SQL_PREPARED = [
    Q("CREATE TABLE sp (id INT PRIMARY KEY, v VARCHAR(20))"),
    Q("PREPARE s1 FROM 'INSERT INTO sp VALUES (?, ?)'", err_by={"connector_prep": PREP_UNSUPPORTED}),
    Q("SET @i = 1, @v = 'one'"),
    Q("EXECUTE s1 USING @i, @v", err_by={"connector_prep": PREP_UNSUPPORTED}),
    Q("EXECUTE IMMEDIATE 'SELECT ? + 1, ?' USING 41, 'imm'", err_by={"connector_prep": PREP_UNSUPPORTED}),
    Q("PREPARE s2 FROM 'SELECT * FROM sp WHERE id = ?'", err_by={"connector_prep": PREP_UNSUPPORTED}),
    Q("EXECUTE s2 USING 1", err_by={"connector_prep": PREP_UNSUPPORTED}),
    Q("DEALLOCATE PREPARE s1", err_by={"connector_prep": PREP_UNSUPPORTED}),
    Q("EXECUTE s1 USING @i, @v", name="execute deallocated 1243",
      err=1243, err_by={"connector_prep": PREP_UNSUPPORTED}),
]

# ------------------------------------------------------------------ session state, metadata statements
SESSION = [
    Q("SET @a = 5, @b = 'ü😀', @c = X'FF00', @d = 1.5, @e = NULL"),
    Q("SELECT @a, @b, @c, @d, @e, @undefined", name="user variables"),
    Q("SET SESSION sql_mode = 'ANSI_QUOTES'", name="ANSI_QUOTES status flag"),
    Q("SELECT \"id\" FROM (SELECT 1 AS id) AS t", name="ANSI_QUOTES in effect"),
    Q("SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'", name="NO_BACKSLASH_ESCAPES flag"),
    Q("SELECT 'a\\b', LENGTH('a\\b')", name="backslash is literal"),
    Q("SET SESSION sql_mode = DEFAULT"),
    Q("SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci"),
    Q("SELECT @@collation_connection, 'ß' = 'ss'"),
    Q("SET time_zone = '+05:30'"),
    Q("CREATE TABLE tz (ts TIMESTAMP NULL)"),
    Q("INSERT INTO tz VALUES ('2024-01-01 00:00:00')"),
    Q("SET time_zone = '-08:00'"),
    Q("SELECT ts, @@time_zone FROM tz"),
    Q("SET time_zone = DEFAULT"),
    Q("CREATE TEMPORARY TABLE tmp1 (a INT)"),
    Q("INSERT INTO tmp1 VALUES (1), (2)"),
    Q("SELECT * FROM tmp1"),
    Q("CREATE DATABASE IF NOT EXISTS thaw_fidelity_other", warn=False),
    Q("USE thaw_fidelity_other", name="USE other db (COM_QUERY)"),
    Q("SELECT DATABASE()"),
    Q("DROP DATABASE thaw_fidelity_other"),
    Q("SELECT DATABASE()", name="database() after drop -> NULL"),
    Q("USE no_such_db_xyz", name="USE unknown db 1049", err=1049),
    Q("SHOW DATABASES LIKE 'thaw_fidelity_%'", name="show databases like"),
]

METADATA = [
    Q("CREATE TABLE m (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(40) NOT NULL DEFAULT 'x' COMMENT 'ü', "
      "amount DECIMAL(12,2), KEY idx_name (name)) COMMENT='meta table'"),
    Q("SHOW CREATE TABLE m"),
    Q("SHOW COLUMNS FROM m"),
    Q("SHOW FULL COLUMNS FROM m"),
    Q("DESCRIBE m"),
    Q("SHOW INDEX FROM m"),
    Q("EXPLAIN SELECT * FROM m WHERE name = 'a'"),
    Q("EXPLAIN FORMAT=JSON SELECT * FROM m WHERE id = 1"),
    Q("ANALYZE TABLE m"),
    Q("CHECK TABLE m"),
    Q("SHOW TABLES"),
    Q("SHOW VARIABLES LIKE 'max_allowed_packet'"),
    Q("SHOW SESSION VARIABLES LIKE 'character_set_%'"),
    Q("SHOW COLLATION LIKE 'utf8mb4_bin'"),
    Q("SHOW ENGINES"),
    Q("SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, CHARACTER_SET_NAME "
      "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() ORDER BY ORDINAL_POSITION"),
    Q("HELP 'nothing_matches_this_xyz'", name="HELP"),
    Q("ALTER TABLE m ADD COLUMN extra JSON"),
    Q("RENAME TABLE m TO m2"),
    Q("DROP TABLE m2"),
]

GROUPS: dict[str, list[Step]] = {
    "types": TYPES,
    "literals": LITERALS,
    "empty": EMPTY,
    "dml": DML,
    "warnings": WARNINGS,
    "errors": ERRORS,
    "transactions": TRANSACTIONS,
    "procs": PROCS,
    "sql_prepared": SQL_PREPARED,
    "session": SESSION,
    "metadata": METADATA,
}

# ------------------------------------------------------------------ multi-statement queries
MULTI = [
    Q("CREATE TABLE ms (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20))"),
    Q("SELECT 1; SELECT 'a', 'b'; SELECT NULL", name="three selects"),
    Q("INSERT INTO ms (v) VALUES ('x'); INSERT INTO ms (v) VALUES ('y'), ('z'); SELECT * FROM ms",
      name="inserts then select (rowcount/lastrowid per result)"),
    Q("UPDATE ms SET v = 'u' WHERE id = 1; DELETE FROM ms WHERE id = 3; SELECT COUNT(*) FROM ms"),
    Q("SELECT 1; SELEC 2; SELECT 3", name="error in second statement", err=1064),
    Q("SELECT 'after multi error'"),
    Q("SELECT 1/0; SELECT 'w'", name="warning in first statement", warn=True),
    Q("SET @m = 1; SELECT @m; SET @m = @m + 1; SELECT @m", name="sets and selects"),
    Q("BEGIN; INSERT INTO ms (v) VALUES ('t'); SELECT * FROM ms WHERE v = 't'; COMMIT",
      name="transaction in one query"),
    Q("SELECT 1;", name="trailing semicolon"),
    Q("SELECT seq FROM seq_1_to_300; SELECT seq FROM seq_1_to_2",
      name="300 rows then 2 rows"),
    Q("SELECT * FROM ms WHERE 1 = 0; SELECT 'x'", name="empty result then row"),
    Q("CREATE PROCEDURE mp() BEGIN SELECT 'p1'; SELECT 'p2'; END"),
    Q("CALL mp(); SELECT 'after call'", name="CALL inside multi-statement"),
    Q("INSERT INTO ms (id, v) VALUES (1, 'dup'); SELECT 'not reached'", name="dup key first", err=1062),
    Q("SELECT 'a' /* comment; with semicolon */; SELECT 'b' -- trailing comment\n", name="comments"),
]
