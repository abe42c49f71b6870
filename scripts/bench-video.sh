#!/usr/bin/env bash
# Benchmark of the video kernel (docs/benchmarks.md, "Video kernel"):
#
#  1. `idlegrid video --local` and ffmpeg (libx264 -preset veryfast -pix_fmt yuv420p, all
#     cores) encode the same generated frames: wall time, PSNR against the source (ffmpeg's
#     psnr filter, source converted to yuv420p) and file size of each;
#  2. the submitter's peak memory for joining JOIN_COPIES segments of 60 frames at the
#     frame size (one real segment joined again and again: 167 copies = 10,020 frames);
#  3. with FULL_FRAMES=N (e.g. 10000): a whole `idlegrid video --local` run over N frames
#     (links cycling through the generated frames) under /usr/bin/time: peak memory of
#     planning, hashing, encoding on all cores and joining together.
#
# Usage: scripts/bench-video.sh            (240 frames of 1920x1080)
#        FRAMES=120 SIZE=1280x720 scripts/bench-video.sh
#        FULL_FRAMES=10000 scripts/bench-video.sh
# Needs: ffmpeg (with libx264), GNU time (/usr/bin/time), nasm at build time.
set -euo pipefail

FRAMES=${FRAMES:-240}
SIZE=${SIZE:-1920x1080}
QP=${QP:-22}
FPS=${FPS:-30}
JOIN_COPIES=${JOIN_COPIES:-167}
FULL_FRAMES=${FULL_FRAMES:-0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/idlegrid-bench-video.XXXXXX")}
BIN="$ROOT/target/release/idlegrid"
JOIN="$ROOT/target/release/examples/video_join"

for tool in ffmpeg ffprobe /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install ffmpeg time)" >&2; exit 1; }
done
(cd "$ROOT" && cargo build --release -q -p idlegrid && cargo build --release -q -p idlegrid-kernels --example video_join)

frames="$WORK/frames-$SIZE-$FRAMES"
if [ ! -d "$frames" ]; then
    "$BIN" video "$frames" --write-sample "$FRAMES" --sample-size "$SIZE" >/dev/null
fi
cores=$(nproc)
echo "frames: $FRAMES of $SIZE (generated), QP $QP, $cores cores, work dir $WORK"

div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", a / b }'; }
# wall seconds and peak KiB of a command, from GNU time
timed() { /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >/dev/null 2>"$WORK/stderr" || { cat "$WORK/stderr" >&2; exit 1; }; cat "$WORK/time"; }
psnr() {
    ffmpeg -hide_banner -i "$1" -framerate "$FPS" -i "$frames/frame_%06d.png" \
        -lavfi "[1:v]format=yuv420p[ref];[0:v][ref]psnr" -f null - 2>&1 |
        sed -n 's/.*PSNR y:\([0-9.]*\) u:[0-9.]* v:[0-9.]* average:\([0-9.]*\).*/\2 \1/p' |
        awk '{ printf "%.2f (Y %.2f)", $1, $2 }'
}

read -r ig_s ig_kb < <(timed "$BIN" video "$frames" -o "$WORK/idlegrid.mp4" --local --qp "$QP" --fps "$FPS")
read -r ff_s ff_kb < <(timed ffmpeg -y -v error -framerate "$FPS" -i "$frames/frame_%06d.png" \
    -c:v libx264 -preset veryfast -pix_fmt yuv420p -threads 0 "$WORK/x264.mp4")
ig_frames=$(ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames -of csv=p=0 "$WORK/idlegrid.mp4")

printf '\n%-34s %9s %9s %22s %12s %10s\n' encoder "wall s" "fps" "PSNR dB avg (Y)" "size bytes" "peak MiB"
printf '%-34s %9s %9.1f %22s %12s %10d\n' "idlegrid video --local (QP $QP)" "$ig_s" \
    "$(div $FRAMES $ig_s)" "$(psnr "$WORK/idlegrid.mp4")" "$(stat -c %s "$WORK/idlegrid.mp4")" $((ig_kb / 1024))
printf '%-34s %9s %9.1f %22s %12s %10d\n' "ffmpeg libx264 veryfast (crf 23)" "$ff_s" \
    "$(div $FRAMES $ff_s)" "$(psnr "$WORK/x264.mp4")" "$(stat -c %s "$WORK/x264.mp4")" $((ff_kb / 1024))
printf 'idlegrid/ffmpeg wall time: %.2f; idlegrid frames in the MP4: %s of %s\n' \
    "$(div $ig_s $ff_s)" "$ig_frames" "$FRAMES"

# Join memory: one real 60-frame segment, joined JOIN_COPIES times.
seg_frames=$((FRAMES < 60 ? FRAMES : 60))
"$JOIN" encode "$frames" "$seg_frames" "$QP" "$WORK/segment.h264" >/dev/null
read -r j_s j_kb < <(timed "$JOIN" join "$WORK/segment.h264" "$seg_frames" "$JOIN_COPIES" "$SIZE" "$WORK/joined.mp4")
printf '\njoin of %d segments (%d frames of %s, %s bytes): %s s, peak %d MiB\n' "$JOIN_COPIES" \
    $((JOIN_COPIES * seg_frames)) "$SIZE" "$(stat -c %s "$WORK/joined.mp4")" "$j_s" $((j_kb / 1024))
rm -f "$WORK/joined.mp4"

if [ "$FULL_FRAMES" -gt 0 ]; then
    many="$WORK/many-$FULL_FRAMES"
    mkdir -p "$many"
    for ((i = 0; i < FULL_FRAMES; i++)); do
        ln -sf "$frames/$(printf 'frame_%06d.png' $((i % FRAMES)))" "$many/$(printf 'frame_%06d.png' "$i")"
    done
    read -r f_s f_kb < <(timed "$BIN" video "$many" -o "$WORK/full.mp4" --local --qp "$QP" --fps "$FPS")
    printf 'full run over %d frames of %s: %s s (%.1f fps), peak %d MiB, %s bytes\n' "$FULL_FRAMES" "$SIZE" \
        "$f_s" "$(div $FULL_FRAMES $f_s)" $((f_kb / 1024)) "$(stat -c %s "$WORK/full.mp4")"
    rm -rf "$many" "$WORK/full.mp4"
fi
echo "outputs in $WORK"
