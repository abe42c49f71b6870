#!/usr/bin/env bash
# Times the Rust `change` kernel and the numpy reference side by side on the same pairs
# and prints both times and the ratio.
#
#   scripts/bench-change.sh                      # synthetic 512² pair + SZTAKI Szada-1 + Ottawa
#   scripts/bench-change.sh BEFORE AFTER         # one pair of your own
#   METHOD=icm REPEAT=5 scripts/bench-change.sh  # another method / more repetitions
#
# The reference runs in the venv of shared/reference/change/run.sh (CD_REF_VENV, default
# $TMPDIR/cd_ref_venv; created from its requirements.txt if missing). Times are the best
# of REPEAT runs of the whole detection (difference image → mask) on decoded images; the
# Rust side is timed on one core as one band (like numpy) and on all cores in the default
# bands, and its mask is checked against the reference's SHA-256.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
ref="$here/../shared/reference/change"
data="$here/../shared/data/change"
METHOD="${METHOD:-sa}"
REPEAT="${REPEAT:-3}"
VENV="${CD_REF_VENV:-${TMPDIR:-/tmp}/cd_ref_venv}"
if ! "$VENV/bin/python" -c "import numpy, scipy, skimage, PIL" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r "$ref/requirements.txt"
fi
cargo build --release -q -p idlegrid-kernels --example change_bench
bench="$here/target/release/examples/change_bench"
case "$METHOD" in
  sa) refm=sa ;; icm) refm=icm_em ;; otsu) refm=otsu ;; bayes) refm=bayes_doc ;; doc_literal) refm=doc_literal ;;
  *) echo "unknown METHOD $METHOD" >&2; exit 2 ;;
esac
if [ $# -eq 2 ]; then
  pairs=("$1|$2")
else
  pairs=("$here/kernels/tests/fixtures/synth_t1.png|$here/kernels/tests/fixtures/synth_t2.png"
         "$data/sztaki/Szada-1/im1.png|$data/sztaki/Szada-1/im2.png"
         "$data/ottawa/im1.png|$data/ottawa/im2.png")
fi
cores="$(nproc)"
# key=value field of a change_bench line
field() { tr ' ' '\n' | sed -n "s/^$1=//p"; }
printf '%-22s %8s | %9s %9s | %9s %9s | %9s %9s | %7s %7s %7s | %s\n' pair pixels \
  "numpy wall" "numpy cpu" "rust wall" "rust cpu" "rust ${cores}c" "" "x wall" "x cpu" "x ${cores}c" "same mask"
for p in "${pairs[@]}"; do
  a="${p%%|*}"; b="${p##*|}"
  read -r npix tref cref sha < <("$VENV/bin/python" - "$ref" "$a" "$b" "$refm" "$REPEAT" <<'PY'
import sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
from PIL import Image
import cdref, run_benchmark
A = np.asarray(Image.open(sys.argv[2])); B = np.asarray(Image.open(sys.argv[3]))
p = run_benchmark.METHODS[sys.argv[4]]
n = int(sys.argv[5])
best = float("inf")
c0 = time.process_time()
for _ in range(n):
    t = time.perf_counter(); mask, _ = cdref.detect(A, B, p); best = min(best, time.perf_counter() - t)
cpu = (time.process_time() - c0) / n
print(mask.size, best, cpu, cdref.sha256(mask))
PY
)
  one="$("$bench" "$a" "$b" --method "$METHOD" --threads 1 --repeat "$REPEAT" | grep one-band)"
  all="$("$bench" "$a" "$b" --method "$METHOD" --threads "$cores" --repeat "$REPEAT" | grep ' bands ')"
  t1="$(field wall <<<"$one")"; c1="$(field cpu <<<"$one")"; s1="$(field mask <<<"$one")"
  tn="$(field wall <<<"$all")"; sn="$(field mask <<<"$all")"
  same=no; [ "$s1" = "$sha" ] && [ "$sn" = "$sha" ] && same=yes
  name="$(basename "$(dirname "$a")")/$(basename "$a")"
  awk -v n="$name" -v p="$npix" -v r="$tref" -v rc="$cref" -v a="$t1" -v ac="$c1" -v b="$tn" -v s="$same" \
    'BEGIN { printf "%-22s %8d | %9.4f %9.4f | %9.4f %9.4f | %9.4f %9s | %7.1f %7.1f %7.1f | %s\n", n, p, r, rc, a, ac, b, "", r / a, rc / ac, r / b, s }'
done
echo "times in seconds; numpy and rust wall = best of $REPEAT, cpu = mean CPU time per run on one core;"
echo "rust ${cores}c = wall time on $cores threads in the default bands; x = numpy / rust"
