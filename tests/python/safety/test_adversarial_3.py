"""Adversarial cases, third review: the text protocol (COM_QUERY) as a
confused ORM or an attacker drives it. Each is a sequence that is correct run
directly against MariaDB; through thaw (shipped rules/billing.yaml) it must
give the same rows and show the app the same results and errors.

Each case runs direct (the reference) and through thaw and compares, as the
rest of the safety suite does."""
from __future__ import annotations

import pymysql

from safety.harness import App, Env, check, exec_in, run_with_retry, std_setup

USER_ROW = "SELECT id, username, balance, frozen_balance FROM users WHERE id = {uid} FOR UPDATE"


def _single_session(body, conn_kw=None):
    def scenario(env: Env, db: str):
        app = env.app(**(conn_kw or {}))

        def txn():
            body(app)
            app.q("COMMIT")
            return "done"
        return run_with_retry(txn, rec=app.rec, rollback=app.rollback)
    return scenario


# ------------------------------------------------------- operator precedence
def test_xor_in_where_is_not_a_key_conjunct(via, subject, direct):
    """XOR binds more loosely than AND on the server (`a AND b XOR c` is
    `(a AND b) XOR c`); sqlparser ranks it above `=`, so thaw reads
    `id = 1 AND 0 XOR id = 3` as keyed by user 1. The app read user 1 FOR
    UPDATE and writes carol's (user 3) frozen balance absolutely. Direct:
    carol's frozen balance is 150. Through thaw the write becomes a delta
    computed from user 1's capture (+50) and lands on carol: 50."""
    def body(app: App):
        app.q(USER_ROW.format(uid=1))
        app.q("UPDATE users SET frozen_balance = 150 WHERE id = 1 AND 0 XOR id = 3")
    check(_single_session(body), setup=std_setup(), via=via, subject=subject, direct=direct)


# ---------------------------------------------------------------- savepoints
def test_rollback_to_savepoint_named_accent_insensitively(via, subject, direct):
    """Savepoint names compare as utf8_general_ci on the server: `ROLLBACK TO
    e` rolls back to savepoint `é`. thaw compares names ASCII case-insensitively,
    misses it and keeps the capture of the rolled-back write (150). The app
    then writes its freeze again (130): direct 130, through thaw a delta of
    130 - 150 = -20 on the restored 100: 80."""
    def body(app: App):
        app.q(USER_ROW.format(uid=1))
        app.q("SAVEPOINT `é`")
        app.q("UPDATE users SET frozen_balance = 150 WHERE id = 1")
        app.q("ROLLBACK TO e")
        app.q("UPDATE users SET frozen_balance = 130 WHERE id = 1")
    check(_single_session(body), setup=std_setup(), via=via, subject=subject, direct=direct)


def test_rollback_to_double_quoted_savepoint_under_ansi_quotes(via, subject, direct):
    """With ANSI_QUOTES a savepoint may be named in double quotes. thaw reads
    the name of `SAVEPOINT "a"` and `SAVEPOINT "b"` as the same (`"`), so
    `ROLLBACK TO "a"` restores the captures as of "b" (after the first write)
    while the server restores them as of "a"."""
    def body(app: App):
        app.q("SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')")
        app.q(USER_ROW.format(uid=1))
        app.q('SAVEPOINT "a"')
        app.q("UPDATE users SET frozen_balance = 150 WHERE id = 1")
        app.q('SAVEPOINT "b"')
        app.q("UPDATE users SET frozen_balance = 170 WHERE id = 1")
        app.q('ROLLBACK TO SAVEPOINT "a"')
        app.q("UPDATE users SET frozen_balance = 130 WHERE id = 1")
    check(_single_session(body), setup=std_setup(), via=via, subject=subject, direct=direct)


MULTI = {"client_flag": pymysql.constants.CLIENT.MULTI_STATEMENTS}


def test_savepoint_set_inside_a_multi_statement_packet(via, subject, direct):
    """The app sends its freeze log and a savepoint in one packet
    (CLIENT_MULTI_STATEMENTS). thaw reads transaction control off the first
    statement only, so it never learns of savepoint s; `ROLLBACK TO s` then
    leaves the capture of the undone write (150) in place, and the app's
    redone freeze (130) becomes 130 - 150 = -20 on the restored 100: 80 frozen
    instead of 130."""
    def body(app: App):
        app.q(USER_ROW.format(uid=1))
        app.q("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-1', 1, 50); SAVEPOINT s")
        app.q("UPDATE users SET frozen_balance = 150 WHERE id = 1")
        app.q("ROLLBACK TO SAVEPOINT s")
        app.q("UPDATE users SET frozen_balance = 130 WHERE id = 1")
    check(_single_session(body, MULTI), setup=std_setup(), via=via, subject=subject, direct=direct)


def test_rollback_to_inside_a_multi_statement_packet(via, subject, direct):
    """The same with the ROLLBACK TO as the second statement of a packet: the
    redone freeze must be relative to the restored 100."""
    def body(app: App):
        app.q(USER_ROW.format(uid=1))
        app.q("SAVEPOINT s")
        app.q("UPDATE users SET frozen_balance = 150 WHERE id = 1")
        app.q("SELECT 1; ROLLBACK TO SAVEPOINT s")
        app.q("UPDATE users SET frozen_balance = 130 WHERE id = 1")
    check(_single_session(body, MULTI), setup=std_setup(), via=via, subject=subject, direct=direct)


def test_lock_tables_commits_the_window_away(via, subject, direct):
    """LOCK TABLES commits the open transaction (and with autocommit off the
    server reports a new one open right away, so the status flags show no
    end). The app read user 1, then locks the log table to count and append
    its freeze log. Direct the count runs. thaw still holds user 1 in the
    protection window, validates the count by re-locking `users`, which is
    not among the locked tables (1100), and answers 1213: on every retry."""
    def body(app: App):
        app.q(USER_ROW.format(uid=1))
        app.q("LOCK TABLES freeze_logs WRITE")
        app.q("SELECT COUNT(*) FROM freeze_logs WHERE user_id = 1")
        app.q("INSERT INTO freeze_logs (request_id, user_id, amount) VALUES ('app-1', 1, 0)")
        app.q("UNLOCK TABLES")
    check(_single_session(body), setup=std_setup(), via=via, subject=subject, direct=direct)


# ------------------------------------------------ stored functions in a plan
BUMP_FUNCTION = (
    "CREATE FUNCTION bump_frozen(uid BIGINT, n BIGINT) RETURNS INT MODIFIES SQL DATA"
    " BEGIN UPDATE users SET frozen_balance = frozen_balance + n WHERE id = uid; RETURN ROW_COUNT(); END"
)


def test_stored_function_in_an_unlocked_read_of_another_governed_table(via, subject, direct):
    """Inside the window of user 1, the app reads its conversation FOR UPDATE
    with a stored function in the select list; the function freezes 10 on
    user 1. thaw plans the read as an unlock (proven), so it runs without
    validation, and user 1's capture still says 100: the app's absolute write
    of 150 becomes +50 on 110. Direct: 150; through thaw: 160."""
    def body(app: App):
        app.q(USER_ROW.format(uid=1))
        app.q("SELECT id, message_count, total_tokens, bump_frozen(1, 10) AS bumped FROM conversations WHERE id = 1 FOR UPDATE")
        app.q("UPDATE users SET frozen_balance = 150 WHERE id = 1")
    check(_single_session(body), setup=std_setup(BUMP_FUNCTION), via=via, subject=subject, direct=direct)


def test_stored_function_in_the_where_of_a_guarded_write(via, subject, direct):
    """The same with the function in the WHERE of a keyed UPDATE of the
    conversation (which thaw guards): user 1 was validated (locked, 100)
    before it, the function makes it 110, and the later absolute write of 150
    becomes +50: 160."""
    def body(app: App):
        app.q(USER_ROW.format(uid=1))
        app.q("SELECT id, message_count, total_tokens FROM conversations WHERE id = 1 FOR UPDATE")
        app.q("UPDATE conversations SET message_count = 6 WHERE id = 1 AND bump_frozen(1, 10) = 1")
        app.q("UPDATE users SET frozen_balance = 150 WHERE id = 1")
    check(_single_session(body), setup=std_setup(BUMP_FUNCTION), via=via, subject=subject, direct=direct)


SHADOWING_NOW = (
    "CREATE FUNCTION `now`() RETURNS DATETIME MODIFIES SQL DATA"
    " BEGIN UPDATE users SET frozen_balance = frozen_balance + 10 WHERE id = 1; RETURN '2024-05-01 00:00:00'; END"
)


def test_space_before_the_parenthesis_calls_the_stored_function(via, subject, direct):
    """`NOW()` is the built-in, but `now ()` (a blank before the parenthesis)
    calls the database's stored function `now` when there is one: the server
    parses COUNT, SUM, NOW, CAST, ... as built-ins only when `(` follows at
    once. thaw takes both for the built-in and lets `SELECT now ()` through
    the window unvalidated; the function freezes 10 on user 1, whose capture
    still says 100, so the absolute write of 150 becomes +50: 160."""
    def body(app: App):
        app.q(USER_ROW.format(uid=1))
        app.q("SELECT now () AS t")
        app.q("UPDATE users SET frozen_balance = 150 WHERE id = 1")
    check(_single_session(body), setup=std_setup(SHADOWING_NOW), via=via, subject=subject, direct=direct)


def test_savepoint_name_with_a_doubled_backtick(via, subject, direct):
    """`` `a``b` `` names the savepoint a`b. thaw's name reader stopped at the
    first backtick and read it as `a`, so it replaced its layer of savepoint a
    (before the write) with this one (after it); `ROLLBACK TO a` then kept the
    capture of the undone write: the redone freeze of 130 became 80."""
    def body(app: App):
        app.q(USER_ROW.format(uid=1))
        app.q("SAVEPOINT a")
        app.q("UPDATE users SET frozen_balance = 150 WHERE id = 1")
        app.q("SAVEPOINT `a``b`")
        app.q("ROLLBACK TO SAVEPOINT a")
        app.q("UPDATE users SET frozen_balance = 130 WHERE id = 1")
    check(_single_session(body), setup=std_setup(), via=via, subject=subject, direct=direct)


def test_rollback_to_after_an_empty_comment_line_with_crlf(via, subject, direct):
    """A statement from a file with CRLF line ends that starts with an empty
    `--` comment line: `--\\r\\nROLLBACK TO SAVEPOINT a`. The server takes
    `--` followed by any control character for a comment; thaw's reader of
    transaction control knew only `-- `, `--\\t` and `--\\n`, did not see the
    ROLLBACK TO, and kept the capture of the undone write: 130 became 80."""
    def body(app: App):
        app.q(USER_ROW.format(uid=1))
        app.q("SAVEPOINT a")
        app.q("UPDATE users SET frozen_balance = 150 WHERE id = 1")
        app.q("--\r\nROLLBACK TO SAVEPOINT a")
        app.q("UPDATE users SET frozen_balance = 130 WHERE id = 1")
    check(_single_session(body), setup=std_setup(), via=via, subject=subject, direct=direct)


# ------------------------------------------------- lock wait retry, variables
def test_lock_wait_retry_of_a_statement_that_assigns_user_variables(via, subject, direct):
    """The app numbers rows with a user variable in the WHERE of an UPDATE
    that waits on a row another session holds: the server evaluates the
    assignment for the rows it reached before the wait, then answers 1205 and
    rolls back the statement, not the variable. Through thaw the 1205 is
    retried: each re-send assigns again, and the app, which saw one
    statement fail, finds a larger @n than direct."""
    def scenario(env: Env, db: str):
        blocker = env(direct=True)
        with blocker.cursor() as cur:
            cur.execute("SELECT n FROM jobs WHERE id = 3 FOR UPDATE")
        app = env.app()
        app.q("SET SESSION innodb_lock_wait_timeout = 1")
        app.q("SET @n = 0")
        app.try_q("UPDATE jobs SET n = n + 1 WHERE (@n := @n + 1) > 0 ORDER BY id")
        blocker.rollback()
        app.q("SELECT @n")
        app.q("ROLLBACK")
        return "done"

    jobs = ["CREATE TABLE jobs (id INT PRIMARY KEY, n INT NOT NULL)", "INSERT INTO jobs VALUES (1, 0), (2, 0), (3, 0)"]
    check(scenario, setup=std_setup(*jobs), via=via, subject=subject, direct=direct)


# ------------------------------------------------------------------ sql_mode
def test_out_of_range_write_clamped_without_strict_mode(via, subject, direct):
    """A legacy app runs with sql_mode = '' and writes a counter past the INT
    range: the server stores 2147483647 (a warning). thaw's capture kept the
    value as written (3000000000), so the next absolute write (10) became a
    delta of -2999999990, which the guard `message_count >= 0` refuses: 1644
    and a rolled-back transaction where direct stores 10."""
    def body(app: App):
        app.q("SET SESSION sql_mode = ''")
        app.q("SELECT id, message_count, total_tokens FROM conversations WHERE id = 1 FOR UPDATE")
        app.q("UPDATE conversations SET message_count = 3000000000 WHERE id = 1")
        app.q("UPDATE conversations SET message_count = 10 WHERE id = 1")
    check(_single_session(body), setup=std_setup(), via=via, subject=subject, direct=direct)


def test_string_truncated_without_strict_mode_then_written_again(via, subject, direct):
    """With sql_mode = '' a username longer than VARCHAR(64) is stored cut to
    64 characters (a warning). thaw's capture kept the literal as written, so
    the next rename's compare-and-set (`AND username = <70 characters>`) can
    never match: 1213 on every retry, where direct renames."""
    long_name = "x" * 70

    def body(app: App):
        app.q("SET SESSION sql_mode = ''")
        app.q(USER_ROW.format(uid=1))
        app.q(f"UPDATE users SET username = '{long_name}' WHERE id = 1")
        app.q("UPDATE users SET username = 'alice2' WHERE id = 1")
    check(_single_session(body), setup=std_setup(), via=via, subject=subject, direct=direct)


DECIMAL_USERS = [
    "CREATE TABLE users (id BIGINT PRIMARY KEY, username VARCHAR(64), balance DECIMAL(6,2) NOT NULL DEFAULT 0,"
    " frozen_balance DECIMAL(6,2) NOT NULL DEFAULT 0, updated_at DATETIME NULL)",
    "INSERT INTO users VALUES (1, 'alice', 5000, 100, NULL)",
]


def test_out_of_range_decimal_clamped_without_strict_mode(via, subject, direct):
    """The same for a DECIMAL(6,2) balance: 123456.00 is stored as 9999.99.
    thaw's capture held 123456.00, so the next absolute write (10) became a
    delta of -123446.00 and its guard refused it (1644) where direct stores
    10."""
    def body(app: App):
        app.q("SET SESSION sql_mode = ''")
        app.q(USER_ROW.format(uid=1))
        app.q("UPDATE users SET balance = 123456.00 WHERE id = 1")
        app.q("UPDATE users SET balance = 10 WHERE id = 1")
    check(_single_session(body), setup=lambda env: exec_in(env.db, *DECIMAL_USERS), via=via, subject=subject, direct=direct)
