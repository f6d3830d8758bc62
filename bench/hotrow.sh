#!/usr/bin/env bash
# The hot-row freeze of issue 12 (sysbench, ONE row): can the legacy flow
# through thaw with defer_writes beat the hand fix run direct?
#
#   (a) legacy, thaw, defer_writes   bench/hotrow_legacy.lua through a thaw whose
#                                    rules are rules/billing.yaml + defer_writes
#   (b) legacy, thaw                 the same flow through a thaw with rules/billing.yaml
#   (c) hand fix, direct             bench/hotrow_handfix.lua straight to MariaDB
#   (d) hand fix, thaw               the same through the thaw of (b)
#
# legacy:   BEGIN; SELECT balance, frozen_balance FROM users WHERE id=1 FOR UPDATE;
#           UPDATE users SET frozen_balance=<read+1> WHERE id=1; INSERT INTO freeze_logs ...; COMMIT
# hand fix: BEGIN; UPDATE users SET frozen_balance = frozen_balance + 1 WHERE id=1
#           AND balance - frozen_balance >= 1; INSERT INTO freeze_logs ...; COMMIT
#
# Every (round, threads) runs the four flows one after the other, the first
# one rotating with the round, each on a fresh schema; the table gives the
# median transactions/s over the rounds, and after each run the books are
# checked (frozen_balance = number of log rows). Nothing GLOBAL is changed.
#
#   bash bench/hotrow.sh          # ~4 x 4 x ROUNDS x (BENCH_TIME + WARMUP) seconds
#
# Environment (defaults in brackets):
#   DB_HOST [127.0.0.1]  DB_PORT [3306]
#   THREADS ["1 4 16 64"]  ROUNDS [3]  BENCH_TIME [10]  WARMUP [2]
#   DB_DELAY_US [0]  a network between the app's pod and the database: every
#                    connection to MariaDB (the direct flows and both thaws'
#                    backend legs) goes through examples/delay_relay.rs, which
#                    delays each direction by this much; the app-to-thaw leg
#                    stays local, as with a sidecar. 0: no relay.
#   THAW_BIN [target/release/thaw, built with `cargo build --release --locked`]
#
# Prints a markdown table and writes it with the machine and the date to
# bench/results/hotrow-<date>.md. Uses its own database, thaw_hotrow.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DB_HOST="${DB_HOST:-127.0.0.1}"
DB_PORT="${DB_PORT:-3306}"
THREADS="${THREADS:-1 4 16 64}"
ROUNDS="${ROUNDS:-3}"
BENCH_TIME="${BENCH_TIME:-10}"
WARMUP="${WARMUP:-2}"
DB_DELAY_US="${DB_DELAY_US:-0}"
DB=thaw_hotrow
BALANCE=1000000000000

die() { printf 'hotrow.sh: %s\n' "$*" >&2; exit 1; }
log() { printf '==> [%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

command -v sysbench >/dev/null 2>&1 || die "sysbench is missing (scripts/test.sh installs it: apt-get install sysbench)"
if [ -z "${THAW_BIN:-}" ]; then
    log "cargo build --release --locked"
    cargo build --release --locked >&2
    THAW_BIN="$ROOT/target/release/thaw"
fi
[ -x "$THAW_BIN" ] || die "no thaw binary at $THAW_BIN"

mysql_q() { MYSQL_PWD= mysql --protocol=TCP -h"$DB_HOST" -P"$DB_PORT" -uroot -N -B -e "$1"; }
mysql_q 'SELECT 1' >/dev/null || die "MariaDB does not answer on $DB_HOST:$DB_PORT"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
WORK="$(mktemp -d /tmp/thaw-bench-hotrow.XXXXXX)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    mysql_q "DROP DATABASE IF EXISTS $DB" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# ------------------------------------------------------------------ the network
# BACKEND_PORT: where the flows reach MariaDB (through the delay relay when
# DB_DELAY_US > 0). mysql_q (set-up, books) always goes straight.
BACKEND_PORT="$DB_PORT"
RTT_NOTE="none (everything on loopback)"
if [ "$DB_DELAY_US" -gt 0 ]; then
    log "cargo build --release --locked --example delay_relay"
    cargo build --release --locked --example delay_relay >&2
    BACKEND_PORT="$(free_port)"
    "$ROOT/target/release/examples/delay_relay" "127.0.0.1:$BACKEND_PORT" "$DB_HOST:$DB_PORT" "$DB_DELAY_US" >"$WORK/relay.log" 2>&1 &
    PIDS+=("$!")
    for _ in $(seq 1 100); do grep -q ready "$WORK/relay.log" && break; sleep 0.1; done
    grep -q ready "$WORK/relay.log" || die "the delay relay did not start: $(cat "$WORK/relay.log")"
    # a query's round trip to MariaDB: 500 x SELECT 1 over one connection
    rtt_us() {
        local t0 t1
        t0="$(date +%s%N)"
        yes 'SELECT 1;' | head -500 | MYSQL_PWD= mysql --protocol=TCP -h127.0.0.1 -P"$1" -uroot -N -B >/dev/null
        t1="$(date +%s%N)"
        echo $(( (t1 - t0) / 500000 ))
    }
    RTT_NOTE="delay relay, ${DB_DELAY_US} us each way; a query's round trip $(rtt_us "$BACKEND_PORT") us through it vs $(rtt_us "$DB_PORT") us direct (mean of 500 x SELECT 1)"
fi
log "to MariaDB: $RTT_NOTE"

# ------------------------------------------------------------------ two thaws
mkdir -p "$WORK/plain" "$WORK/defer"
cp rules/billing.yaml "$WORK/plain/billing.yaml"
# defer_writes: true right under each `- table:` line of the shipped rules.
sed -E 's/^([[:space:]]*)- table:(.*)$/&\n\1  defer_writes: true/' rules/billing.yaml >"$WORK/defer/billing.yaml"
[ "$(grep -c 'defer_writes: true' "$WORK/defer/billing.yaml")" = "$(grep -c -- '- table:' rules/billing.yaml)" ] \
    || die "could not add defer_writes to every rule"

start_thaw() { # name -> sets PORT_<name>, ADMIN_<name>
    local port admin
    port="$(free_port)"; admin="$(free_port)"
    "$THAW_BIN" run --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin" --backend "127.0.0.1:$BACKEND_PORT" \
        --rules "$WORK/$1" >"$WORK/thaw-$1.log" 2>&1 &
    PIDS+=("$!")
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        kill -0 "$!" 2>/dev/null || { cat "$WORK/thaw-$1.log" >&2; die "thaw ($1) exited"; }
        sleep 0.1
    done
    printf -v "PORT_$1" '%s' "$port"
    printf -v "ADMIN_$1" '%s' "$admin"
    printf -v "PID_$1" '%s' "$!"
}
start_thaw plain
start_thaw defer
log "thaw plain on $PORT_plain, thaw defer_writes on $PORT_defer ($THAW_BIN)"
counter() { curl -fsS "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m || index($1, m "{") == 1 { s += $2 } END { print s + 0 }'; }
DEFER_COMMITTED_0="$(counter "$ADMIN_defer" thaw_deferred_committed_total)"
DEFER_FLUSHED_0="$(counter "$ADMIN_defer" thaw_deferred_flushes_total)"
PLAIN_DEFERRED_0="$(counter "$ADMIN_plain" thaw_deferred_writes_total)"

# ------------------------------------------------------------------ runs
fresh_schema() {
    mysql_q "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB;
        CREATE TABLE $DB.users (id BIGINT PRIMARY KEY, username VARCHAR(64), balance BIGINT NOT NULL DEFAULT 0,
            frozen_balance BIGINT NOT NULL DEFAULT 0, updated_at DATETIME NULL);
        CREATE TABLE $DB.freeze_logs (id BIGINT AUTO_INCREMENT PRIMARY KEY, user_id BIGINT NOT NULL, amount BIGINT NOT NULL);
        INSERT INTO $DB.users (id, username, balance) VALUES (1, 'alice', $BALANCE), (2, 'bob', $BALANCE)"
}

FLOWS=(legacy-defer legacy-thaw handfix-direct handfix-thaw)
flow_script() { case "$1" in legacy-*) echo hotrow_legacy.lua ;; *) echo hotrow_handfix.lua ;; esac; }
flow_port() { case "$1" in legacy-defer) echo "$PORT_defer" ;; *-thaw) echo "$PORT_plain" ;; *-direct) echo "$BACKEND_PORT" ;; esac; }

# CPU seconds (user + system) a process has used: where a flow's time goes
# on a machine whose cores the client, thaw and MariaDB share.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / hz }' "/proc/$1/stat"; }
MARIADB_PID="$(pgrep -o -x mariadbd || true)"
flow_thaw_pid() { case "$1" in legacy-defer) echo "$PID_defer" ;; *-thaw) echo "$PID_plain" ;; *) echo "" ;; esac; }

run_flow() { # flow threads round
    local out="$WORK/$1.t$2.r$3.txt" tpid db0 t0
    fresh_schema
    tpid="$(flow_thaw_pid "$1")"
    t0="$( [ -n "$tpid" ] && cpu_s "$tpid" || echo 0)"
    db0="$( [ -n "$MARIADB_PID" ] && cpu_s "$MARIADB_PID" || echo 0)"
    # A server shared with other work may be out of connections (1040) for a
    # moment: wait and run again rather than lose the whole benchmark.
    local try
    for try in 1 2 3 4 5 6; do
        LUA_PATH="$ROOT/bench/?.lua;;" sysbench --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$(flow_port "$1")" \
            --mysql-user=root --mysql-password= --mysql-db="$DB" --db-ps-mode=disable \
            --mysql-ignore-errors=1205,1213 --threads="$2" --time="$BENCH_TIME" --warmup-time="$WARMUP" \
            "$ROOT/bench/$(flow_script "$1")" run >"$out" 2>&1 && break
        grep -q "error 1040" "$out" && [ "$try" -lt 6 ] || { cat "$out" >&2; die "sysbench $1 ($2 threads) failed"; }
        log "$1 ($2 threads): the server is out of connections (1040); again in 10 s"
        sleep 10
        fresh_schema
    done
    # (warm-up included: the counts below are of the measured part only, so
    # the per-transaction CPU is an upper bound)
    echo "cpu thaw=$(awk -v a="$t0" -v b="$( [ -n "$tpid" ] && cpu_s "$tpid" || echo 0)" 'BEGIN { print b - a }')" \
        "mariadb=$(awk -v a="$db0" -v b="$( [ -n "$MARIADB_PID" ] && cpu_s "$MARIADB_PID" || echo 0)" 'BEGIN { print b - a }')" >>"$out"
    local frozen logs
    frozen="$(mysql_q "SELECT frozen_balance FROM $DB.users WHERE id = 1")"
    logs="$(mysql_q "SELECT COUNT(*) FROM $DB.freeze_logs")"
    echo "books frozen=$frozen logs=$logs" >>"$out"
    [ "$frozen" = "$logs" ] || die "$1 ($2 threads, round $3): books differ: frozen $frozen, logs $logs"
    log "$1 threads=$2 round=$3: $(grep -E 'transactions:' "$out" | sed -E 's/ +/ /g')"
}

for round in $(seq 1 "$ROUNDS"); do
    for t in $THREADS; do
        for i in 0 1 2 3; do
            run_flow "${FLOWS[$(( (i + round - 1) % 4 ))]}" "$t" "$round"
        done
    done
done
DEFER_COMMITTED="$(( $(counter "$ADMIN_defer" thaw_deferred_committed_total) - DEFER_COMMITTED_0 ))"
DEFER_FLUSHED="$(( $(counter "$ADMIN_defer" thaw_deferred_flushes_total) - DEFER_FLUSHED_0 ))"
PLAIN_DEFERRED="$(( $(counter "$ADMIN_plain" thaw_deferred_writes_total) - PLAIN_DEFERRED_0 ))"

# ------------------------------------------------------------------ report
python3 - "$WORK" "$THREADS" >"$WORK/table.md" <<'EOF'
import pathlib, re, statistics, sys
work, threads = pathlib.Path(sys.argv[1]), sys.argv[2].split()
flows = [("legacy-defer", "(a) legacy flow, thaw with defer_writes"), ("legacy-thaw", "(b) legacy flow, thaw"),
         ("handfix-direct", "(c) hand fix, direct"), ("handfix-thaw", "(d) hand fix, thaw")]
def runs(flow, t):
    out = []
    for p in sorted(work.glob(f"{flow}.t{t}.r*.txt")):
        text = p.read_text()
        tps = float(re.search(r"transactions:\s+\d+\s+\(([\d.]+) per sec", text).group(1))
        errs = int(re.search(r"ignored errors:\s+(\d+)", text).group(1))
        p95 = float(re.search(r"95th percentile:\s+([\d.]+)", text).group(1))
        out.append((tps, errs, p95))
    return out
med = {}
print("| flow | " + " | ".join(f"{t} threads" for t in threads) + " |")
print("|---|" + "---:|" * len(threads))
for flow, label in flows:
    cells = []
    for t in threads:
        rs = runs(flow, t)
        m = statistics.median(r[0] for r in rs)
        med[flow, t] = m
        errs = sum(r[1] for r in rs)
        every = " / ".join(f"{r[0]:.0f}" for r in rs)
        cells.append(f"**{m:.0f}** ({every}; p95 {statistics.median(r[2] for r in rs):.1f} ms"
                     + (f"; {errs} ignored errors" if errs else "") + ")")
    print(f"| {label} | " + " | ".join(cells) + " |")
print()
print("CPU per transaction in microseconds, thaw + MariaDB (median run; the warm-up is included, and MariaDB's figure is the whole server's, shared with other work: upper bounds):")
print()
print("| flow | " + " | ".join(f"{t} threads" for t in threads) + " |")
print("|---|" + "---:|" * len(threads))
for flow, label in flows:
    cells = []
    for t in threads:
        per = []
        for p in sorted(work.glob(f"{flow}.t{t}.r*.txt")):
            text = p.read_text()
            n = int(re.search(r"transactions:\s+(\d+)", text).group(1))
            m = re.search(r"cpu thaw=([\d.]+) mariadb=([\d.]+)", text)
            per.append((float(m.group(1)) / n * 1e6, float(m.group(2)) / n * 1e6))
        per.sort(key=lambda x: x[0] + x[1])
        th, db = per[len(per) // 2]
        cells.append(f"{th:.0f} + {db:.0f}")
    print(f"| {label} | " + " | ".join(cells) + " |")
print()
print("| ratio of medians | " + " | ".join(f"{t} threads" for t in threads) + " |")
print("|---|" + "---:|" * len(threads))
for num, den, label in [("legacy-defer", "handfix-direct", "(a) / (c): legacy with defer_writes vs hand fix direct"),
                        ("legacy-defer", "legacy-thaw", "(a) / (b): defer_writes vs without"),
                        ("legacy-thaw", "handfix-direct", "(b) / (c)"), ("handfix-thaw", "handfix-direct", "(d) / (c)")]:
    print(f"| {label} | " + " | ".join(f"{med[num, t] / med[den, t]:.2f}" for t in threads) + " |")
EOF

DATE="$(date -u +%Y-%m-%d)"
STAMP="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
CPU_MODEL="$(lscpu 2>/dev/null | awk -F: '/Model name/ {gsub(/^[ \t]+/, "", $2); print $2; exit}')"
REV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet -- src rules Cargo.toml Cargo.lock 2>/dev/null || echo '+dirty')"
{
    echo "## Hot-row freeze on one row (sysbench): legacy flow with defer_writes vs the hand fix"
    echo
    echo "- date: $STAMP"
    echo "- machine: $(nproc) cores, $CPU_MODEL, $(awk '/MemTotal/ {printf "%.1f", $2 / 1048576}' /proc/meminfo) GiB RAM, $(uname -sr); load average $LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
    echo "- network to MariaDB: $RTT_NOTE"
    echo "- MariaDB $(mysql_q 'SELECT VERSION()'), sysbench $(sysbench --version | awk '{print $2}'), thaw $REV ($THAW_BIN)"
    echo "- $ROUNDS rounds x ${BENCH_TIME} s (+${WARMUP} s warm-up) per flow and thread count, flows alternated, median transactions/s"
    echo
    cat "$WORK/table.md"
    echo
    echo "Held-back writes committed with their COMMIT by the defer_writes thaw: $DEFER_COMMITTED (flushed early: $DEFER_FLUSHED);"
    echo "writes held by the thaw without defer_writes: $PLAIN_DEFERRED. Books (frozen_balance = log rows) checked after every run."
} >"$WORK/report.md"

mkdir -p bench/results
OUT="bench/results/hotrow-$DATE.md"
[ -e "$OUT" ] && OUT="bench/results/hotrow-$(date -u +%Y-%m-%dT%H%M%SZ).md"
cp "$WORK/report.md" "$OUT"
cat "$WORK/report.md"
log "written to $OUT"
