"""`thaw check` and `thaw explain`, run as the binary users run.

check: offline validation of rule files (errors name file:line:column) and,
with --dsn, validation against a live schema in a fresh database: tables,
columns, the key's unique index and whether the guarded UPDATE compiles.
explain: the plan and diff printed for the legacy app's statements.
"""
from __future__ import annotations

import json
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


def rule_at(path: str, table: str) -> str:
    """`file:line:column` of the `- table: <table>` entry, as check reports it."""
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip() == f"- table: {table}":
                return f"{path}:{n}:{line.index('table:') + 1}"
    raise AssertionError(f"no rule for {table} in {path}")


def warning_lines(r: subprocess.CompletedProcess) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.startswith("warning: ")]


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
    # conversations is the second rule of rules/billing.yaml
    at = rule_at(BILLING_RULES, "conversations")
    assert errs[0] == f"error: {at}: table {db_name}.conversations does not exist", r.stderr


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
    at = rule_at(BILLING_RULES, "users")
    assert f"error: {at}: table users: column frozen_balance does not exist" in errs, r.stderr
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
    assert errs[0].startswith(f"error: {rule_at(BILLING_RULES, 'users')}: table users: key id"), r.stderr
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


# ------------------------------------------- check --dsn: what else reaches the table

ACCOUNTS_PK = (
    "CREATE TABLE accounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL DEFAULT 0,"
    " held BIGINT NOT NULL DEFAULT 0, updated_at DATETIME NULL)"
)
LEDGER = "CREATE TABLE ledger (id BIGINT PRIMARY KEY AUTO_INCREMENT, account_id BIGINT NOT NULL, amount BIGINT NOT NULL)"
LEDGER_TRIGGER = (
    "CREATE TRIGGER ledger_ai AFTER INSERT ON ledger FOR EACH ROW"
    " UPDATE accounts SET balance = balance + NEW.amount WHERE id = NEW.account_id"
)
VIEW = "CREATE VIEW v_accounts AS SELECT id, balance - held AS available FROM accounts"
VIEW_OF_VIEW = "CREATE VIEW v_rich AS SELECT id FROM v_accounts WHERE available > 1000"
PROCEDURE = "CREATE PROCEDURE pay(IN a BIGINT, IN amt BIGINT) UPDATE accounts SET balance = balance - amt WHERE id = a"
FUNCTION = (
    "CREATE FUNCTION available(a BIGINT) RETURNS BIGINT READS SQL DATA"
    " RETURN (SELECT balance - held FROM accounts WHERE id = a)"
)


def accounts_rules(tmp_path, trigger_tables: str = "[]", views: str = "[]") -> str:
    return write_rules(tmp_path, "accounts.yaml", f"""
        tables:
          - table: accounts
            key: id
            invariants:
              - balance - held >= 0
            balance_columns: [balance, held]
            last_writer_wins: [updated_at]
            trigger_tables: {trigger_tables}
            views: {views}
    """)


def server_settings() -> tuple[str, str, str, str]:
    ((rot, lctn, iso, mode),) = admin_exec(
        "SELECT @@GLOBAL.innodb_rollback_on_timeout, @@GLOBAL.lower_case_table_names,"
        " @@GLOBAL.tx_isolation, @@GLOBAL.sql_mode"
    )
    return str(rot), str(lctn), iso, mode


def test_check_dsn_reports_unlisted_trigger_view_routine_unclassified_and_key(tmp_path, db_name):
    create(
        db_name,
        # The key has only a non-unique index; `note` is in no column list.
        "CREATE TABLE accounts (id BIGINT NOT NULL, balance BIGINT NOT NULL DEFAULT 0,"
        " held BIGINT NOT NULL DEFAULT 0, note VARCHAR(64) NULL, updated_at DATETIME NULL, INDEX ix_id (id))",
        LEDGER, LEDGER_TRIGGER, VIEW, VIEW_OF_VIEW, PROCEDURE, FUNCTION,
    )
    rules = accounts_rules(tmp_path)
    at = rule_at(rules, "accounts")
    r = check(rules, db_name)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "ok:" not in r.stdout

    errs = error_lines(r)
    assert len(errs) == 4, r.stderr
    assert errs[0].startswith(
        f"error: {at}: table accounts: key id is not backed by a PRIMARY or UNIQUE index on that column alone: "
        "thaw assumes `id = <literal>` names at most one row"
    ), r.stderr
    assert errs[1].startswith(
        f"error: {at}: table accounts: trigger ledger_ai (AFTER INSERT on ledger) mentions accounts, but ledger is not in"
        " trigger_tables: a write to ledger after an unlocked read of accounts would change accounts through the trigger"
        " without being validated first; add ledger to trigger_tables"
    ), r.stderr
    assert errs[2].startswith(
        f"error: {at}: table accounts: view v_accounts selects from accounts, but is not in views: "
    ), r.stderr
    assert errs[2].endswith("add v_accounts to views"), r.stderr
    assert errs[3].startswith(
        f"error: {at}: table accounts: view v_rich selects from accounts (through view v_accounts), but is not in views: "
    ), r.stderr

    warns = warning_lines(r)
    assert (
        f"warning: {at}: table accounts: column(s) note: in none of balance_columns, cas_columns, last_writer_wins,"
        " so thaw treats them as compare-and-set (CAS): a write of one after an unlocked read succeeds only if no other"
        " session changed it since the read (else the transaction is rolled back with 1213, as after a deadlock); safe,"
        " but concurrent writers of the row serialise on it; list each column where it belongs"
    ) in warns, r.stderr
    routine = [w for w in warns if "is validated at runtime" in w]
    assert len(routine) == 2, r.stderr
    assert routine[0].startswith(f"warning: {at}: table accounts: function available mentions accounts: "), r.stderr
    assert routine[1].startswith(f"warning: {at}: table accounts: procedure pay mentions accounts: "), r.stderr
    assert "is validated at runtime (thaw re-locks the rows it read and compares them first), not by this check" in routine[1], r.stderr

    # Server settings, each with what it means for thaw.
    rot, lctn, iso, _mode = server_settings()
    rot_line = [w for w in warns if w.startswith("warning: server: innodb_rollback_on_timeout=")]
    assert len(rot_line) == 1, r.stderr
    if rot in ("0", "OFF"):
        assert "rolls back only the statement; thaw re-sends it" in rot_line[0], r.stderr
    else:
        assert "rolls back the whole transaction; thaw replays it" in rot_line[0], r.stderr
    assert any(w.startswith(f"warning: server: lower_case_table_names={lctn}: ") for w in warns), r.stderr
    level = iso.replace("-", " ")
    assert any(w.startswith(f"warning: server: transaction isolation {level}: ") for w in warns), r.stderr


def test_check_dsn_listed_trigger_tables_and_views_ok(tmp_path, db_name):
    create(db_name, ACCOUNTS_PK, LEDGER, LEDGER_TRIGGER, VIEW, VIEW_OF_VIEW, PROCEDURE)
    rules = accounts_rules(tmp_path, trigger_tables="[ledger]", views="[v_accounts, v_rich]")
    r = check(rules, db_name)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"ok: 1 table rule(s) in {rules}, checked against the live schema"
    assert error_lines(r) == [], r.stderr
    warns = warning_lines(r)
    # Every column is classified; the procedure is still worth knowing about.
    assert not any("in none of balance_columns" in w for w in warns), r.stderr
    assert not any("stale" in w for w in warns), r.stderr
    assert [w for w in warns if "procedure pay mentions accounts" in w], r.stderr


def test_check_dsn_other_names_are_not_the_governed_table(tmp_path, db_name):
    # Another schema's accounts, a longer name and a string that only
    # resembles it: none of these reaches this schema's accounts.
    create(
        db_name, ACCOUNTS_PK, LEDGER,
        "CREATE TABLE accounts_archive (id BIGINT PRIMARY KEY, balance BIGINT)",
        "CREATE TRIGGER ledger_ai AFTER INSERT ON ledger FOR EACH ROW"
        " UPDATE archive_db.accounts SET balance = balance + NEW.amount WHERE id = NEW.account_id",
        "CREATE TRIGGER ledger_ad AFTER DELETE ON ledger FOR EACH ROW"
        " INSERT INTO accounts_archive (id, balance) VALUES (OLD.id, OLD.amount)",
        "CREATE VIEW v_archive AS SELECT id, 'accounts_' AS label FROM accounts_archive",
    )
    r = check(accounts_rules(tmp_path), db_name)
    assert r.returncode == 0, r.stderr
    assert error_lines(r) == [], r.stderr
    assert not any("mentions accounts" in w for w in warning_lines(r)), r.stderr


def test_check_dsn_stale_trigger_tables_and_views_warn(tmp_path, db_name):
    create(db_name, ACCOUNTS_PK, LEDGER, "CREATE VIEW v_ledger AS SELECT id, amount FROM ledger")
    rules = accounts_rules(tmp_path, trigger_tables="[ledger]", views="[v_ledger, v_gone]")
    at = rule_at(rules, "accounts")
    r = check(rules, db_name)
    assert r.returncode == 0, r.stderr
    assert error_lines(r) == [], r.stderr
    warns = warning_lines(r)
    assert any(
        w.startswith(f"warning: {at}: table accounts: trigger_tables lists ledger, but no trigger on ledger in {db_name}"
                     " mentions accounts: a stale entry?")
        for w in warns
    ), r.stderr
    assert f"warning: {at}: table accounts: views lists v_ledger, which does not select from accounts: a stale entry?" in warns, r.stderr
    assert f"warning: {at}: table accounts: views lists v_gone, which is not a view of {db_name}: a stale entry?" in warns, r.stderr


def test_check_dsn_warnings_only_exit_zero(tmp_path, db_name):
    # An unclassified column, UNSIGNED guarded columns and a BEFORE UPDATE
    # trigger that assigns a guarded column: warnings, not errors. A
    # generated column is never written, so it is not unclassified.
    create(
        db_name,
        "CREATE TABLE accounts (id BIGINT PRIMARY KEY, balance BIGINT UNSIGNED NOT NULL DEFAULT 0,"
        " held BIGINT UNSIGNED NOT NULL DEFAULT 0, note VARCHAR(64) NULL, updated_at DATETIME NULL,"
        " available BIGINT AS (CAST(balance AS SIGNED) - CAST(held AS SIGNED)) VIRTUAL)",
        "CREATE TRIGGER accounts_bu BEFORE UPDATE ON accounts FOR EACH ROW SET NEW.held = LEAST(NEW.held, NEW.balance)",
    )
    rules = accounts_rules(tmp_path)
    at = rule_at(rules, "accounts")
    r = check(rules, db_name)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"ok: 1 table rule(s) in {rules}, checked against the live schema"
    assert error_lines(r) == [], r.stderr
    warns = warning_lines(r)
    cas = [w for w in warns if "in none of balance_columns" in w]
    assert len(cas) == 1 and cas[0].startswith(f"warning: {at}: table accounts: column(s) note: in none of "), r.stderr
    assert any(
        w.startswith(f"warning: {at}: table accounts: trigger accounts_bu (BEFORE UPDATE on accounts) assigns NEW.held: ")
        for w in warns
    ), r.stderr
    *_, mode = server_settings()
    unsigned = [w for w in warns if "are UNSIGNED" in w]
    if "NO_UNSIGNED_SUBTRACTION" in mode.split(","):
        assert unsigned == [], r.stderr
        assert any(w.startswith("warning: server: sql_mode NO_UNSIGNED_SUBTRACTION: ") for w in warns), r.stderr
    else:
        assert unsigned == [
            f"warning: {at}: table accounts: column(s) balance, held are UNSIGNED and sql_mode lacks NO_UNSIGNED_SUBTRACTION:"
            " a guard or delta whose subtraction would go below zero fails with error 1690 (BIGINT UNSIGNED value is out of"
            " range) instead of matching no row, so the app gets 1690 rather than the rule's violation response; nothing is"
            " written either way"
        ], r.stderr


def test_check_dsn_table_name_differing_only_in_case(tmp_path, db_name):
    _rot, lctn, _iso, _mode = server_settings()
    if lctn != "0":
        pytest.skip(f"lower_case_table_names={lctn}: the server cannot hold accounts and Accounts side by side")
    create(db_name, ACCOUNTS_PK, ACCOUNTS_PK.replace("TABLE accounts", "TABLE Accounts"))
    rules = accounts_rules(tmp_path)
    r = check(rules, db_name)
    assert r.returncode == 0, r.stderr
    assert any(
        w.startswith(f"warning: {rule_at(rules, 'accounts')}: table accounts: the schema also has a table Accounts: ")
        and "it governs statements on Accounts too" in w
        for w in warning_lines(r)
    ), r.stderr


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
    assert "capture: users key id columns [balance, frozen_balance, username]" in lines, out


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


def test_explain_file_json_follows_the_transaction(tmp_path):
    # One transaction of the legacy freeze, rows given for its read: the
    # absolute write becomes relative because the read was captured.
    trace = tmp_path / "freeze.sql"
    trace.write_text(textwrap.dedent("""\
        BEGIN;
        SELECT users.* FROM users WHERE users.id = 8 FOR UPDATE;
        -- rows: [{"id": 8, "username": "bob", "balance": 5000, "frozen_balance": 616, "updated_at": null}]
        UPDATE users SET frozen_balance=1232, updated_at=now() WHERE users.id = 8;
        COMMIT;
    """))
    report = json.loads(explain("--file", str(trace), "--json").stdout)
    steps = report["statements"]
    assert report["format"] == "statements"
    assert [s["plan"]["kind"] for s in steps] == ["not_planned", "rewrite", "rewrite", "forward"]
    assert [s["plan"].get("action") for s in steps[1:3]] == ["unlock", "delta"]
    assert [s["session"]["decision"] for s in steps] == ["send"] * 4
    assert steps[1]["after"]["captures"][0]["values"] == {"balance": "5000", "frozen_balance": "616", "username": "bob"}
    assert steps[2]["after"]["captures"][0]["values"]["frozen_balance"] == "1232"
    assert steps[3]["after"] == {"transaction": "idle", "autocommit": False, "window": False, "captures": []}


def test_explain_file_reports_a_bad_rows_annotation():
    r = subprocess.run(
        [thaw_bin(), "explain", "--rules", BILLING_RULES, "--file", "-"], capture_output=True, text=True,
        timeout=RUN_TIMEOUT, input="SELECT 1;\n-- rows: {\"id\": 8}\n", cwd=str(REPO_ROOT),
    )
    assert r.returncode != 0
    assert "-: line 2: `-- rows:` expects a JSON array of objects" in r.stderr, r.stderr
