#!/usr/bin/env bash
# The compressed protocol: a 1 GiB result read by the mysql CLI, direct with
# --compress vs through thaw with the backend leg compressed (the app plain
# on loopback), in one run on one machine. Two reference paths run with
# them: direct without compression, and through thaw with both legs
# compressed (the app asking for --compress, backend_compression: as_client).
#
#   bash bench/compress.sh         # ~2 minutes per round on 2 cores
#
# Environment (defaults in brackets):
#   DB_HOST [127.0.0.1]  DB_PORT [3306]  DB_USER [root]  DB_PASSWORD []
#   ROWS [1760000]       rows of the result (about 612 bytes each on the wire: just over 1 GiB)
#   ROUNDS [1]           rounds of all paths, order rotated each round; the report
#                        gives the median per path (use 3 on a shared machine)
#   PATHS ["direct-compressed thaw-backend direct-plain thaw-both"]
#   THAW_BIN [target/release/thaw, built with `cargo build --release --locked`]
#
# Loopback has no bandwidth limit, so the times show what compression costs
# in CPU (the server's deflate, the client's or thaw's inflate), not what it
# saves on a slow link; the bytes on the wire are in the report too.
# Prints a markdown table and writes it with the machine and the date to
# bench/results/compress-<date>.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DB_HOST="${DB_HOST:-127.0.0.1}"
DB_PORT="${DB_PORT:-3306}"
DB_USER="${DB_USER:-root}"
DB_PASSWORD="${DB_PASSWORD:-}"
ROWS="${ROWS:-1760000}"
ROUNDS="${ROUNDS:-1}"
PATHS="${PATHS:-direct-compressed thaw-backend direct-plain thaw-both}"

die() { printf 'compress.sh: %s\n' "$*" >&2; exit 1; }
log() { printf '==> [%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

command -v mysql >/dev/null 2>&1 || die "needs the mysql CLI (apt package mariadb-client)"
if [ -z "${THAW_BIN:-}" ]; then
    log "cargo build --release --locked"
    cargo build --release --locked >&2
    THAW_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/thaw"
fi
[ -x "$THAW_BIN" ] || die "no thaw binary at $THAW_BIN"

cli() { MYSQL_PWD="$DB_PASSWORD" mysql --protocol=TCP -h"$1" -P"$2" -u"$DB_USER" "${@:3}"; }
cli "$DB_HOST" "$DB_PORT" -N -B -e 'SELECT 1' >/dev/null || die "MariaDB does not answer on $DB_HOST:$DB_PORT"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

WORK="$(mktemp -d /tmp/thaw-bench-compress.XXXXXX)"
THAW_PID="" SAMPLER_PID=""
cleanup() {
    for pid in "$SAMPLER_PID" "$THAW_PID"; do
        if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# One thaw serves both thaw paths: an app without --compress gets a plain
# leg and a compressed backend leg (preferred); one with it, both legs.
THAW_PORT="$(free_port)"; THAW_ADMIN="$(free_port)"
mkdir -p "$WORK/rules"
printf 'backend_compression: preferred\n' >"$WORK/thaw.yaml"
log "thaw $THAW_BIN on 127.0.0.1:$THAW_PORT (backend_compression: preferred)"
THAW_LOG=info "$THAW_BIN" run --listen "127.0.0.1:$THAW_PORT" --admin "127.0.0.1:$THAW_ADMIN" \
    --backend "$DB_HOST:$DB_PORT" --rules "$WORK/rules" --config "$WORK/thaw.yaml" >"$WORK/thaw.log" 2>&1 &
THAW_PID=$!
wait_port "$THAW_PORT" || { cat "$WORK/thaw.log" >&2; die "thaw did not listen"; }

# ~640 bytes a row on the wire, about a third of that after zlib: hashes,
# a JSON-ish column, and repetitive text, like many real tables.
QUERY="SELECT seq, MD5(seq),
  CONCAT('{\"customer\": ', seq MOD 9973, ', \"status\": \"', ELT(1 + seq MOD 4, 'open', 'paid', 'shipped', 'cancelled'),
         '\", \"amount\": ', ROUND(seq * 7.31 MOD 10000, 2), ', \"sku\": \"', CONV(seq * 2654435761 MOD 4294967296, 10, 36), '\"}'),
  SHA2(seq, 512), SHA2(seq, 384),
  CONCAT_WS(' ', ELT(1 + seq MOD 7, 'alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf'),
            ELT(1 + seq MOD 11, 'red', 'green', 'blue', 'amber', 'violet', 'cyan', 'black', 'white', 'grey', 'pink', 'teal'),
            'street', seq MOD 977, 'city', seq MOD 313,
            REPEAT(CONCAT(ELT(1 + seq MOD 5, 'order received', 'payment captured', 'label printed', 'handed to carrier', 'delivered'),
                          ' at ', FROM_UNIXTIME(1700000000 + seq * 37), '; '), 6))
FROM seq_1_to_$ROWS"

rss_kib() { ps -o rss= -p "$1" | tr -d ' '; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
sample_rss() { while kill -0 "$1" 2>/dev/null; do rss_kib "$1"; sleep 0.5; done >"$2"; }
metric() { curl -fsS "http://127.0.0.1:$THAW_ADMIN/metrics" | awk -v s="$1" '$1 == s { print $2; f = 1 } END { if (!f) print 0 }'; }
TICKS="$(getconf CLK_TCK)"
MYSQLD_PID="$(pgrep -o -x mariadbd || pgrep -o -x mysqld || true)"
LOADAVG_START="$(cut -d' ' -f1-3 /proc/loadavg)"
THAW_RSS_IDLE="$(rss_kib "$THAW_PID")"

# One path: prints "seconds bytes_out thaw_cpu_pct thaw_rss_max_kib server_cpu_pct
# backend_wire backend_plain client_wire client_plain".
run_one() { # path
    local host port flags=()
    case $1 in
        direct-plain) host="$DB_HOST"; port="$DB_PORT" ;;
        direct-compressed) host="$DB_HOST"; port="$DB_PORT"; flags=(--compress) ;;
        thaw-backend) host=127.0.0.1; port="$THAW_PORT" ;;
        thaw-both) host=127.0.0.1; port="$THAW_PORT"; flags=(--compress) ;;
        *) die "unknown path $1" ;;
    esac
    local m0=() m1=() t0 t1 s0=0 s1=0 start end bytes rssmax=-
    for k in backend,in client,out; do
        m0+=("$(metric "thaw_compressed_wire_bytes_total{leg=\"${k%,*}\",direction=\"${k#*,}\"}")"
             "$(metric "thaw_compressed_plain_bytes_total{leg=\"${k%,*}\",direction=\"${k#*,}\"}")")
    done
    t0="$(cpu_ticks "$THAW_PID")"
    [ -n "$MYSQLD_PID" ] && s0="$(cpu_ticks "$MYSQLD_PID")"
    sample_rss "$THAW_PID" "$WORK/rss-$1" & SAMPLER_PID=$!
    start="$(date +%s.%N)"
    bytes="$(cli "$host" "$port" "${flags[@]}" --quick -N -B --raw test -e "$QUERY" | wc -c)"
    end="$(date +%s.%N)"
    kill "$SAMPLER_PID" 2>/dev/null || true; wait "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=""
    t1="$(cpu_ticks "$THAW_PID")"
    [ -n "$MYSQLD_PID" ] && s1="$(cpu_ticks "$MYSQLD_PID")"
    for k in backend,in client,out; do
        m1+=("$(metric "thaw_compressed_wire_bytes_total{leg=\"${k%,*}\",direction=\"${k#*,}\"}")"
             "$(metric "thaw_compressed_plain_bytes_total{leg=\"${k%,*}\",direction=\"${k#*,}\"}")")
    done
    case $1 in thaw-*) rssmax="$(sort -n "$WORK/rss-$1" | tail -1)" ;; esac
    awk -v a="$start" -v b="$end" -v n="$bytes" -v c0="$t0" -v c1="$t1" -v s0="$s0" -v s1="$s1" -v hz="$TICKS" \
        -v rss="$rssmax" -v p="$1" -v bw="$(( ${m1[0]%.*} - ${m0[0]%.*} ))" -v bp="$(( ${m1[1]%.*} - ${m0[1]%.*} ))" \
        -v cw="$(( ${m1[2]%.*} - ${m0[2]%.*} ))" -v cp="$(( ${m1[3]%.*} - ${m0[3]%.*} ))" 'BEGIN {
        s = b - a
        tc = (p ~ /^thaw/) ? sprintf("%.0f", 100 * (c1 - c0) / hz / s) : "-"
        printf "%.2f %d %s %s %.0f %d %d %d %d\n", s, n, tc, rss, 100 * (s1 - s0) / hz / s, bw, bp, cw, cp }'
}

# Rows: round path seconds bytes_out thaw_cpu thaw_rss server_cpu bw bp cw cp
RUNS="$WORK/runs.tsv"
: >"$RUNS"
read -r -a paths <<<"$PATHS"
log "warm-up: 100000 rows direct"
cli "$DB_HOST" "$DB_PORT" --quick -N -B --raw test -e "${QUERY/seq_1_to_$ROWS/seq_1_to_100000}" >/dev/null
for round in $(seq 1 "$ROUNDS"); do
    for i in $(seq 0 $(( ${#paths[@]} - 1 ))); do
        p="${paths[$(( (i + round - 1) % ${#paths[@]} ))]}"
        log "round $round/$ROUNDS: $ROWS rows via $p"
        res="$(run_one "$p")"
        printf '%s\t%s\t%s\n' "$round" "$p" "$(tr ' ' '\t' <<<"$res")" >>"$RUNS"
        log "  -> seconds bytes thaw_cpu% thaw_rss_kib server_cpu% backend_wire backend_plain client_wire client_plain: $res"
    done
done
THAW_RSS_AFTER="$(rss_kib "$THAW_PID")"

# ------------------------------------------------------------------ report
DATE="$(date -u +%Y-%m-%d)"
STAMP="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
CPU_MODEL="$(lscpu 2>/dev/null | awk -F: '/Model name/ {gsub(/^[ \t]+/, "", $2); print $2; exit}')"
RAM_GIB="$(awk '/MemTotal/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)"
REV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet -- src Cargo.toml Cargo.lock 2>/dev/null || echo '+dirty')"
MARIADB="$(cli "$DB_HOST" "$DB_PORT" -N -B -e 'SELECT VERSION()')"
{
    echo "## Compression: a 1 GiB result, direct --compress vs through thaw with a compressed backend leg"
    echo
    echo "- date: $STAMP"
    echo "- machine: $(nproc) cores, $CPU_MODEL, ${RAM_GIB} GiB RAM, $(uname -sr)"
    echo "- load average at the start: $LOADAVG_START, at the end: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared: other work may have run meanwhile)"
    echo "- MariaDB $MARIADB on $DB_HOST:$DB_PORT (same machine, loopback: no bandwidth limit); client: mysql CLI $(mysql --version | awk '{print $5}' | tr -d ,) --quick -N -B --raw, output counted by wc -c"
    echo "- thaw: $THAW_BIN at $REV, backend_compression: preferred, compression_level 6; $ROWS rows, $ROUNDS round(s), path order rotated each round"
    echo
    python3 - "$RUNS" "$ROUNDS" <<'PYEOF'
import statistics, sys
runs = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
rounds = int(sys.argv[2])
order = ["direct-compressed", "thaw-backend", "direct-plain", "thaw-both"]
paths = [p for p in order if any(r[1] == p for r in runs)]
legs = {"direct-plain": "none", "direct-compressed": "app-server", "thaw-backend": "thaw-server", "thaw-both": "app-thaw, thaw-server"}
med = lambda v: statistics.median(v) if v else float("nan")
def col(p, i):
    return [float(r[i]) for r in runs if r[1] == p and r[i] not in ("-", "")]
agg = f"median of {rounds}" if rounds > 1 else "one run"
print(f"| path | compressed legs | seconds ({agg}) | seconds per round | MiB/s of output | thaw CPU (% of one core) | thaw RSS max (MiB) | server CPU (%) | backend leg: wire / plain MiB |")
print("|---|---|---:|---|---:|---:|---:|---:|---|")
out_bytes = {p: col(p, 3) for p in paths}
for p in paths:
    s = col(p, 2)
    mbs = med([b / t for b, t in zip(col(p, 3), s)]) / 2**20
    tc, rss, sc = col(p, 4), col(p, 5), col(p, 6)
    bw, bp = col(p, 7), col(p, 8)
    wire = f"{med(bw) / 2**20:.0f} / {med(bp) / 2**20:.0f} ({med(bw) / med(bp):.2f})" if bp and med(bp) > 0 else "-"
    print(f"| {p} | {legs[p]} | {med(s):.1f} | {' / '.join(f'{v:.1f}' for v in s)} | {mbs:.0f} "
          f"| {f'{med(tc):.0f}' if tc else '-'} | {f'{max(rss) / 1024:.1f}' if rss else '-'} | {med(sc):.0f} | {wire} |")
sizes = {int(v) for vs in out_bytes.values() for v in vs}
print()
print(f"Output of every run: {', '.join(str(s) for s in sorted(sizes))} bytes"
      f"{' (identical on every path)' if len(sizes) == 1 else ' (DIFFERENT: a path returned another result)'}.")
if "direct-compressed" in paths and "thaw-backend" in paths:
    d, t = med(col("direct-compressed", 2)), med(col("thaw-backend", 2))
    print(f"thaw with a compressed backend leg / direct compressed: {t / d:.2f}x the time.")
PYEOF
    echo
    echo "thaw RSS (ps -o rss): $(awk -v k="$THAW_RSS_IDLE" 'BEGIN { printf "%.1f", k / 1024 }') MiB idle at start," \
         "$(awk -v k="$THAW_RSS_AFTER" 'BEGIN { printf "%.1f", k / 1024 }') MiB after the runs."
} >"$WORK/report.md"

mkdir -p bench/results
OUT="bench/results/compress-$DATE.md"
[ -e "$OUT" ] && OUT="bench/results/compress-$(date -u +%Y-%m-%dT%H%M%SZ).md"
cp "$WORK/report.md" "$OUT"
cat "$WORK/report.md"
log "written to $OUT"
