#!/usr/bin/env bash
# CI smoke of the fuzz targets (fuzz/): each target runs for a short, bounded time on
# its seed corpus. Needs the nightly toolchain and cargo-fuzz; without them it says why
# and exits 0, so a machine without nightly never fails CI for it.
#
#   scripts/fuzz-smoke.sh [SECONDS_PER_TARGET]   (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-20}"
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz smoke SKIPPED: no nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz smoke SKIPPED: cargo-fuzz is not installed (cargo install cargo-fuzz)"
    exit 0
fi

targets=$(cargo +nightly fuzz list)
cargo +nightly fuzz build -O
for target in $targets; do
    echo "fuzz smoke: $target for ${seconds}s"
    # The seed corpus is read from fuzz/corpus/<target>; new finds go to a scratch
    # directory so the smoke never changes the committed corpus.
    scratch=$(mktemp -d)
    log="$scratch/log"
    status=0
    cargo +nightly fuzz run -O "$target" "$scratch" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?
    grep -E '^stat::number_of_executed_units' "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 40 "$log"
        rm -rf "$scratch"
        echo "fuzz smoke: $target FAILED (crash input under fuzz/artifacts/$target)"
        exit "$status"
    fi
    rm -rf "$scratch"
done
echo "fuzz smoke: all targets ran clean"
