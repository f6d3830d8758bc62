#!/usr/bin/env python3
"""Check thaw's Grafana dashboards (deploy/grafana/*.json) against thaw itself.

Every dashboard must parse as JSON and be a Grafana dashboard (uid, title,
unique panel ids, a gridPos, targets on the ${datasource} variable), and
every PromQL expression in it (panel targets, templating queries) must:

- name only metrics thaw exports: read from src/ops/metrics.rs, with the
  suffixes prometheus-client adds (counters `_total`; histograms
  `_bucket`, `_sum`, `_count`);
- use only labels those metrics have: the labels the source gives each
  family (`get_or_create(&labels([("rule", ...)]))` anywhere under src/)
  or the labels column of the metrics table in docs/operations.md, `le` on
  histograms, or the scrape's target labels.

  python3 scripts/check-dashboard.py                  # check deploy/grafana/*.json
  python3 scripts/check-dashboard.py --self-test      # the check must catch a wrong name
  python3 scripts/check-dashboard.py --metrics-url URL
        # also: every family a running thaw's /metrics shows is in the list
        # read from the source (so that list misses nothing)

Exit 1 with one line per problem.
"""
from __future__ import annotations

import copy
import json
import pathlib
import re
import sys
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET_LABELS = {"namespace", "pod", "instance", "job", "container", "service", "node"}
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless", "inf", "nan",
}


REGISTER = r'registry\.register\(\s*"([a-z_]+)"\s*,\s*"[^"]*"\s*,\s*m\.([a-z_.]+)\.clone\(\)'


def registered(metrics_rs: str) -> dict[str, str]:
    """Field of the metric's struct (`m.contention.reads` -> `reads`) -> family name."""
    return {path.rsplit(".", 1)[-1]: "thaw_" + name for name, path in re.findall(REGISTER, metrics_rs)}


def field_type(field: str) -> str:
    """The declared type of a metrics field, in src/ops/ (`Family<Labels, Counter>`)."""
    for f in sorted((ROOT / "src/ops").glob("*.rs")):
        m = re.search(rf"^\s*pub {field}: (.+),\s*$", f.read_text(), re.M)
        if m:
            return m.group(1)
    return ""


def source_labels(metrics_rs: str) -> dict[str, set[str]]:
    """Family name -> label names the code creates series with."""
    fields = registered(metrics_rs)
    out: dict[str, set[str]] = {}
    for f in sorted((ROOT / "src").rglob("*.rs")):
        for field, pairs in re.findall(r"\.([a-z_]+)\s*\.get_or_create\(\s*&labels\(\[(.*?)\]\)", f.read_text(), re.S):
            if field in fields:
                out.setdefault(fields[field], set()).update(re.findall(r'\(\s*"([a-z_]+)"\s*,', pairs))
    return out


def exported(metrics_rs: str) -> dict[str, str]:
    """Exposed sample name -> family name, from the registry.register calls."""
    out = {}
    for name, path in re.findall(REGISTER, metrics_rs):
        t = field_type(path.rsplit(".", 1)[-1])
        base = "thaw_" + name
        if "Counter" in t:
            out[base + "_total"] = base
        elif "Histogram" in t:
            for s in ("_bucket", "_sum", "_count"):
                out[base + s] = base
        elif "Gauge" in t:
            out[base] = base
        else:
            sys.exit(f"cannot tell the type of {base} (field {path}: {t!r})")
    return out


def documented_labels(doc: str) -> dict[str, set[str]]:
    """Family name -> label names, from the metrics table of docs/operations.md."""
    out = {}
    for m in re.finditer(r"^\| `(thaw_[a-z_]+)` \| (\w+) \|([^|]*)\|", doc, re.M):
        name, kind, cell = m.groups()
        family = re.sub(r"_total$", "", name) if kind == "counter" else name
        # `rule`, `action` (`unlock`, `guard`): the values are in parentheses.
        depth, top = 0, ""
        for c in cell:
            depth += c == "("
            if depth == 0:
                top += c
            depth -= c == ")"
        out[family] = set(re.findall(r"`([a-z_]+)`", top))
        if kind == "histogram":
            out[family].add("le")
    return out


def exprs(dash: dict):
    """(where, PromQL) of every panel target and templating query."""
    def panels(ps):
        for p in ps:
            yield p
            yield from panels(p.get("panels", []))
    for p in panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            if t.get("expr"):
                yield f"panel {p.get('id')} {p.get('title')!r} {t.get('refId')}", t["expr"]
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if v.get("type") == "query" and q:
            m = re.fullmatch(r"\s*label_values\((.*),\s*([a-zA-Z_]\w*)\s*\)\s*", q)
            if m:
                yield f"variable {v['name']}", m.group(1)
                yield f"variable {v['name']} label", f"sum by ({m.group(2)}) ({m.group(1)})"
            elif not re.fullmatch(r"\s*label_values\(\s*[a-zA-Z_]\w*\s*\)\s*", q):
                yield f"variable {v['name']}", q


def parse(expr: str):
    """Metric names, selectors' labels per metric, and grouping labels of one expression."""
    e = re.sub(r"\$\{?\w+\}?", "1", expr)             # Grafana variables ($__rate_interval, ${x})
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', e)          # string literals
    e = re.sub(r"\[[^\]]*\]", "", e)                    # range and subquery brackets
    matchers = {}                                       # metric -> labels in its {...}
    def sel(m):
        labels = set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", m.group(2)))
        matchers.setdefault(m.group(1) or "", set()).update(labels)
        return m.group(1) or ""
    e = re.sub(r"([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}", sel, e)
    grouping = set()
    def grp(m):
        grouping.update(x.strip() for x in m.group(2).split(",") if x.strip())
        return " "
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", grp, e)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][\w:]*", e):
        word = m.group(0)
        after = e[m.end():].lstrip()
        if word.lower() in PROMQL_WORDS or after.startswith("(") or re.fullmatch(r"\d.*", word):
            continue
        names.add(word)
    names |= {k for k in matchers if k}
    return names, matchers, grouping


def check_dashboard(dash: dict, where: str, names: dict[str, str], labels: dict[str, set[str]]) -> list[str]:
    errors = []
    for key in ("uid", "title", "panels", "schemaVersion"):
        if key not in dash:
            errors.append(f"{where}: no {key!r}")
    ids = []
    def walk(ps):
        for p in ps:
            ids.append(p.get("id"))
            if "gridPos" not in p:
                errors.append(f"{where}: panel {p.get('id')} {p.get('title')!r} has no gridPos")
            if p.get("type") != "row":
                ds = p.get("datasource", {})
                if ds.get("uid") != "${datasource}":
                    errors.append(f"{where}: panel {p.get('id')} {p.get('title')!r} is not on the ${{datasource}} variable")
                if not p.get("targets"):
                    errors.append(f"{where}: panel {p.get('id')} {p.get('title')!r} has no query")
            walk(p.get("panels", []))
    walk(dash.get("panels", []))
    dup = sorted({i for i in ids if ids.count(i) > 1}, key=str)
    if dup or None in ids:
        errors.append(f"{where}: panel ids must be unique and set, got duplicates {dup}" + (" and a missing id" if None in ids else ""))
    if not any(v.get("name") == "datasource" and v.get("type") == "datasource" for v in dash.get("templating", {}).get("list", [])):
        errors.append(f"{where}: no datasource variable")
    n = 0
    for at, expr in exprs(dash):
        n += 1
        used, matchers, grouping = parse(expr)
        if not used:
            errors.append(f"{where}: {at}: names no metric: {expr}")
        for name in sorted(used):
            if name not in names:
                errors.append(f"{where}: {at}: {name} is not a metric thaw exports (see src/ops/metrics.rs)")
        families = {names[u] for u in used if u in names}
        for metric, ls in matchers.items():
            have = labels.get(names.get(metric, ""), set()) if metric else set().union(*(labels.get(f, set()) for f in families))
            for label in sorted(ls - have - TARGET_LABELS - {"__name__"}):
                errors.append(f"{where}: {at}: {metric or 'selector'} has no label {label!r}")
        have = set().union(*(labels.get(f, set()) for f in families)) if families else set()
        for label in sorted(grouping - have - TARGET_LABELS):
            errors.append(f"{where}: {at}: groups by {label!r}, a label none of {sorted(families)} has")
    if n == 0:
        errors.append(f"{where}: no PromQL at all")
    return errors


def sources():
    metrics_rs = (ROOT / "src/ops/metrics.rs").read_text()
    names = exported(metrics_rs)
    labels = documented_labels((ROOT / "docs/operations.md").read_text())
    for family, ls in source_labels(metrics_rs).items():
        labels.setdefault(family, set()).update(ls)
    if not names or not labels.get("thaw_statements_rewritten"):
        sys.exit(f"cannot read the metrics: {len(names)} names in src/ops/metrics.rs, labels of {sorted(labels)}")
    return names, labels


def check_files(names, labels) -> tuple[list[str], int]:
    files = sorted((ROOT / "deploy/grafana").glob("*.json"))
    if not files:
        return ["no dashboard under deploy/grafana"], 0
    errors = []
    for f in files:
        rel = f.relative_to(ROOT)
        try:
            dash = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            errors.append(f"{rel}: not JSON: {e}")
            continue
        errors += check_dashboard(dash, str(rel), names, labels)
    return errors, len(files)


def self_test(names, labels) -> None:
    """The check passes the shipped dashboard and fails each deliberate mistake."""
    f = sorted((ROOT / "deploy/grafana").glob("*.json"))[0]
    good = json.loads(f.read_text())
    assert check_dashboard(good, "good", names, labels) == [], check_dashboard(good, "good", names, labels)

    def mutated(old, new):
        """The dashboard with `old` replaced in the first query that has it."""
        d = copy.deepcopy(good)
        def panels(ps):
            for p in ps:
                yield p
                yield from panels(p.get("panels", []))
        holders = [t for p in panels(d["panels"]) for t in p.get("targets", [])]
        holders += [v["query"] for v in d["templating"]["list"] if isinstance(v.get("query"), dict)]
        key = {id(h): "expr" if "expr" in h else "query" for h in holders}
        for h in holders:
            if old in h.get(key[id(h)], ""):
                h[key[id(h)]] = h[key[id(h)]].replace(old, new, 1)
                for v in d["templating"]["list"]:
                    if v.get("query") is h:
                        v["definition"] = h["query"]
                return d
        raise AssertionError(f"self-test: no query of {f.name} has {old!r}")

    cases = [
        (mutated("thaw_statements_rewritten_total", "thaw_statements_rewriten_total"), "thaw_statements_rewriten_total is not a metric"),
        (mutated("thaw_statement_duration_seconds_bucket", "thaw_statement_duration_seconds"), "thaw_statement_duration_seconds is not a metric"),
        (mutated("thaw_client_connections_open{", "thaw_client_connections{"), "thaw_client_connections is not a metric"),
        (mutated('sum by (outcome) (rate(thaw_validations_total', 'sum by (outcom) (rate(thaw_validations_total'), "groups by 'outcom'"),
        (mutated('pod=~"$pod", outcome=', 'pod=~"$pod", result='), "has no label 'result'"),
        (mutated("label_values(thaw_client_connections_open, namespace)", "label_values(thaw_connections_open, namespace)"), "thaw_connections_open is not a metric"),
    ]
    for dash, want in cases:
        got = check_dashboard(dash, "mutant", names, labels)
        assert any(want in e for e in got), f"self-test: expected a problem containing {want!r}, got {got}"
    bad = copy.deepcopy(good)
    bad["panels"][1]["datasource"] = {"type": "prometheus", "uid": "prometheus"}
    assert any("${datasource}" in e for e in check_dashboard(bad, "mutant", names, labels))
    # A dashboard that is not JSON at all.
    try:
        json.loads(f.read_text()[:-3])
        raise AssertionError("self-test: truncated JSON parsed")
    except json.JSONDecodeError:
        pass
    print(f"self-test: the shipped dashboard passes; {len(cases) + 2} deliberate mistakes are each caught")


def check_running(url: str, names: dict[str, str]) -> list[str]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    errors = []
    seen = 0
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)", text, re.M):
        seen += 1
        want = {"counter": [name + "_total"], "histogram": [name + s for s in ("_bucket", "_sum", "_count")]}.get(kind, [name])
        for w in want:
            if w not in names:
                errors.append(f"{url} exports {w} ({kind}), which the list read from src/ops/metrics.rs lacks")
    if not seen:
        errors.append(f"{url}: no # TYPE lines")
    print(f"{url}: {seen} metric families, all in the list read from the source" if not errors else "")
    return errors


def main(argv: list[str]) -> int:
    names, labels = sources()
    if "--self-test" in argv:
        self_test(names, labels)
        return 0
    errors, n = check_files(names, labels)
    if "--metrics-url" in argv:
        errors += check_running(argv[argv.index("--metrics-url") + 1], names)
    if errors:
        print("\n".join("  - " + e for e in errors))
        return 1
    print(f"ok: {n} dashboard(s) under deploy/grafana parse, and every query names metrics and labels thaw exports")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
