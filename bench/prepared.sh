#!/usr/bin/env bash
# The legacy freeze flow written with server-side prepared statements vs the
# same flow as text queries, both through thaw, in one run (issue 9: target
# prepared >= 0.9x text). The client is mysql-connector-python (pure), one
# thread and connection per request, for ONE user: bench/prepared_loadgen.py.
#
#   text,     through thaw     the text path (COM_QUERY)
#   prepared, through thaw     the binary path (COM_STMT_EXECUTE)
#   prepared, direct           the problem, for reference
#
#   bash bench/prepared.sh
#
# Environment (defaults in brackets): DB_HOST [127.0.0.1] DB_PORT [3306]
#   REQUESTS [100] WORK_MS [50] ROUNDS [5] (interleaved; the table shows the median round)
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
PY="$ROOT/.venv/bin/python"
LOADGEN=bench/prepared_loadgen.py

die() { printf 'prepared.sh: %s\n' "$*" >&2; exit 1; }
log() { printf '==> [%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
[ -x "$PY" ] || die "no .venv: run scripts/test.sh once (it installs the Python dependencies)"
if [ -z "${THAW_BIN:-}" ]; then
    log "cargo build --release --locked"
    cargo build --release --locked >&2
    THAW_BIN="$ROOT/target/release/thaw"
fi
[ -x "$THAW_BIN" ] || die "no thaw binary at $THAW_BIN"

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
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

run_flow() { # label port round [--prepared]
    log "$1 (round $3)"
    "$PY" "$LOADGEN" --port "$2" --setup-host "$DB_HOST" --setup-port "$DB_PORT" --requests "$REQUESTS" \
        --work-ms "$WORK_MS" ${4:-} >"$WORK/$1.$3.json" 2>"$WORK/$1.err" || { cat "$WORK/$1.err" >&2; die "loadgen $1 failed"; }
    tail -1 "$WORK/$1.$3.json" >&2
}
for round in $(seq 1 "$ROUNDS"); do
    run_flow text-thaw "$THAW_PORT" "$round"
    run_flow prepared-thaw "$THAW_PORT" "$round" --prepared
    run_flow prepared-direct "$DB_PORT" "$round" --prepared
done
METRICS="$(curl -fsS "http://127.0.0.1:$THAW_ADMIN/metrics" | grep -E '^thaw_(prepared_executes|statements_rewritten|validations)_total' || true)"

DATE="$(date -u +%Y-%m-%d)"
CPU_MODEL="$(lscpu 2>/dev/null | awk -F: '/Model name/ {gsub(/^[ \t]+/, "", $2); print $2; exit}')"
REV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet -- src rules Cargo.toml Cargo.lock 2>/dev/null || echo '+dirty')"
"$PY" - "$WORK" >"$WORK/table.md" <<'PYEOF'
import json, pathlib, sys
work = pathlib.Path(sys.argv[1])
def runs(label):
    return sorted((json.loads(p.read_text().strip().splitlines()[-1]) for p in work.glob(f"{label}.*.json")),
                  key=lambda r: r["successful_rps"])
print("| flow | path | succeeded (median round) | errors | successful requests/s (median) | all rounds | books balanced |")
print("|---|---|---:|---|---:|---|---|")
med = {}
for label, flow, path in [("text-thaw", "text", "thaw"), ("prepared-thaw", "prepared", "thaw"), ("prepared-direct", "prepared", "direct")]:
    rs = runs(label)
    r = rs[len(rs) // 2]
    med[label] = r["successful_rps"]
    errs = ", ".join(f"{k}: {v}" for k, v in sorted(r["errors"].items())) or "0"
    every = " / ".join(str(x["successful_rps"]) for x in rs)
    books = "yes" if all(x["books_ok"] for x in rs) else "NO"
    print(f"| {flow} | {path} | {r['succeeded']}/{r['requests']} | {errs} | {r['successful_rps']} | {every} | {books} |")
print()
print(f"prepared through thaw / text through thaw: {med['prepared-thaw'] / med['text-thaw']:.2f}")
PYEOF
mkdir -p bench/results
OUT="bench/results/prepared-$DATE.md"
{
    echo "## Legacy flow, prepared vs text, through thaw ($DATE, thaw $REV)"
    echo
    echo "Machine: $(nproc) cores ($CPU_MODEL), $(awk '/MemTotal/ {printf "%.1f", $2 / 1048576}' /proc/meminfo) GiB; $REQUESTS requests for one user, ${WORK_MS} ms of work, $ROUNDS rounds interleaved."
    echo
    cat "$WORK/table.md"
    echo
    echo '```'
    echo "$METRICS"
    echo '```'
} >"$OUT"
cat "$OUT"
