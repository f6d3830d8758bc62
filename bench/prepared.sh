#!/usr/bin/env bash
# The legacy freeze flow written with server-side prepared statements vs the
# same flow as text queries, both through thaw, in one run (issue 9: target
# prepared >= 0.9x text). Two clients, one connection per request and
# REQUESTS concurrent requests for ONE user:
#   mysql-connector-python (pure), cursor(prepared=True): bench/prepared_loadgen.py
#   Node mysql2, execute():                               bench/prepared_loadgen.js
#
# For each client:
#   text,     through thaw       the text path (COM_QUERY)
#   prepared, through thaw       the binary path (COM_STMT_EXECUTE)
#   prepared, direct             the problem, for reference (one burst)
#   text and prepared, direct, one user per request (no lock contention):
#                                what each protocol costs the client itself,
#                                the most thaw can give back
# Each runs BURSTS bursts on the same connections, as a pooled app would: the
# first is cold (every connection prepares its statements), the later ones
# warm (mysql2 keeps its statements; mysql-connector prepares again per
# cursor, thaw keeps its idle shadows).
#
#   bash bench/prepared.sh
#
# Environment (defaults in brackets): DB_HOST [127.0.0.1] DB_PORT [3306]
#   REQUESTS [100] WORK_MS [50] ROUNDS [5] BURSTS [3] (interleaved; the table shows the median round)
#   THAW_BIN [target/release/thaw, built with `cargo build --release --locked`]
# innodb_lock_wait_timeout is 2 s per session (SET SESSION; nothing global changes).
# Writes the table with machine and date to bench/results/prepared-<date>.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DB_HOST="${DB_HOST:-127.0.0.1}"
DB_PORT="${DB_PORT:-3306}"
REQUESTS="${REQUESTS:-100}"
WORK_MS="${WORK_MS:-50}"
ROUNDS="${ROUNDS:-5}"
BURSTS="${BURSTS:-3}"
PY="$ROOT/.venv/bin/python"
LOADGEN=bench/prepared_loadgen.py

die() { printf 'prepared.sh: %s\n' "$*" >&2; exit 1; }
log() { printf '==> [%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
[ -x "$PY" ] || die "no .venv: run scripts/test.sh once (it installs the Python dependencies)"
[ -d tests/node/node_modules/mysql2 ] || die "no tests/node/node_modules: run scripts/test.sh once (npm ci in tests/node)"
export NODE_PATH="$ROOT/tests/node/node_modules"
if [ -z "${THAW_BIN:-}" ]; then
    log "cargo build --release --locked"
    cargo build --release --locked >&2
    THAW_BIN="$ROOT/target/release/thaw"
fi
[ -x "$THAW_BIN" ] || die "no thaw binary at $THAW_BIN"

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
WORK="$(mktemp -d /tmp/thaw-bench-prepared.XXXXXX)"
THAW_PID=""
cleanup() {
    if [ -n "$THAW_PID" ]; then kill "$THAW_PID" 2>/dev/null || true; wait "$THAW_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
THAW_PORT="$(free_port)"; THAW_ADMIN="$(free_port)"
"$THAW_BIN" run --listen "127.0.0.1:$THAW_PORT" --admin "127.0.0.1:$THAW_ADMIN" --backend "$DB_HOST:$DB_PORT" \
    --rules "$ROOT/rules" >"$WORK/thaw.log" 2>&1 &
THAW_PID=$!
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$THAW_PORT") 2>/dev/null && break
    kill -0 "$THAW_PID" 2>/dev/null || { cat "$WORK/thaw.log" >&2; die "thaw exited"; }
    sleep 0.1
done

run_flow() { # label round port bursts users [--prepared]
    local gen=("$PY" bench/prepared_loadgen.py)
    case "$1" in js-*) gen=(node bench/prepared_loadgen.js) ;; esac
    log "$1 (round $2)"
    "${gen[@]}" --port "$3" --setup-host "$DB_HOST" --setup-port "$DB_PORT" --requests "$REQUESTS" \
        --work-ms "$WORK_MS" --bursts "$4" --users "$5" --balance 1000000 ${6:-} >"$WORK/$1.$2.json" 2>"$WORK/$1.err" \
        || { cat "$WORK/$1.err" >&2; die "loadgen $1 failed"; }
    grep -o '"successful_rps": *[0-9.]*' "$WORK/$1.$2.json" | tr '\n' ' ' >&2
    echo >&2
}
for round in $(seq 1 "$ROUNDS"); do
    for c in py js; do
        run_flow "$c-text-thaw" "$round" "$THAW_PORT" "$BURSTS" 1
        run_flow "$c-prepared-thaw" "$round" "$THAW_PORT" "$BURSTS" 1 --prepared
        run_flow "$c-prepared-direct" "$round" "$DB_PORT" 1 1 --prepared
        run_flow "$c-text-free" "$round" "$DB_PORT" "$BURSTS" "$REQUESTS"
        run_flow "$c-prepared-free" "$round" "$DB_PORT" "$BURSTS" "$REQUESTS" --prepared
    done
done
METRICS="$(curl -fsS "http://127.0.0.1:$THAW_ADMIN/metrics" | grep -E '^thaw_(prepared_executes|statements_rewritten|validations)_total' || true)"

DATE="$(date -u +%Y-%m-%d)"
CPU_MODEL="$(lscpu 2>/dev/null | awk -F: '/Model name/ {gsub(/^[ \t]+/, "", $2); print $2; exit}')"
REV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet -- src rules Cargo.toml Cargo.lock 2>/dev/null || echo '+dirty')"
"$PY" - "$WORK" >"$WORK/table.md" <<'PYEOF'
import json, pathlib, statistics, sys
work = pathlib.Path(sys.argv[1])
def rounds(label):
    """Per round: (cold rps, warm rps or None, lines)."""
    out = []
    for p in sorted(work.glob(f"{label}.*.json")):
        lines = [json.loads(l) for l in p.read_text().splitlines() if l.startswith("{")]
        warm = [l["successful_rps"] for l in lines[1:]]
        out.append((lines[0]["successful_rps"], statistics.median(warm) if warm else None, lines))
    return out
med = lambda xs: statistics.median(xs) if xs else None
clients = [("py", "mysql-connector-python"), ("js", "Node mysql2")]
flows = [("text-thaw", "text", "thaw", "one user"), ("prepared-thaw", "prepared", "thaw", "one user"),
         ("prepared-direct", "prepared", "direct", "one user"), ("text-free", "text", "direct", "none (a user per request)"),
         ("prepared-free", "prepared", "direct", "none (a user per request)")]
print("| client | protocol | path | lock contention | successful requests/s, cold (median) | warm (median) | cold, every round | succeeded | errors | books balanced |")
print("|---|---|---|---|---:|---:|---|---:|---|---|")
M = {}
for c, cname in clients:
    for f, proto, path, cont in flows:
        rs = rounds(f"{c}-{f}")
        cold, warm = med([r[0] for r in rs]), med([r[1] for r in rs if r[1] is not None])
        M[c, f] = (cold, warm)
        lines = [l for r in rs for l in r[2]]
        ok = sum(l["succeeded"] for l in lines)
        n = sum(l["requests"] for l in lines)
        errs = {}
        for l in lines:
            for k, v in l["errors"].items():
                errs[k] = errs.get(k, 0) + v
        es = ", ".join(f"{k}: {v}" for k, v in sorted(errs.items())) or "0"
        books = "yes" if all(l["books_ok"] for l in lines) else "NO"
        every = " / ".join(f"{r[0]:.0f}" for r in rs)
        print(f"| {cname} | {proto} | {path} | {cont} | {cold:.0f} | {'-' if warm is None else f'{warm:.0f}'} | {every} | {ok}/{n} | {es} | {books} |")
print()
print("| client | prepared / text through thaw, cold | warm | the client's own prepared / text (direct, no contention), cold | warm |")
print("|---|---:|---:|---:|---:|")
for c, cname in clients:
    r = lambda a, b, i: M[c, a][i] / M[c, b][i]
    print(f"| {cname} | **{r('prepared-thaw', 'text-thaw', 0):.2f}** | **{r('prepared-thaw', 'text-thaw', 1):.2f}** "
          f"| {r('prepared-free', 'text-free', 0):.2f} | {r('prepared-free', 'text-free', 1):.2f} |")
PYEOF
mkdir -p bench/results
OUT="bench/results/prepared-$DATE.md"
[ -e "$OUT" ] && OUT="bench/results/prepared-$(date -u +%Y-%m-%dT%H%M%SZ).md"
{
    echo "## Legacy flow, prepared vs text, through thaw ($DATE, thaw $REV)"
    echo
    echo "Machine: $(nproc) cores ($CPU_MODEL), $(awk '/MemTotal/ {printf "%.1f", $2 / 1048576}' /proc/meminfo) GiB; load average $LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end; $REQUESTS requests per burst, ${WORK_MS} ms of work, $BURSTS bursts per run (the first cold), $ROUNDS rounds interleaved."
    echo
    cat "$WORK/table.md"
    echo
    echo '```'
    echo "$METRICS"
    echo '```'
} >"$OUT"
cat "$OUT"
