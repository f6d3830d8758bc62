#!/usr/bin/env bash
# Relay overhead: sysbench straight to MariaDB vs through thaw (release
# build) vs through haproxy in TCP mode, in one run on one machine.
#
#   bash bench/relay.sh            # ~4 minutes with the defaults
#
# Environment (defaults in brackets):
#   DB_HOST [127.0.0.1]  DB_PORT [3306]  DB_USER [root]  DB_PASSWORD []
#   BENCH_TIME [30]      seconds per sysbench run
#   THREADS [8]          sysbench threads (= client connections)
#   ROUNDS [1]           rounds of all runs; the report gives the median per path
#                        (use 3 on a shared machine: 3 x 6 x BENCH_TIME seconds)
#   TESTS ["oltp_point_select oltp_read_write"]
#   THAW_BIN [target/release/thaw, built with `cargo build --release --locked`]
#   THAW_RULES [rules/ when it exists, else an empty folder]
#
# Prints a markdown table (tps, qps, p95 latency, and thaw's RSS and CPU) and
# writes it with the machine and the date to bench/results/relay-<date>.md.
# Uses its own database, thaw_bench (created and dropped here).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DB_HOST="${DB_HOST:-127.0.0.1}"
DB_PORT="${DB_PORT:-3306}"
DB_USER="${DB_USER:-root}"
DB_PASSWORD="${DB_PASSWORD:-}"
BENCH_TIME="${BENCH_TIME:-30}"
THREADS="${THREADS:-8}"
ROUNDS="${ROUNDS:-1}"
TESTS="${TESTS:-oltp_point_select oltp_read_write}"
DB=thaw_bench
TABLES=4
TABLE_SIZE=10000

die() { printf 'relay.sh: %s\n' "$*" >&2; exit 1; }
log() { printf '==> [%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ------------------------------------------------------------------ tools
need=()
command -v sysbench >/dev/null 2>&1 || need+=(sysbench)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v mysql >/dev/null 2>&1 || need+=(mariadb-client)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
    $SUDO apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
HAPROXY="$(command -v haproxy || echo /usr/sbin/haproxy)"

if [ -z "${THAW_BIN:-}" ]; then
    log "cargo build --release --locked"
    cargo build --release --locked >&2
    THAW_BIN="$ROOT/target/release/thaw"
fi
[ -x "$THAW_BIN" ] || die "no thaw binary at $THAW_BIN"

mysql_q() { MYSQL_PWD="$DB_PASSWORD" mysql --protocol=TCP -h"$DB_HOST" -P"$DB_PORT" -u"$DB_USER" -N -B -e "$1"; }
mysql_q 'SELECT 1' >/dev/null || die "MariaDB does not answer on $DB_HOST:$DB_PORT"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

WORK="$(mktemp -d /tmp/thaw-bench-relay.XXXXXX)"
THAW_PID="" HAPROXY_PID="" SAMPLER_PID=""
cleanup() {
    for pid in "$SAMPLER_PID" "$THAW_PID" "$HAPROXY_PID"; do
        if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# ------------------------------------------------------------------ proxies
THAW_PORT="$(free_port)"; THAW_ADMIN="$(free_port)"; HAPROXY_PORT="$(free_port)"
if [ -z "${THAW_RULES:-}" ]; then
    if [ -d rules ] && ls rules/*.y*ml >/dev/null 2>&1; then THAW_RULES="$ROOT/rules"; else THAW_RULES="$WORK/rules"; mkdir -p "$THAW_RULES"; fi
fi
log "thaw $THAW_BIN on 127.0.0.1:$THAW_PORT (rules: $THAW_RULES)"
THAW_LOG="${THAW_LOG:-info}" "$THAW_BIN" run --listen "127.0.0.1:$THAW_PORT" --admin "127.0.0.1:$THAW_ADMIN" \
    --backend "$DB_HOST:$DB_PORT" --rules "$THAW_RULES" >"$WORK/thaw.log" 2>&1 &
THAW_PID=$!
wait_port "$THAW_PORT" || { cat "$WORK/thaw.log" >&2; die "thaw did not listen"; }

cat >"$WORK/haproxy.cfg" <<EOF
global
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
listen mysql
    bind 127.0.0.1:$HAPROXY_PORT
    server db $DB_HOST:$DB_PORT
EOF
log "haproxy $("$HAPROXY" -v | head -1 | awk '{print $3}') on 127.0.0.1:$HAPROXY_PORT"
"$HAPROXY" -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
HAPROXY_PID=$!
wait_port "$HAPROXY_PORT" || { cat "$WORK/haproxy.log" >&2; die "haproxy did not listen"; }

rss_kib() { ps -o rss= -p "$1" | tr -d ' '; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICKS="$(getconf CLK_TCK)"
THAW_RSS_IDLE="$(rss_kib "$THAW_PID")"
LOADAVG_START="$(cut -d' ' -f1-3 /proc/loadavg)"

# ------------------------------------------------------------------ data
SB_COMMON=(--db-driver=mysql --mysql-user="$DB_USER" --mysql-password="$DB_PASSWORD" --mysql-db="$DB"
           --tables="$TABLES" --table-size="$TABLE_SIZE")
log "preparing $DB ($TABLES tables x $TABLE_SIZE rows)"
mysql_q "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB"
sysbench oltp_read_write "${SB_COMMON[@]}" --mysql-host="$DB_HOST" --mysql-port="$DB_PORT" prepare >"$WORK/prepare.log" 2>&1 \
    || { cat "$WORK/prepare.log" >&2; die "sysbench prepare failed"; }

# ------------------------------------------------------------------ runs
# One sysbench run; prints "tps qps p95_ms errors" on stdout.
run_one() { # test host port label
    local out="$WORK/$4-$1.log"
    sysbench "$1" "${SB_COMMON[@]}" --mysql-host="$2" --mysql-port="$3" --threads="$THREADS" \
        --time="$BENCH_TIME" --percentile=95 --report-interval=0 run >"$out" 2>&1 \
        || { tail -20 "$out" >&2; die "sysbench $1 via $4 failed"; }
    awk '
        /transactions:/   { gsub(/[()]/, "", $3); tps = $3 }
        /queries:/ && /per sec/ { gsub(/[()]/, "", $3); qps = $3 }
        /95th percentile:/ { p95 = $3 }
        /ignored errors:/ { err = $3 }
        END { printf "%s %s %s %s\n", tps, qps, p95, err }' "$out"
}

# Sample a process's RSS every 0.5 s into a file until killed.
sample_rss() { while kill -0 "$1" 2>/dev/null; do rss_kib "$1"; sleep 0.5; done >"$2"; }

# All runs, one line each: round test target tps qps p95_ms errors cpu_pct rss_max_kib
RUNS="$WORK/runs.tsv"
: >"$RUNS"
targets=(direct thaw haproxy)
for round in $(seq 1 "$ROUNDS"); do
    for test in $TESTS; do
        # warm the buffer pool and the server's caches for this test
        if [ "$round" = 1 ]; then
            BENCH_TIME_SAVED="$BENCH_TIME"; BENCH_TIME=5
            run_one "$test" "$DB_HOST" "$DB_PORT" warmup >/dev/null
            BENCH_TIME="$BENCH_TIME_SAVED"
        fi
        # rotate the order each round so that drift on a shared machine
        # does not always favour the same path
        for i in 0 1 2; do
            target="${targets[$(( (i + round - 1) % 3 ))]}"
            case $target in
                direct) port="$DB_PORT"; host="$DB_HOST"; pid="" ;;
                thaw) port="$THAW_PORT"; host=127.0.0.1; pid="$THAW_PID" ;;
                haproxy) port="$HAPROXY_PORT"; host=127.0.0.1; pid="$HAPROXY_PID" ;;
            esac
            log "round $round/$ROUNDS: $test via $target (${BENCH_TIME}s, $THREADS threads)"
            cpu=- max=-
            if [ -n "$pid" ]; then
                t0="$(cpu_ticks "$pid")"
                sample_rss "$pid" "$WORK/rss-$target-$test-$round" & SAMPLER_PID=$!
            fi
            res="$(run_one "$test" "$host" "$port" "$target")"
            if [ -n "$pid" ]; then
                kill "$SAMPLER_PID" 2>/dev/null || true; wait "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=""
                t1="$(cpu_ticks "$pid")"
                max="$(sort -n "$WORK/rss-$target-$test-$round" | tail -1)"
                cpu="$(awk -v a="$t0" -v b="$t1" -v hz="$TICKS" -v s="$BENCH_TIME" 'BEGIN { printf "%.0f", 100 * (b - a) / hz / s }')"
            fi
            printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$test" "$target" "$(tr ' ' '\t' <<<"$res")" "$cpu" "$max" >>"$RUNS"
            log "  -> tps qps p95 errors: $res"
        done
    done
done
THAW_RSS_AFTER="$(rss_kib "$THAW_PID")"
THAW_RSS_MAX="$(awk -F'\t' '$3 == "thaw" && $9 != "-" && $9 > m { m = $9 } END { print m + 0 }' "$RUNS")"
HAPROXY_RSS_MAX="$(awk -F'\t' '$3 == "haproxy" && $9 != "-" && $9 > m { m = $9 } END { print m + 0 }' "$RUNS")"
THAW_CONN_TOTAL="$(curl -fsS "http://127.0.0.1:$THAW_ADMIN/metrics" 2>/dev/null | awk '/^thaw_client_connections_total/ {print $2}' || true)"

log "dropping $DB"
sysbench oltp_read_write "${SB_COMMON[@]}" --mysql-host="$DB_HOST" --mysql-port="$DB_PORT" cleanup >/dev/null 2>&1 || true
mysql_q "DROP DATABASE IF EXISTS $DB"

# ------------------------------------------------------------------ report
DATE="$(date -u +%Y-%m-%d)"
STAMP="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
CPU_MODEL="$(lscpu 2>/dev/null | awk -F: '/Model name/ {gsub(/^[ \t]+/, "", $2); print $2; exit}')"
RAM_GIB="$(awk '/MemTotal/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)"
REV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet -- src Cargo.toml Cargo.lock 2>/dev/null || echo '+dirty')"
MARIADB="$(mysql_q 'SELECT VERSION()')"
LOADAVG="$(cut -d' ' -f1-3 /proc/loadavg)"

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
{
    echo "## Relay overhead: sysbench direct vs thaw vs haproxy (TCP mode)"
    echo
    echo "- date: $STAMP"
    echo "- machine: $(nproc) cores, $CPU_MODEL, ${RAM_GIB} GiB RAM, $(uname -sr)"
    echo "- load average at the start: $LOADAVG_START, at the end: $LOADAVG (the machine is shared: other work may have run meanwhile)"
    echo "- MariaDB $MARIADB on $DB_HOST:$DB_PORT (same machine); sysbench $(sysbench --version | awk '{print $2}'); haproxy $("$HAPROXY" -v | head -1 | awk '{print $3}') (mode tcp, default threads)"
    echo "- thaw: release build of $REV, rules: $( [ "$THAW_RULES" = "$ROOT/rules" ] && echo 'rules/ (shipped; sysbench tables are not governed)' || echo 'none (empty folder)' ), THAW_LOG=${THAW_LOG:-info}"
    echo "- sysbench: $THREADS threads, --tables=$TABLES --table-size=$TABLE_SIZE, --time=$BENCH_TIME per run, prepared statements (sysbench default); $ROUNDS round(s), path order rotated each round, 5 s warm-up per test"
    echo
    python3 - "$RUNS" "$ROUNDS" <<'PYEOF'
import statistics, sys
runs = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
rounds = int(sys.argv[2])
tests = list(dict.fromkeys(r[1] for r in runs))
paths = ["direct", "thaw", "haproxy"]
def col(test, path, i):
    return [float(r[i]) for r in runs if r[1] == test and r[2] == path and r[i] not in ("-", "")]
med = lambda v: statistics.median(v) if v else float("nan")
agg = "median of %d rounds" % rounds if rounds > 1 else "one run"
print(f"| test | path | tps ({agg}) | qps | p95 latency (ms) | tps per round | ignored errors | proxy CPU (% of one core) | proxy RSS max (MiB) |")
print("|---|---|---:|---:|---:|---|---:|---:|---:|")
for t in tests:
    for p in paths:
        tps, qps, p95, err = col(t, p, 3), col(t, p, 4), col(t, p, 5), col(t, p, 6)
        cpu, rss = col(t, p, 7), col(t, p, 8)
        per = " / ".join(f"{v:.0f}" for v in tps)
        print(f"| {t} | {p} | {med(tps):.0f} | {med(qps):.0f} | {med(p95):.2f} | {per} | {int(sum(err))} "
              f"| {f'{med(cpu):.0f}' if cpu else '-'} | {f'{max(rss) / 1024:.1f}' if rss else '-'} |")
print()
print("| test | thaw / haproxy (tps) | thaw / direct (tps) | haproxy / direct (tps) | thaw / haproxy per round |")
print("|---|---:|---:|---:|---|")
for t in tests:
    d, th, h = (med(col(t, p, 3)) for p in paths)
    per = " / ".join(f"{a / b:.2f}" for a, b in zip(col(t, "thaw", 3), col(t, "haproxy", 3)))
    print(f"| {t} | {th / h:.2f} | {th / d:.2f} | {h / d:.2f} | {per} |")
PYEOF
    echo
    echo "thaw RSS (ps -o rss): $(mib "$THAW_RSS_IDLE") MiB idle at start, $(mib "$THAW_RSS_MAX") MiB max under load" \
         "($THREADS connections), $(mib "$THAW_RSS_AFTER") MiB after the runs; ${THAW_CONN_TOTAL:-?} client connections served." \
         "haproxy RSS max: $(mib "$HAPROXY_RSS_MAX") MiB."
} >"$WORK/report.md"

mkdir -p bench/results
OUT="bench/results/relay-$DATE.md"
[ -e "$OUT" ] && OUT="bench/results/relay-$(date -u +%Y-%m-%dT%H%M%SZ).md"
cp "$WORK/report.md" "$OUT"
cat "$WORK/report.md"
log "written to $OUT"
