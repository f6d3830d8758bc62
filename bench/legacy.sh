#!/usr/bin/env bash
# The hot-row freeze of the design brief, measured: the legacy billing flow
# (SELECT ... FOR UPDATE, 50 ms of work, absolute ORM write, log insert,
# COMMIT) for ONE user with 100 concurrent requests, innodb_lock_wait_timeout=2
# (set globally for each run and restored after it, by loadgen.py):
#
#   legacy flow, direct        the problem
#   legacy flow, through thaw  thaw with rules/billing.yaml
#   half-migrated, direct      two sessions: the check's lock blocks the freeze
#   half-migrated, through thaw
#   hand fix, direct           the conditional UPDATE written by hand
#   hand fix, through thaw     the same, to separate relay cost from flow cost
#
#   bash bench/legacy.sh
#
# Environment (defaults in brackets):
#   DB_HOST [127.0.0.1]  DB_PORT [3306]
#   REQUESTS [100]  CONCURRENCY [100]  WORK_MS [50]  LOCK_WAIT_TIMEOUT [2]
#   TWO_SESSION_REQUESTS [20]   (each one costs a full lock wait when it fails)
#   ROUNDS [5]   every flow runs ROUNDS times, interleaved; the table shows the
#                median round (100 requests take 0.2 s: single runs are noisy)
#   THAW_BIN [target/release/thaw, built with `cargo build --release --locked`]
#   THAW_RULES [rules/]
#
# The load generator is tests/python/legacy/loadgen.py (fresh database per
# run, books checked after it). Prints a markdown table and writes it with
# the machine and date to bench/results/legacy-<date>.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DB_HOST="${DB_HOST:-127.0.0.1}"
DB_PORT="${DB_PORT:-3306}"
REQUESTS="${REQUESTS:-100}"
CONCURRENCY="${CONCURRENCY:-100}"
WORK_MS="${WORK_MS:-50}"
LOCK_WAIT_TIMEOUT="${LOCK_WAIT_TIMEOUT:-2}"
TWO_SESSION_REQUESTS="${TWO_SESSION_REQUESTS:-20}"
ROUNDS="${ROUNDS:-5}"
THAW_RULES="${THAW_RULES:-$ROOT/rules}"
LOADGEN=tests/python/legacy/loadgen.py
PY="$ROOT/.venv/bin/python"

die() { printf 'legacy.sh: %s\n' "$*" >&2; exit 1; }
log() { printf '==> [%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

[ -f "$LOADGEN" ] || die "$LOADGEN is missing"
[ -x "$PY" ] || die "no .venv: run scripts/test.sh once (it installs the Python dependencies)"
ls "$THAW_RULES"/*.y*ml >/dev/null 2>&1 || [ -f "$THAW_RULES" ] || die "no rules at $THAW_RULES: the legacy flow needs rules/billing.yaml"
if [ -z "${THAW_BIN:-}" ]; then
    log "cargo build --release --locked"
    cargo build --release --locked >&2
    THAW_BIN="$ROOT/target/release/thaw"
fi
[ -x "$THAW_BIN" ] || die "no thaw binary at $THAW_BIN"

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
WORK="$(mktemp -d /tmp/thaw-bench-legacy.XXXXXX)"
THAW_PID=""
cleanup() {
    if [ -n "$THAW_PID" ]; then kill "$THAW_PID" 2>/dev/null || true; wait "$THAW_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

THAW_PORT="$(free_port)"; THAW_ADMIN="$(free_port)"
log "thaw on 127.0.0.1:$THAW_PORT with rules $THAW_RULES"
"$THAW_BIN" run --listen "127.0.0.1:$THAW_PORT" --admin "127.0.0.1:$THAW_ADMIN" --backend "$DB_HOST:$DB_PORT" \
    --rules "$THAW_RULES" >"$WORK/thaw.log" 2>&1 &
THAW_PID=$!
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$THAW_PORT") 2>/dev/null && break
    kill -0 "$THAW_PID" 2>/dev/null || { cat "$WORK/thaw.log" >&2; die "thaw exited"; }
    sleep 0.1
done

# run_flow label mode port requests users round -> one JSON line into $WORK/<label>.<round>.json
run_flow() {
    log "$1 (round $6): mode=$2 port=$3 requests=$4 users=$5 concurrency=$CONCURRENCY"
    "$PY" "$LOADGEN" --mode "$2" --host 127.0.0.1 --port "$3" --setup-host "$DB_HOST" --setup-port "$DB_PORT" \
        --users "$5" --requests "$4" --concurrency "$(( CONCURRENCY < $4 ? CONCURRENCY : $4 ))" --work-ms "$WORK_MS" \
        --lock-wait-timeout "$LOCK_WAIT_TIMEOUT" >"$WORK/$1.$6.json" 2>"$WORK/$1.err" \
        || { cat "$WORK/$1.err" >&2; die "loadgen $1 failed"; }
    tail -1 "$WORK/$1.$6.json" >&2
}

for round in $(seq 1 "$ROUNDS"); do
    run_flow legacy-direct legacy "$DB_PORT" "$REQUESTS" 1 "$round"
    run_flow legacy-thaw legacy "$THAW_PORT" "$REQUESTS" 1 "$round"
    # The app's own ceiling: the same flow with no contention at all (one user per request).
    run_flow legacy-uncontended legacy "$DB_PORT" "$REQUESTS" "$REQUESTS" "$round"
    run_flow handfix-direct handfix "$DB_PORT" "$REQUESTS" 1 "$round"
    run_flow handfix-thaw handfix "$THAW_PORT" "$REQUESTS" 1 "$round"
done
run_flow two-session-direct two-session "$DB_PORT" "$TWO_SESSION_REQUESTS" 1 1
run_flow two-session-thaw two-session "$THAW_PORT" "$TWO_SESSION_REQUESTS" 1 1
METRICS="$(curl -fsS "http://127.0.0.1:$THAW_ADMIN/metrics" || true)"
THAW_RSS="$(ps -o rss= -p "$THAW_PID" | tr -d ' ')"

DATE="$(date -u +%Y-%m-%d)"
STAMP="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
CPU_MODEL="$(lscpu 2>/dev/null | awk -F: '/Model name/ {gsub(/^[ \t]+/, "", $2); print $2; exit}')"
RAM_GIB="$(awk '/MemTotal/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)"
REV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet -- src rules Cargo.toml Cargo.lock 2>/dev/null || echo '+dirty')"
MARIADB="$(MYSQL_PWD= mysql --protocol=TCP -h"$DB_HOST" -P"$DB_PORT" -uroot -N -B -e 'SELECT VERSION()' 2>/dev/null || echo '?')"

"$PY" - "$WORK" >"$WORK/table.md" <<'EOF'
import json, pathlib, sys
work = pathlib.Path(sys.argv[1])
rows = [("legacy (lock held from check to commit)", "direct", "legacy-direct"),
        ("legacy (lock held from check to commit)", "thaw", "legacy-thaw"),
        ("legacy, no contention (one user per request)", "direct", "legacy-uncontended"),
        ("half-migrated (two sessions)", "direct", "two-session-direct"),
        ("half-migrated (two sessions)", "thaw", "two-session-thaw"),
        ("hand fix (conditional UPDATE)", "direct", "handfix-direct"),
        ("hand fix (conditional UPDATE)", "thaw", "handfix-thaw")]
def runs(label):
    return sorted((json.loads(p.read_text().strip().splitlines()[-1]) for p in work.glob(f"{label}.*.json")),
                  key=lambda r: r["successful_rps"])
print("| flow | path | succeeded (median round) | insufficient balance | 1205 errors | other errors | successful requests/s (median) | all rounds | books balanced (all rounds) |")
print("|---|---|---:|---:|---:|---:|---:|---|---|")
median = {}
for flow, path, label in rows:
    rs = runs(label)
    r = rs[len(rs) // 2]
    median[label] = r["successful_rps"]
    errs = dict(r["errors"])
    e1205 = errs.pop("1205", 0)
    other = ", ".join(f"{k}: {v}" for k, v in sorted(errs.items())) or "0"
    every = " / ".join(str(x["successful_rps"]) for x in rs)
    books = "yes" if all(x["books_ok"] for x in rs) else "NO"
    print(f"| {flow} | {path} | {r['succeeded']}/{r['requests']} | {r['insufficient']} | {e1205} | {other} "
          f"| {r['successful_rps']} | {every} | {books} |")
print()
print(f"legacy through thaw / hand fix direct: {median['legacy-thaw'] / median['handfix-direct']:.2f}; "
      f"legacy through thaw / the same app without contention: {median['legacy-thaw'] / median['legacy-uncontended']:.2f}")
EOF
{
    echo "## Hot-row freeze: legacy flow direct vs through thaw vs the hand fix"
    echo
    echo "- date: $STAMP"
    echo "- machine: $(nproc) cores, $CPU_MODEL, ${RAM_GIB} GiB RAM, $(uname -sr); load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- MariaDB $MARIADB, innodb_lock_wait_timeout=$LOCK_WAIT_TIMEOUT (GLOBAL, restored after each run)"
    echo "- thaw: release build of $REV, rules $(realpath --relative-to="$ROOT" "$THAW_RULES" 2>/dev/null || echo "$THAW_RULES")/"
    echo "- load: tests/python/legacy/loadgen.py (SQLAlchemy async + aiomysql), one user, $CONCURRENCY concurrent requests, ${WORK_MS} ms of work inside each request"
    echo
    cat "$WORK/table.md"
    echo
    echo "thaw counters after the runs:"
    echo
    echo '```'
    grep -E '^thaw_(statements_rewritten|guard_violations|retries|replays|backend_errors|statements_unhandled|deferred_writes|deferred_flushes|deferred_committed|deferred_violations)_total' <<<"$METRICS" | grep -v ' 0$' || echo "(none)"
    echo '```'
    echo
    echo "thaw RSS after the runs: $(awk -v k="$THAW_RSS" 'BEGIN { printf "%.1f", k / 1024 }') MiB."
} >"$WORK/report.md"

mkdir -p bench/results
OUT="bench/results/legacy-$DATE.md"
[ -e "$OUT" ] && OUT="bench/results/legacy-$(date -u +%Y-%m-%dT%H%M%SZ).md"
cp "$WORK/report.md" "$OUT"
cat "$WORK/report.md"
log "written to $OUT"
