"""Runs the Node driver tests (tests/node/*.test.js: mysql2, the mariadb
connector, Sequelize) once per endpoint: ``node --test FILE`` with VIA, the
thaw endpoint and the direct endpoint in the environment. A file passes when
node exits 0 having run at least one test; its whole output is attached on
failure. scripts/test.sh runs ``npm ci`` in tests/node first."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from conftest import DIRECT_HOST, DIRECT_PORT
from thawproc import REPO_ROOT

NODE_DIR = REPO_ROOT / "tests" / "node"
FILES = [
    "mysql2_fidelity.test.js",
    "mariadb_lost_update.test.js",
    "legacy_burst.test.js",
    "sequelize_burst.test.js",
    "driver_session.test.js",
]


@pytest.mark.parametrize("file", FILES)
def test_node(file, via, request):
    node = shutil.which("node")
    assert node, "node is not installed (scripts/test.sh needs Node >= 20 and npm)"
    assert (NODE_DIR / "node_modules").is_dir(), f"run `npm ci` in {NODE_DIR} (scripts/test.sh does)"
    t = request.getfixturevalue("prepared_thaw")
    request.node.__dict__.setdefault("_prepared_thaws", []).append(t)
    env = dict(os.environ, VIA=via, THAW_HOST=t.host, THAW_PORT=str(t.port),
               DIRECT_HOST=DIRECT_HOST, DIRECT_PORT=str(DIRECT_PORT))
    r = subprocess.run([node, "--test", "--test-reporter=tap", file], cwd=NODE_DIR, env=env,
                       capture_output=True, text=True, timeout=150)
    out = r.stdout + ("\n--- stderr ---\n" + r.stderr if r.stderr else "")
    request.node.add_report_section("call", "node output", out[-20000:])
    passed = re.search(r"^# pass (\d+)$", r.stdout, re.M)
    assert r.returncode == 0, f"node --test {file} (VIA={via}) exited {r.returncode}:\n{_failures(r.stdout)}"
    assert passed and int(passed.group(1)) >= 1, f"node --test {file} ran no test:\n{out[-3000:]}"


def _failures(tap: str) -> str:
    """The comments, 'not ok' lines and error texts of the TAP output."""
    keep, in_error = [], False
    for ln in tap.splitlines():
        key = ln.strip()
        if key.startswith(("code:", "name:", "stack:", "location:", "failureType:", "...", "duration_ms:")):
            in_error = False
        if key.startswith("error:"):
            in_error = True
        if in_error or key.startswith(("not ok", "# ", "expected:", "actual:")):
            keep.append(ln)
    return "\n".join(keep)[-6000:]
