"""mysql2 (Node, the driver issue 13 names), compressed, direct vs through
thaw: the same workload (prepared and text statements, 1 and 5 MiB BLOBs,
a 3 MB row that thaw streams, 20,000 rows, multiple results, errors,
warnings) must give the same transcript, per mode as in test_fidelity.py.
mysql2 comes from tests/node (`npm ci` there; scripts/test.sh does)."""

from __future__ import annotations

import difflib
import json
import os
import pprint
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import DIRECT_HOST, DIRECT_PORT, admin_exec, unique_name
from thawproc import REPO_ROOT

from .support import legs

SCRIPT = Path(__file__).with_name("mysql2_transcript.js")
MODES = {
    "client": ("client_compression: allowed\nbackend_compression: off\n", True, (True, False)),
    "backend": ("backend_compression: preferred\n", False, (False, True)),
    "both": ("", True, (True, True)),
}


def transcript(host: str, port: int, db: str, compress: bool) -> list:
    admin_exec(f"DROP DATABASE IF EXISTS `{db}`", f"CREATE DATABASE `{db}`")
    env = dict(os.environ, HOST=host, PORT=str(port), DB=db, COMPRESS="1" if compress else "0")
    r = subprocess.run([shutil.which("node"), str(SCRIPT)], env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, f"node {SCRIPT.name} against {host}:{port} exited {r.returncode}:\n{r.stderr[-4000:]}"
    return json.loads(r.stdout)


@pytest.mark.parametrize("mode", list(MODES))
def test_mysql2_compressed_same_as_direct(mode, make_thaw):
    assert shutil.which("node"), "node is not installed (scripts/test.sh needs Node >= 20)"
    assert (REPO_ROOT / "tests" / "node" / "node_modules" / "mysql2").is_dir(), "run `npm ci` in tests/node"
    config, compress, want = MODES[mode]
    thaw = make_thaw(config)
    db = unique_name("thaw_m2_")
    try:
        direct = transcript(DIRECT_HOST, DIRECT_PORT, db, compress)
        through = transcript(thaw.host, thaw.port, db, compress)
    finally:
        admin_exec(f"DROP DATABASE IF EXISTS `{db}`")
    assert not [s for s in direct if "error" in s and "no_such_table" not in s.get("sql", "")], direct
    if direct != through:
        d, t = (pprint.pformat(x, width=120).splitlines() for x in (direct, through))
        pytest.fail("mysql2 transcripts differ:\n" + "\n".join(difflib.unified_diff(d, t, "direct", "thaw", lineterm=""))[:20000])
    client, backend = legs(thaw.admin_port)
    assert (client > 0, backend > 0) == want, (mode, client, backend)
