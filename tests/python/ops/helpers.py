"""Helpers for the operations tests: admin HTTP, Prometheus text parsing,
polling, and ConfigMap-style rule folders."""
from __future__ import annotations

import http.client
import os
import re
import time
from pathlib import Path

# name{labels} value   (OpenMetrics text as prometheus-client writes it)
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def http_get(port: int, path: str, method: str = "GET", timeout: float = 5.0) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", errors="replace")
    finally:
        conn.close()


class Metrics:
    """One scrape of /metrics: samples keyed by name and label set."""

    def __init__(self, text: str):
        self.text = text
        self.samples: dict[tuple[str, frozenset], float] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = _SAMPLE.match(line)
            assert m, f"unparsable metrics line: {line!r}"
            name, labels, value = m.group(1), m.group(2) or "", m.group(3)
            key = (name, frozenset(_LABEL.findall(labels)))
            self.samples[key] = float(value)
        assert text.rstrip().endswith("# EOF"), "OpenMetrics output must end with # EOF"

    def get(self, name: str, **labels) -> float:
        """Value of one series; 0 when thaw has not created it yet."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def has(self, name: str, **labels) -> bool:
        return (name, frozenset(labels.items())) in self.samples

    def sum(self, name: str, **match) -> float:
        total = 0.0
        for (n, labels), v in self.samples.items():
            d = dict(labels)
            if n == name and all(d.get(k) == want for k, want in match.items()):
                total += v
        return total

    def series(self, name: str) -> dict[frozenset, float]:
        return {labels: v for (n, labels), v in self.samples.items() if n == name}


def scrape(admin_port: int) -> Metrics:
    status, body = http_get(admin_port, "/metrics")
    assert status == 200, f"/metrics answered {status}: {body[:200]}"
    return Metrics(body)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll until predicate() is truthy; return its value or fail with `what`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what} (last value: {last!r})")


def atomic_write(path, text: str) -> None:
    """Replace a file the way an operator should (and editors and the kubelet
    do): write a temp file beside it and rename it over. A plain
    truncate-and-write can be read half-written by thaw's 1 s poll."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class ConfigMapDir:
    """A folder laid out the way the kubelet writes a mounted ConfigMap:

        <root>/..2026_11_23_19_55_01.000000001/billing.yaml   the real files
        <root>/..data -> ..2026_11_23_19_55_01.000000001       swapped atomically
        <root>/billing.yaml -> ..data/billing.yaml             stable names

    update() writes a new timestamped folder, points a temporary symlink at
    it and renames that over ..data (one atomic rename), then removes the old
    folder, exactly as the kubelet's AtomicWriter does.
    """

    def __init__(self, root: Path, files: dict[str, str]):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._seq = 0
        self._current: str | None = None
        self._write(files)
        for name in files:
            os.symlink(f"..data/{name}", self.root / name)

    def _stamp(self) -> str:
        self._seq += 1
        return time.strftime("..%Y_%m_%d_%H_%M_%S", time.gmtime()) + f".{os.getpid():05d}{self._seq:04d}"

    def _write(self, files: dict[str, str]) -> None:
        stamp = self._stamp()
        d = self.root / stamp
        d.mkdir()
        for name, text in files.items():
            (d / name).write_text(text)
        tmp = self.root / "..data_tmp"
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(stamp, tmp)
        os.rename(tmp, self.root / "..data")  # atomic replace of the symlink
        old, self._current = self._current, stamp
        if old:
            for f in (self.root / old).iterdir():
                f.unlink()
            (self.root / old).rmdir()

    def update(self, files: dict[str, str]) -> None:
        self._write(files)
