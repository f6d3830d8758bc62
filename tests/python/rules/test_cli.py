"""`thaw check` and `thaw explain`, run as the binary users run.

check: offline validation of rule files (errors name file:line:column) and,
with --dsn, validation against a live schema in a fresh database: tables,
columns, the key's unique index and whether the guarded UPDATE compiles.
explain: the plan and diff printed for the legacy app's statements.
"""
from __future__ import annotations

import socket
import subprocess
import textwrap
import time

import pytest

from conftest import DB_USER, DIRECT_HOST, DIRECT_PORT, admin_exec
from legacy.app import SCHEMA_DECIMAL, SCHEMA_INT
from thawproc import REPO_ROOT, free_port, thaw_bin

BILLING_RULES = str(REPO_ROOT / "rules" / "billing.yaml")
# Every run is quick; a run that takes this long is a hang.
RUN_TIMEOUT = 10

USERS_DDL, _FREEZE_LOGS_DDL, CONVERSATIONS_DDL = SCHEMA_INT


def thaw(*args: str, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [thaw_bin(), *args], capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL, cwd=str(REPO_ROOT),
    )


def dsn(db: str, port: int = DIRECT_PORT) -> str:
    return f"mysql://{DB_USER}@{DIRECT_HOST}:{port}/{db}"


def check(rules: str, db: str | None = None) -> subprocess.CompletedProcess:
    args = ["check", "--rules", str(rules)]
    if db is not None:
        args += ["--dsn", dsn(db)]
    return thaw(*args)


def error_lines(r: subprocess.CompletedProcess) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.startswith("error: ")]


def write_rules(tmp_path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(p)


def create(db: str, *ddl: str) -> None:
    admin_exec(f"USE `{db}`", *ddl)


# ---------------------------------------------------------------- check, offline


def test_check_shipped_rules_offline_ok():
    r = check(BILLING_RULES)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"ok: 2 table rule(s) in {BILLING_RULES}"
    assert "error" not in r.stderr


def test_check_unknown_field_names_file_line_column(tmp_path):
    path = write_rules(tmp_path, "typo.yaml", """
        tables:
          - table: users
            key: id
            invarint:
              - balance >= 0
    """)
    r = check(path)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stdout == ""
    errs = error_lines(r)
    assert len(errs) == 1, r.stderr
    assert errs[0].startswith(f"error: {path}:4:5: unknown field `invarint`"), r.stderr


@pytest.mark.parametrize(
    "invariant, offending",
    [
        ("balance - frozen_balance >= (SELECT 1)", "`(SELECT 1)`"),
        ("ABS(balance) >= 0", "`ABS(balance)`"),
        ("balance >= @floor", "@floor"),
    ],
    ids=["subquery", "function", "variable"],
)
def test_check_invalid_invariant_names_file_line_column(tmp_path, invariant, offending):
    # The bad invariant is the second one: the position must point at it.
    path = write_rules(tmp_path, "bad.yaml", f"""
        tables:
          - table: users
            key: id
            invariants:
              - frozen_balance >= 0
              - {invariant}
    """)
    r = check(path)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stdout == ""
    errs = error_lines(r)
    assert len(errs) == 1, r.stderr
    assert errs[0].startswith(f"error: {path}:6:9: "), r.stderr
    assert offending in errs[0], r.stderr
    assert "not allowed in an invariant" in errs[0], r.stderr


# ---------------------------------------------------------------- check --dsn


def test_check_dsn_billing_schema_ok(db_name):
    create(db_name, *SCHEMA_INT)
    r = check(BILLING_RULES, db_name)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"ok: 2 table rule(s) in {BILLING_RULES}, checked against the live schema"
    assert error_lines(r) == []


def test_check_dsn_decimal_billing_schema_ok(db_name):
    create(db_name, *SCHEMA_DECIMAL)
    r = check(BILLING_RULES, db_name)
    assert r.returncode == 0, r.stderr
    assert "checked against the live schema" in r.stdout


def test_check_dsn_missing_table(db_name):
    create(db_name, USERS_DDL)  # no conversations
    r = check(BILLING_RULES, db_name)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "ok:" not in r.stdout
    errs = error_lines(r)
    assert len(errs) == 1, r.stderr
    # conversations is the second rule, at line 26 of rules/billing.yaml
    assert errs[0] == f"error: {BILLING_RULES}:26:5: table {db_name}.conversations does not exist", r.stderr


def test_check_dsn_missing_column(db_name):
    create(
        db_name,
        "CREATE TABLE users (id BIGINT PRIMARY KEY, username VARCHAR(64),"
        " balance BIGINT NOT NULL DEFAULT 0, updated_at DATETIME NULL)",
        CONVERSATIONS_DDL,
    )
    r = check(BILLING_RULES, db_name)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "ok:" not in r.stdout
    errs = error_lines(r)
    assert f"error: {BILLING_RULES}:9:5: table users: column frozen_balance does not exist" in errs, r.stderr
    assert not any("balance does not exist" in e and "frozen_balance" not in e for e in errs), r.stderr
    assert not any("conversations" in e for e in errs), r.stderr


def test_check_dsn_key_without_unique_index(db_name):
    create(
        db_name,
        "CREATE TABLE users (id BIGINT NOT NULL, username VARCHAR(64),"
        " balance BIGINT NOT NULL DEFAULT 0, frozen_balance BIGINT NOT NULL DEFAULT 0,"
        " updated_at DATETIME NULL, INDEX ix_users_id (id))",
        CONVERSATIONS_DDL,
    )
    r = check(BILLING_RULES, db_name)
    assert r.returncode == 1, (r.stdout, r.stderr)
    errs = error_lines(r)
    assert len(errs) == 1, r.stderr
    assert errs[0].startswith(f"error: {BILLING_RULES}:9:5: table users: key id"), r.stderr
    assert "PRIMARY or UNIQUE index" in errs[0], r.stderr


def test_check_dsn_key_only_in_composite_unique_index(db_name):
    # UNIQUE (id, username) does not make id unique.
    create(
        db_name,
        "CREATE TABLE users (id BIGINT NOT NULL, username VARCHAR(64) NOT NULL,"
        " balance BIGINT NOT NULL DEFAULT 0, frozen_balance BIGINT NOT NULL DEFAULT 0,"
        " updated_at DATETIME NULL, UNIQUE KEY uq_id_name (id, username))",
        CONVERSATIONS_DDL,
    )
    r = check(BILLING_RULES, db_name)
    assert r.returncode == 1, (r.stdout, r.stderr)
    errs = error_lines(r)
    assert len(errs) == 1, r.stderr
    assert "key id is not backed by a PRIMARY or UNIQUE index on that column alone" in errs[0], r.stderr


def test_check_dsn_key_backed_by_unique_index_ok(db_name):
    create(
        db_name,
        "CREATE TABLE users (pk BIGINT PRIMARY KEY AUTO_INCREMENT, id BIGINT NOT NULL,"
        " username VARCHAR(64), balance BIGINT NOT NULL DEFAULT 0,"
        " frozen_balance BIGINT NOT NULL DEFAULT 0, updated_at DATETIME NULL, UNIQUE KEY uq_id (id))",
        CONVERSATIONS_DDL,
    )
    r = check(BILLING_RULES, db_name)
    assert r.returncode == 0, r.stderr


def test_check_dsn_guard_that_does_not_compile(tmp_path, db_name):
    # Every column exists and the key is the primary key, but `pt >= 0` on a
    # POINT column is rejected by MariaDB when the statement is prepared.
    create(db_name, "CREATE TABLE places (id BIGINT PRIMARY KEY, pt POINT NULL, n INT NOT NULL DEFAULT 0)")
    bad = write_rules(tmp_path, "places.yaml", """
        tables:
          - table: places
            key: id
            invariants:
              - n >= 0
              - pt >= 0
    """)
    assert check(bad).returncode == 0  # valid offline: only the live schema says no
    r = check(bad, db_name)
    assert r.returncode == 1, (r.stdout, r.stderr)
    errs = error_lines(r)
    assert len(errs) == 1, r.stderr
    assert errs[0].startswith(f"error: {bad}:2:5: table places: the guarded UPDATE does not compile:"), r.stderr
    assert "4078" in errs[0] and "Illegal parameter data types" in errs[0], r.stderr
    assert "statement: UPDATE places SET " in r.stderr

    # Control: the same table with invariants that compile passes.
    good = write_rules(tmp_path, "places_ok.yaml", """
        tables:
          - table: places
            key: id
            invariants:
              - n >= 0
              - pt IS NOT NULL
    """)
    r = check(good, db_name)
    assert r.returncode == 0, r.stderr


def test_check_dsn_refused_port_fails_fast():
    port = free_port(DIRECT_HOST)
    t = time.monotonic()
    r = thaw("check", "--rules", BILLING_RULES, "--dsn", dsn("mysql", port))
    assert time.monotonic() - t < 5
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "ok:" not in r.stdout
    assert r.stderr.startswith("error: database: "), r.stderr
    assert "refused" in r.stderr.lower(), r.stderr


def test_check_dsn_silent_port_does_not_hang():
    # A wrong port where something listens but never speaks MySQL (a stuck
    # service, a proxy with no backend): check must give up with an error.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as srv:
        srv.bind((DIRECT_HOST, 0))
        srv.listen(8)
        port = srv.getsockname()[1]
        try:
            r = thaw("check", "--rules", BILLING_RULES, "--dsn", dsn("mysql", port), timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"thaw check --dsn hung for {RUN_TIMEOUT} s on a port that accepts but never sends a handshake")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stderr.startswith("error: "), r.stderr


def test_check_dsn_without_database_name():
    r = thaw("check", "--rules", BILLING_RULES, "--dsn", f"mysql://{DB_USER}@{DIRECT_HOST}:{DIRECT_PORT}/")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stderr.startswith("error: --dsn: "), r.stderr


# ---------------------------------------------------------------- explain


def explain(*args: str) -> subprocess.CompletedProcess:
    r = thaw("explain", "--rules", BILLING_RULES, *args)
    assert r.returncode == 0, r.stderr
    return r


LEGACY_WRITE = "UPDATE users SET frozen_balance=1232, updated_at=now() WHERE users.id = 8"
LEGACY_READ = "SELECT users.* FROM users WHERE users.id = 8 FOR UPDATE"


def test_explain_legacy_absolute_write_becomes_delta_with_guard():
    out = explain("--captured", "users.8.frozen_balance=616", LEGACY_WRITE).stdout
    lines = out.splitlines()
    assert lines[0] == "rule users-balance (table users): delta", out
    assert f"-{LEGACY_WRITE}" in lines, out
    plus = [line for line in lines if line.startswith("+UPDATE")]
    assert plus == [
        "+UPDATE users SET frozen_balance=frozen_balance + 616, updated_at=now() WHERE (users.id = 8)"
        " AND (balance - (frozen_balance + 616) >= 0) AND ((frozen_balance + 616) >= 0)"
    ], out
    assert "on 0 rows matched of an existing row: rollback, error 1644 (45000) insufficient balance (rule users-balance, user 8)" in lines, out
    assert "existence check: SELECT 1 FROM users WHERE users.id = 8 LOCK IN SHARE MODE" in lines, out


def test_explain_legacy_write_without_capture_is_guard_only():
    out = explain(LEGACY_WRITE).stdout
    lines = out.splitlines()
    assert lines[0] == "rule users-balance (table users): guard", out
    plus = [line for line in lines if line.startswith("+UPDATE")]
    assert plus == [
        "+UPDATE users SET frozen_balance=1232, updated_at=now() WHERE (users.id = 8)"
        " AND (balance - (1232) >= 0) AND ((1232) >= 0)"
    ], out
    assert "frozen_balance + " not in out


def test_explain_locking_read_cuts_lock_clause_and_captures():
    out = explain(LEGACY_READ).stdout
    lines = out.splitlines()
    assert lines[0] == "rule users-balance (table users): unlock", out
    assert f"-{LEGACY_READ}" in lines, out
    assert "+SELECT users.* FROM users WHERE users.id = 8" in lines, out
    assert not any(line.startswith("+") and "FOR UPDATE" in line for line in lines), out
    assert "capture: users key id columns [balance, frozen_balance]" in lines, out


def test_explain_autocommit_read_unlocks_without_capture():
    out = explain("--autocommit", LEGACY_READ).stdout
    lines = out.splitlines()
    assert lines[0] == "rule users-balance (table users): unlock", out
    assert "+SELECT users.* FROM users WHERE users.id = 8" in lines, out
    assert not any(line.startswith("capture") for line in lines), out


def test_explain_select_1_forward_unchanged():
    out = explain("SELECT 1").stdout
    assert out == "forward unchanged: it names no governed table together with UPDATE or a lock clause\n", out
    assert "\n+" not in out and "\n-" not in out, out
