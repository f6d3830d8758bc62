"""Differential comparison harness: run the same steps direct and through thaw.

A *step* is a query (`Q`) or a driver action (`A`: ping, select_db, change
user, ...). A driver adapter (see drivers.py) runs a step and returns an
*observation*: a plain, printable structure holding everything that driver's
client sees (values with their Python types, cursor.description, rowcount,
lastrowid, warning count, status flags, SHOW WARNINGS, error class, code,
SQLSTATE and message).

`differential()` runs the whole step list twice, each time in a freshly
created database of the same name (so error messages, auto-increment ids and
metadata are identical by construction): once against MariaDB directly, once
through thaw. Any difference fails the test with a readable per-step diff.
"""

from __future__ import annotations

import difflib
import hashlib
import pprint
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from conftest import admin_exec

# Values longer than this are shown as length + sha256 instead of in full.
BIG = 2048


# --------------------------------------------------------------------- steps
@dataclass
class Step:
    name: str
    sql: str | None = None
    params: Any = None
    action: str | None = None
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    only: frozenset | None = None  # run only for these driver names
    err: int | None = None  # error code the direct run must produce (None: must succeed)
    err_by: dict = field(default_factory=dict)  # per-driver override of err
    warn: bool = False  # the direct run must report at least one warning
    not_on: dict = field(default_factory=dict)  # driver -> why this step cannot run there
    show_warnings: bool = True  # run SHOW WARNINGS after an error or warnings

    def applies_to(self, driver: str) -> bool:
        return (self.only is None or driver in self.only) and driver not in self.not_on

    def expected_err(self, driver: str) -> int | None:
        return self.err_by.get(driver, self.err)

    def describe(self) -> str:
        if self.sql is not None:
            sql = self.sql if len(self.sql) <= 300 else self.sql[:300] + f"... ({len(self.sql)} chars)"
            p = "" if self.params is None else f"  params={short(self.params)}"
            return f"{self.name}: {sql}{p}"
        return f"{self.name}: <{self.action}{short(self.args) if self.args else '()'}>"


def Q(sql: str, params=None, *, name: str | None = None, only: Iterable[str] | None = None,
      err: int | None = None, err_by: dict | None = None, warn: bool = False,
      not_on: dict | None = None, show_warnings: bool = True) -> Step:
    """A statement. err: the error code the direct run must give (-1: a driver-side
    exception); not_on: {driver: reason} for drivers that cannot run it;
    show_warnings=False: no SHOW WARNINGS afterwards (e.g. the server closes the
    connection right after this statement, and a follow-up would race with it)."""
    return Step(name=name or _auto_name(sql), sql=sql, params=params,
                only=frozenset(only) if only is not None else None,
                err=err, err_by=dict(err_by or {}), warn=warn, not_on=dict(not_on or {}),
                show_warnings=show_warnings)


def A(action: str, *args, name: str | None = None, only: Iterable[str] | None = None,
      err: int | None = None, err_by: dict | None = None, not_on: dict | None = None, **kwargs) -> Step:
    """A driver action (adapter method act_<action>)."""
    return Step(name=name or action, action=action, args=args, kwargs=kwargs,
                only=frozenset(only) if only is not None else None,
                err=err, err_by=dict(err_by or {}), not_on=dict(not_on or {}))


def _auto_name(sql: str) -> str:
    s = " ".join(sql.split())
    return s if len(s) <= 60 else s[:57] + "..."


# --------------------------------------------------------------------- values
def short(v, limit=120) -> str:
    s = repr(v)
    return s if len(s) <= limit else s[:limit] + "..."


def typed(v):
    """A printable, comparable form of a value that keeps its Python type."""
    if v is None:
        return None
    if isinstance(v, tuple):
        return tuple(typed(x) for x in v)
    if isinstance(v, list):
        return [typed(x) for x in v]
    if isinstance(v, dict):
        return {("key", typed(k)) if not isinstance(k, str) else k: typed(x) for k, x in v.items()}
    if isinstance(v, (set, frozenset)):
        return (type(v).__name__, sorted(repr(typed(x)) for x in v))
    t = type(v).__name__
    if isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        if len(b) > BIG:
            return f"{t}[len={len(b)} sha256={hashlib.sha256(b).hexdigest()[:16]}]"
        return f"{t}:{b!r}"
    if isinstance(v, str):
        if len(v) > BIG:
            h = hashlib.sha256(v.encode("utf-8", "surrogatepass")).hexdigest()[:16]
            return f"{t}[len={len(v)} sha256={h}]"
        return f"{t}:{v!r}"
    # int, bool, float (repr is exact), Decimal, date/time/datetime/timedelta, UUID, ...
    return f"{t}:{v!r}"


def err_info(e: BaseException) -> dict:
    """Everything a client can read off an exception."""
    d = {"class": f"{type(e).__module__}.{type(e).__qualname__}", "args": typed(e.args)}
    for attr in ("errno", "sqlstate", "msg"):
        if hasattr(e, attr):
            d[attr] = typed(getattr(e, attr))
    orig = getattr(e, "orig", None)  # SQLAlchemy DBAPIError wraps the driver's error
    if orig is not None:
        d["orig"] = err_info(orig)
        d["str"] = str(e)
    return d


# --------------------------------------------------------------------- running
class StepFailed(AssertionError):
    pass


def run_side(adapter_factory: Callable, host: str, port: int, db: str, steps: list[Step],
             driver: str, recreate: bool = True) -> list[tuple[Step | None, Any]]:
    """Run steps on one side; return [(step, observation)] (first entry: connect)."""
    if recreate:
        admin_exec(f"DROP DATABASE IF EXISTS `{db}`", f"CREATE DATABASE `{db}`")
    out: list[tuple[Step | None, Any]] = []
    adapter = None
    try:
        adapter = adapter_factory(host, port, db)
        out.append((None, {"connect": adapter.connect_info()}))
    except Exception as e:  # connecting itself is part of what is compared
        out.append((None, {"connect_error": err_info(e), "trace": _trace(e)}))
        return out
    try:
        for step in steps:
            if not step.applies_to(driver):
                continue
            try:
                adapter.collect_warnings = step.show_warnings
                if step.sql is not None:
                    obs = adapter.query(step.sql, step.params)
                else:
                    obs = adapter.action(step.action, *step.args, **step.kwargs)
            except Exception as e:  # harness-level failure (adapter bug or dead link)
                obs = {"harness_error": err_info(e)}
            out.append((step, obs))
    finally:
        try:
            adapter.close()
        except Exception:
            pass
    return out


def _trace(e):
    return "".join(traceback.format_exception_only(type(e), e)).strip()


def obs_error_code(obs) -> int | None:
    """The server error code in an observation, if any (None: no error)."""
    if not isinstance(obs, dict):
        return None
    e = obs.get("error") or obs.get("harness_error")
    if not e:
        return None
    e = e.get("orig", e)
    if "errno" in e and isinstance(e["errno"], str):
        return int(e["errno"].split(":", 1)[1])
    args = e.get("args") or ()
    if args and isinstance(args[0], str) and args[0].startswith("int:"):
        return int(args[0][4:])
    return -1


def obs_has_warnings(obs) -> bool:
    return bool(isinstance(obs, dict) and obs.get("show_warnings"))


def check_expectations(driver: str, observed: list) -> list[str]:
    """The direct run must do what the corpus says (guards against a corpus typo
    silently comparing two identical failures)."""
    problems = []
    for step, obs in observed:
        if step is None:
            if "connect_error" in obs:
                problems.append(f"[{driver}] direct connect failed: {obs}")
            continue
        want = step.expected_err(driver)
        got = obs_error_code(obs)
        if want != got:
            problems.append(
                f"[{driver}] direct run of step {step.describe()!r}: expected "
                f"{'success' if want is None else f'error {want}'}, got "
                f"{'success' if got is None else f'error {got}'}:\n{pprint.pformat(obs, width=110)}"
            )
        if step.warn and not obs_has_warnings(obs):
            problems.append(f"[{driver}] direct run of step {step.describe()!r}: expected warnings, got none")
    return problems


def render(obs) -> list[str]:
    return pprint.pformat(obs, width=110, sort_dicts=False).splitlines()


# SERVER_QUERY_NO_GOOD_INDEX_USED (0x10) and SERVER_QUERY_NO_INDEX_USED (0x20)
# report the optimizer's plan for this execution: two fresh copies of a small
# table can get different plans (statistics are sampled in the background).
# thaw relays status bytes untouched (the Rust raw-packet tests compare them
# byte for byte on fixed plans), so these two bits are left out here.
PLAN_BITS = 0x0030
STATUS_KEYS = {"status", "result_status", "server_status"}


def plan_independent(obs):
    if isinstance(obs, dict):
        return {k: (v & ~PLAN_BITS if k in STATUS_KEYS and isinstance(v, int) else plan_independent(v))
                for k, v in obs.items()}
    if isinstance(obs, list):
        return [plan_independent(v) for v in obs]
    if isinstance(obs, tuple):
        return tuple(plan_independent(v) for v in obs)
    return obs


def compare(driver: str, direct: list, thawed: list) -> list[str]:
    """Readable per-step diffs between the two runs ([] when identical)."""
    diffs = []
    n = max(len(direct), len(thawed))
    for i in range(n):
        d = direct[i] if i < len(direct) else (None, "<missing: direct run stopped earlier>")
        t = thawed[i] if i < len(thawed) else (None, "<missing: thaw run stopped earlier>")
        d, t = (d[0], plan_independent(d[1])), (t[0], plan_independent(t[1]))
        step = d[0] or t[0]
        if d[1] == t[1]:
            continue
        title = "connect" if step is None else step.describe()
        body = "\n".join(
            difflib.unified_diff(render(d[1]), render(t[1]), "direct", "thaw", lineterm="", n=3)
        )
        diffs.append(f"--- [{driver}] step #{i} {title}\n{body}")
    return diffs


def differential(driver: str, adapter_factory: Callable, steps: list[Step], db: str,
                 direct_addr: tuple, thaw_addr: tuple, recreate: bool = True) -> list:
    """Run steps direct and through thaw; fail with a readable diff on any difference.

    Returns the direct observations (for extra assertions by the caller)."""
    direct = run_side(adapter_factory, direct_addr[0], direct_addr[1], db, steps, driver, recreate)
    problems = check_expectations(driver, direct)
    if problems:
        raise StepFailed("corpus expectation not met by the DIRECT run (fix the corpus, not thaw):\n"
                         + "\n\n".join(problems))
    thawed = run_side(adapter_factory, thaw_addr[0], thaw_addr[1], db, steps, driver, recreate)
    diffs = compare(driver, direct, thawed)
    if diffs:
        report = "\n\n".join(diffs)
        if len(report) > 60000:
            report = report[:60000] + f"\n... ({len(report)} chars, truncated)"
        raise StepFailed(f"{len(diffs)} step(s) differ between direct and thaw for {driver}:\n\n{report}")
    return direct
