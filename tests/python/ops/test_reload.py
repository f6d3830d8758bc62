"""Hot reload of the rules and the config file: file change (1 s content
poll), SIGHUP, a Kubernetes ConfigMap ..data swap, and bad edits that must
be rejected while the rules in force stay. Rule files use the format of docs/rules.md.

Which rules are in force is observed, not assumed: a keyed
`SELECT ... FOR UPDATE` on `accounts` loses its lock clause (and counts in
thaw_statements_rewritten_total{rule="accounts",action="unlock"}) only while
a rule governs `accounts`."""
from __future__ import annotations

import re
import time
import signal

import pymysql
import pytest

from conftest import admin_exec, unique_name
from ops.helpers import ConfigMapDir, atomic_write, scrape, wait_for
from thawproc import REPO_ROOT

BILLING = (REPO_ROOT / "rules" / "billing.yaml").read_text()

ACCOUNTS = """\
tables:
  - table: accounts
    key: id
    invariants:
      - balance >= 0
    balance_columns: [balance]
"""

# line 4, column 5: a misspelled field (the real validator names file:line:column)
ACCOUNTS_TYPO = """\
tables:
  - table: accounts
    key: id
    invarint:
      - balance >= 0
"""

# line 5, column 9: an invariant that calls a function
ACCOUNTS_BAD_INVARIANT = """\
tables:
  - table: accounts
    key: id
    invariants:
      - ABS(balance) >= 0
"""

# not YAML at all: an unclosed flow sequence
ACCOUNTS_BROKEN_YAML = """\
tables:
  - table: accounts
    key: id
    balance_columns: [balance
"""


@pytest.fixture
def accounts_db():
    db = unique_name("thaw_ops_")
    admin_exec(f"CREATE DATABASE `{db}`",
               f"CREATE TABLE `{db}`.accounts (id INT PRIMARY KEY, balance INT NOT NULL) ENGINE=InnoDB",
               f"INSERT INTO `{db}`.accounts VALUES (1, 100)")
    yield db
    admin_exec(f"DROP DATABASE IF EXISTS `{db}`")


def reloads(t, outcome):
    return scrape(t.admin_port).get("thaw_rules_reloads_total", outcome=outcome)


def generation(t):
    return scrape(t.admin_port).get("thaw_rules_generation")


def accounts_unlocks(t):
    return scrape(t.admin_port).get("thaw_statements_rewritten_total", rule="accounts", action="unlock")


def lock_read_is_rewritten(t, db) -> bool:
    """Run a keyed FOR UPDATE on accounts through thaw (new connection, own
    transaction) and report whether thaw rewrote it."""
    before = accounts_unlocks(t)
    conn = pymysql.connect(host=t.host, port=t.port, user="root", password="", database=db,
                           autocommit=False, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id, balance FROM accounts WHERE id = 1 FOR UPDATE")
            assert cur.fetchone() == (1, 100)
        conn.rollback()
    finally:
        conn.close()
    after = accounts_unlocks(t)
    assert after - before in (0, 1)
    return after - before == 1


def wait_reload(t, outcome, count, what):
    return wait_for(lambda: reloads(t, outcome) >= count, timeout=10, what=what)


def test_good_edit_is_picked_up_by_the_poll(start_thaw, accounts_db, tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    atomic_write(rules / "billing.yaml", BILLING)
    t = start_thaw(rules=str(rules))
    assert generation(t) == 1
    assert not lock_read_is_rewritten(t, accounts_db), "accounts is not governed yet"

    atomic_write(rules / "accounts.yaml", ACCOUNTS)
    wait_reload(t, "success", 1, "a successful reload after adding accounts.yaml")
    assert reloads(t, "success") == 1
    assert reloads(t, "failure") == 0
    assert generation(t) == 2
    assert lock_read_is_rewritten(t, accounts_db), "the reloaded rules are not in force"
    log = t.log_text()
    assert re.search(r'config and rules reloaded generation=2 trigger="file change"', log), log


@pytest.mark.parametrize("bad, where", [
    (ACCOUNTS_TYPO, r"accounts\.yaml:4:5: .*invarint"),
    (ACCOUNTS_BAD_INVARIANT, r"accounts\.yaml:5:9: .*ABS"),
    (ACCOUNTS_BROKEN_YAML, r"accounts\.yaml:\d+:\d+: "),
], ids=["unknown-field", "bad-invariant", "broken-yaml"])
def test_bad_edit_is_rejected_and_the_rules_in_force_stay(start_thaw, accounts_db, tmp_path, bad, where):
    rules = tmp_path / "rules"
    rules.mkdir()
    atomic_write(rules / "billing.yaml", BILLING)
    atomic_write(rules / "accounts.yaml", ACCOUNTS)
    t = start_thaw(rules=str(rules))
    assert lock_read_is_rewritten(t, accounts_db)

    atomic_write(rules / "accounts.yaml", bad)
    wait_reload(t, "failure", 1, "a rejected reload after the bad edit")
    assert reloads(t, "failure") == 1
    assert reloads(t, "success") == 0
    assert generation(t) == 1, "a rejected reload must not change the generation"
    # the old rules (accounts governed) are still in force
    assert lock_read_is_rewritten(t, accounts_db)
    log = t.log_text()
    line = next((l for l in log.splitlines() if "reload rejected" in l), None)
    assert line, log
    assert re.search(where, line), line
    assert str(rules / "accounts.yaml") in line, line

    # the poll does not retry the same bad content every second
    time.sleep(2.5)
    assert reloads(t, "failure") == 1

    # fixing the file reloads it
    atomic_write(rules / "accounts.yaml", ACCOUNTS)
    wait_reload(t, "success", 1, "a successful reload after the fix")
    assert generation(t) == 2


def test_sighup_reloads(start_thaw, accounts_db, tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    atomic_write(rules / "billing.yaml", BILLING)
    t = start_thaw(rules=str(rules))
    wait_for(lambda: "thaw listening" in t.log_text(), what="thaw started")

    t.proc.send_signal(signal.SIGHUP)     # nothing changed on disk: only the signal reloads
    wait_reload(t, "success", 1, "a reload after SIGHUP")
    assert generation(t) == 2
    assert 'trigger="SIGHUP"' in t.log_text()

    # a single rules FILE (not a folder) works the same way
    single = tmp_path / "single.yaml"
    atomic_write(single, ACCOUNTS)
    t2 = start_thaw(rules=str(single))
    assert lock_read_is_rewritten(t2, accounts_db)
    atomic_write(single, ACCOUNTS_TYPO)
    t2.proc.send_signal(signal.SIGHUP)
    wait_reload(t2, "failure", 1, "SIGHUP with a bad file to be rejected")
    assert generation(t2) == 1
    assert lock_read_is_rewritten(t2, accounts_db)
    assert t2.running() and t.running()


def test_configmap_symlink_swap(start_thaw, accounts_db, tmp_path):
    cm = ConfigMapDir(tmp_path / "rules", {"billing.yaml": BILLING})
    assert (cm.root / "billing.yaml").is_symlink() and (cm.root / "..data").is_symlink()
    t = start_thaw(rules=str(cm.root))
    assert generation(t) == 1
    assert not lock_read_is_rewritten(t, accounts_db)

    # the kubelet's update: new timestamped folder, ..data renamed over, old folder removed
    cm.update({"billing.yaml": BILLING + ACCOUNTS.replace("tables:\n", "")})
    wait_reload(t, "success", 1, "the ..data swap to be picked up")
    assert generation(t) == 2
    assert reloads(t, "failure") == 0, "a swap must never be seen half done"
    assert lock_read_is_rewritten(t, accounts_db)

    # a bad ConfigMap edit is rejected; the previous rules stay
    cm.update({"billing.yaml": BILLING + ACCOUNTS_TYPO.replace("tables:\n", "")})
    wait_reload(t, "failure", 1, "the bad swap to be rejected")
    assert generation(t) == 2
    assert lock_read_is_rewritten(t, accounts_db)
    line = next(l for l in t.log_text().splitlines() if "reload rejected" in l)
    assert re.search(r"billing\.yaml:\d+:\d+: ", line), line

    # and the next good one is taken
    cm.update({"billing.yaml": BILLING})
    wait_reload(t, "success", 2, "the corrected swap to be picked up")
    assert generation(t) == 3
    assert not lock_read_is_rewritten(t, accounts_db)
    # the hidden ..data / ..<timestamp> entries were never loaded as rule files
    assert "..data" not in "\n".join(l for l in t.log_text().splitlines() if "rejected" in l)


def test_invalid_rules_at_start_refuse_to_start(tmp_path):
    """A bad ConfigMap at pod start: thaw exits non-zero naming file:line:column
    (the kubelet restarts it; the app container is not started)."""
    from thawproc import ThawProc
    rules = tmp_path / "rules"
    rules.mkdir()
    atomic_write(rules / "accounts.yaml", ACCOUNTS_TYPO)
    t = ThawProc(rules=str(rules))
    try:
        with pytest.raises(RuntimeError) as e:
            t.start()
        assert t.returncode not in (0, None)
        assert re.search(r"accounts\.yaml:4:5: .*invarint", t.log_text()), t.log_text()
    finally:
        t.cleanup()
    assert "exited with code" in str(e.value)


def test_config_file_reload(start_thaw, accounts_db, tmp_path):
    """The config file is polled too: a good edit becomes a new generation
    (seen here through log.redact_literals), a bad one is rejected with
    file:line:column and the generation in force stays."""
    rules = tmp_path / "rules"
    rules.mkdir()
    atomic_write(rules / "accounts.yaml", ACCOUNTS)
    cfg = tmp_path / "thaw.yaml"
    atomic_write(cfg, "log:\n  redact_literals: true\n")
    t = start_thaw(rules=str(rules), config=str(cfg))

    def last_rewrite_line():
        return [l for l in t.log_text().splitlines() if "statement rewritten" in l][-1]

    assert lock_read_is_rewritten(t, accounts_db)
    assert "sql=" not in last_rewrite_line()

    atomic_write(cfg, "log:\n  redact_literals: false\n")
    wait_reload(t, "success", 1, "the config edit to be reloaded")
    assert generation(t) == 2
    assert lock_read_is_rewritten(t, accounts_db)
    assert "sql=SELECT id, balance FROM accounts WHERE id = 1" in last_rewrite_line()

    # line 3, column 3: a misspelled key
    atomic_write(cfg, "log:\n  redact_literals: false\n  levle: debug\n")
    wait_reload(t, "failure", 1, "the bad config edit to be rejected")
    assert generation(t) == 2
    line = next(l for l in t.log_text().splitlines() if "reload rejected" in l)
    assert re.search(re.escape(str(cfg)) + r":3:3: .*levle", line), line
    assert lock_read_is_rewritten(t, accounts_db)
    assert "sql=" in last_rewrite_line(), "the rejected config must not replace the one in force"
