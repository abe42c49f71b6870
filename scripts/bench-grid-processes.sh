#!/usr/bin/env bash
# The change kernel's speed-up from a second peer, as a user gets it: real `idlegrid`
# processes on this machine, talking over loopback TCP (Noise + Yamux).
#
#   scripts/bench-grid-processes.sh                  # 6144x6144 pair, bands of 256 rows, 5 rounds
#   SIZE=8192x8192 BAND_ROWS=512 REPEAT=3 scripts/bench-grid-processes.sh
#   PIN=1 scripts/bench-grid-processes.sh            # each peer on a CPU of its own
#
# Each round runs the same job twice with a fresh data dir each time:
#   1 peer:  `idlegrid change BEFORE AFTER --cores 1` with nobody else around;
#   2 peers: the same with `--peer` naming a fresh `idlegrid serve --cores 1` on loopback.
# and prints the job's time from each `--report` (`elapsed_seconds`: discovery, probes,
# benchmarks and the chunks, not the image decoding before it), the ratio, who computed
# how many chunks, and whether the two masks are the same bytes. Every round uses its own
# seed, so no peer can answer from an earlier round. The last line is the median ratio.
#
# With PIN=1 each peer is a one-core machine: the submitter (alone and with the worker)
# runs on CPU 0 only and the worker on CPU 1 only (`taskset`), its network, hashing and
# compute threads alike, as on two one-core machines of a LAN. Without it, `--cores 1`
# limits each peer's compute threads to one, and everything else of both peers runs on
# whichever CPU is free.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
SIZE="${SIZE:-6144x6144}"
BAND_ROWS="${BAND_ROWS:-256}"
REPEAT="${REPEAT:-5}"
PIN="${PIN:-0}"
# taskset execs the program it is given, so a background job's $! is the peer itself
# and killing it leaves nothing behind.
cpu0=()
cpu1=()
if [ "$PIN" = 1 ]; then
    cpu0=(taskset -c 0)
    cpu1=(taskset -c 1)
fi

cargo build --release -q -p idlegrid --manifest-path "$here/Cargo.toml"
bin="$here/target/release/idlegrid"
work="$(mktemp -d "${TMPDIR:-/tmp}/idlegrid-bench-grid.XXXXXX")"
worker_pid=""
cleanup() {
    if [ -n "$worker_pid" ]; then
        kill "$worker_pid" 2>/dev/null || true
        wait "$worker_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$bin" change --write-sample --sample-size "$SIZE" "$work/before.png" "$work/after.png" >/dev/null
common=(--band-rows "$BAND_ROWS" --cores 1 --no-mdns)
ratios=()
for round in $(seq 1 "$REPEAT"); do
    seed=$((1000 + round))
    rm -rf "$work/one" "$work/two" "$work/worker"
    "${cpu0[@]}" "$bin" change "$work/before.png" "$work/after.png" -o "$work/one.png" "${common[@]}" \
        --seed "$seed" --data-dir "$work/one" --report "$work/one.json" >/dev/null 2>&1

    "${cpu1[@]}" "$bin" serve --cores 1 --no-mdns --normal-priority --listen /ip4/127.0.0.1/tcp/0 \
        --data-dir "$work/worker" >"$work/worker.log" 2>&1 &
    worker_pid=$!
    addr=""
    for _ in $(seq 1 200); do
        addr="$(awk '/^  listening on \/ip4\/127.0.0.1\/tcp\// {print $3; exit}' "$work/worker.log")"
        [ -n "$addr" ] && break
        sleep 0.05
    done
    if [ -z "$addr" ]; then
        echo "the worker did not start:" >&2
        cat "$work/worker.log" >&2
        exit 1
    fi
    "${cpu0[@]}" "$bin" change "$work/before.png" "$work/after.png" -o "$work/two.png" "${common[@]}" \
        --seed "$seed" --data-dir "$work/two" --peer "$addr" --report "$work/two.json" >/dev/null 2>&1
    kill "$worker_pid"
    wait "$worker_pid" 2>/dev/null || true
    worker_pid=""

    ratio="$(python3 - "$work/one.json" "$work/two.json" <<'EOF'
import json, sys
one, two = (json.load(open(p)) for p in sys.argv[1:3])
shares = ", ".join(f"{p['role']} {p['chunks_done']}" for p in two["peers"])
same = "same mask" if one["output_blake3"] == two["output_blake3"] else "MASKS DIFFER"
ratio = one["elapsed_seconds"] / two["elapsed_seconds"]
print(f"1 peer {one['elapsed_seconds']:.2f} s -> 2 peers {two['elapsed_seconds']:.2f} s: "
      f"{ratio:.2f}x (dispatch {one['dispatch_seconds']:.2f} -> {two['dispatch_seconds']:.2f} s: "
      f"{one['dispatch_seconds'] / two['dispatch_seconds']:.2f}x; chunks: {shares}; {same})",
      file=sys.stderr)
if one["output_blake3"] != two["output_blake3"]:
    sys.exit(1)
print(f"{ratio:.3f}")
EOF
)"
    ratios+=("$ratio")
done
median="$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}')"
echo "change kernel, $SIZE, bands of $BAND_ROWS rows, real processes$([ "$PIN" = 1 ] && echo ", one CPU each"): median speed-up of 2 peers over 1: ${median}x over $REPEAT rounds (target >= 1.8)"
