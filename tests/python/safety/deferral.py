"""`defer_writes` for the safety suite and tests/python/defer/.

THAW_SAFETY_DEFER=1 runs the safety suite against rules with
``defer_writes: true`` on every table (scripts/test.sh runs it a second time
so): the billing rules and every rule file a case starts with ``make_thaw``.
Cases whose outcome moves by the documented difference (a violation, or a
lost race, answered at COMMIT instead of at the UPDATE) read ``DEFER``.
"""

from __future__ import annotations

import os
import re
import urllib.request

DEFER = os.environ.get("THAW_SAFETY_DEFER") == "1"

# `  - table: users` opens a rule; the setting goes right under it, at the
# indentation of the entry's other keys.
_ENTRY = re.compile(r"^(?P<indent>[ \t]*)- table:.*$", re.MULTILINE)


def with_defer_writes(yaml_text: str) -> str:
    """The rules text with `defer_writes: true` in every table entry."""
    if "defer_writes" in yaml_text:
        raise ValueError("the rules already say defer_writes; refusing to guess which one wins")
    out, n = _ENTRY.subn(lambda m: f"{m.group(0)}\n{m.group('indent')}  defer_writes: true", yaml_text)
    if n == 0:
        raise ValueError(f"no `- table:` entry in the rules:\n{yaml_text}")
    return out


def metric_total(admin_port: int, name: str) -> float:
    """Sum of every series of one counter on thaw's /metrics (0 if absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


# The errors a held-back write reports at COMMIT instead of at the UPDATE:
# the rule's violation (1644 in the shipped rules) and 1213 for a row that
# changed under it (docs/rules.md, `defer_writes`).
MOVED_CODES = (1644, 1213)


def at_the_update(attempt: list[tuple]) -> list[tuple]:
    """An app transcript read back as if the held write had failed where it
    was sent: ("ok", UPDATE ...) ... ("err", COMMIT, code) becomes
    ("err", UPDATE ..., code), and what the app ran in between (statements
    that did not make thaw send the write) is dropped, as direct the app
    would not have run them. Nothing else is changed, so a transcript that
    differs in any other way still fails the comparison."""
    out = list(attempt)
    for j in range(len(out) - 1, -1, -1):
        e = out[j]
        if e[:2] != ("err", "COMMIT") or e[2] not in MOVED_CODES:
            continue
        held = [i for i in range(j) if out[i][0] == "ok" and out[i][1].lstrip().upper().startswith("UPDATE")]
        if held:
            i = held[-1]
            out[i:j + 1] = [("err", out[i][1], e[2])]
    return out
