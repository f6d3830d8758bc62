#!/usr/bin/env bash
# Run each cargo-fuzz target in fuzz/ for a fixed time budget.
#
#   bash scripts/fuzz.sh                 # every target, 60 s each
#   FUZZ_SECONDS=300 bash scripts/fuzz.sh plan loaders
#
# Environment:
#   FUZZ_SECONDS    budget per target in seconds (default 60)
#   FUZZ_JOBS       fuzzing processes per target (default 1; more uses -fork)
#   FUZZ_SANITIZER  none (default: thaw has no unsafe code) or address
#   FUZZ_TARGET_DIR cargo target dir for the fuzz build (default fuzz/target)
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Each target starts from its committed seeds (fuzz/seeds/<target>/, written
# by `THAW_WRITE_FUZZ_SEEDS=1 cargo test --test fuzz_smoke write_seed_corpus`)
# plus what earlier runs found (fuzz/corpus/<target>/, not committed). A
# crash stops the script with a non-zero status; the input is in
# fuzz/artifacts/<target>/, and `cargo +nightly fuzz run <target> <file>`
# replays it. The stable, seconds-long version of the same inputs runs in
# `cargo test` (tests/fuzz_smoke.rs).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/fuzz"

SECONDS_EACH="${FUZZ_SECONDS:-60}"
JOBS="${FUZZ_JOBS:-1}"
SANITIZER="${FUZZ_SANITIZER:-none}"
TARGET_DIR="${FUZZ_TARGET_DIR:-$ROOT/fuzz/target}"
ALL=(packets response plan loaders compressed)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${ALL[@]}"); fi

command -v cargo-fuzz >/dev/null 2>&1 || { echo "cargo-fuzz missing: cargo install cargo-fuzz" >&2; exit 1; }
rustup run nightly rustc --version >/dev/null 2>&1 || { echo "no nightly toolchain: rustup toolchain install nightly" >&2; exit 1; }

# Debug assertions and overflow checks on (the default without -O).
echo "==> cargo +nightly fuzz build (sanitizer: $SANITIZER)"
cargo +nightly fuzz build -s "$SANITIZER" --target-dir "$TARGET_DIR"
parallel=()
if [ "$JOBS" -gt 1 ]; then parallel=(-fork="$JOBS"); fi
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    echo "==> fuzz $t for ${SECONDS_EACH}s"
    cargo +nightly fuzz run -s "$SANITIZER" --target-dir "$TARGET_DIR" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$SECONDS_EACH" "${parallel[@]}" \
        -max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/"
done
echo "==> no crash in: ${targets[*]}"
