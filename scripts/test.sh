#!/usr/bin/env bash
# The README's second command: installs the Debian packages the tests need (when it can),
# says what it installed or what is missing, then runs the whole test suite.
#
#   scripts/test.sh                 # then: cargo test --release --workspace
#   scripts/test.sh -- FILTER       # extra arguments go to cargo test
#   scripts/test.sh --packages      # only the packages (CI, before it builds anything)
#
# What the packages are for:
#   nasm      OpenH264's assembly (without it the video encoder builds as plain C, 2-3x slower)
#   ffmpeg    ffprobe and ffmpeg check the MP4s in the video tests
#   iproute2  network namespaces for the mDNS, fault-suite and NAT tests (run as root)
#   iptables  the NAT tests' routers (MASQUERADE)
#   clang lld wasi-libc libclang-rt-dev-wasm32
#             build the WebAssembly examples (examples/wasm) for the wasm kernel's tests
#   chromium  the web page's tests drive a headless browser (they fail under CI=true without it)
# Without root or sudo nothing is installed: the script names what is missing and runs
# the tests anyway (the root-only tests skip with a printed reason; the video tests that
# need ffprobe fail and say so).
set -euo pipefail
cd "$(dirname "$0")/.."

# command that proves each package is there, and the package that provides it
# (a path, or a glob, instead of a command: such a file must exist)
needs=(nasm:nasm ffprobe:ffmpeg ip:iproute2 iptables:iptables chromium:chromium clang:clang
    wasm-ld:lld /usr/lib/wasm32-wasi/crt1-command.o:wasi-libc
    /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a:libclang-rt-dev-wasm32)
missing=()
for need in "${needs[@]}"; do
    what="${need%%:*}"
    if [[ "$what" == /* ]]; then
        compgen -G "$what" >/dev/null || missing+=("${need#*:}")
    else
        command -v "$what" >/dev/null 2>&1 || missing+=("${need#*:}")
    fi
done

if [ ${#missing[@]} -gt 0 ]; then
    sudo=()
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo=(sudo)
    fi
    if [ "$(id -u)" = 0 ] || [ ${#sudo[@]} -gt 0 ]; then
        if command -v apt-get >/dev/null 2>&1; then
            echo "test.sh: installing ${missing[*]} (apt-get)"
            "${sudo[@]}" apt-get update -qq
            DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
            echo "test.sh: installed ${missing[*]}"
            if [[ " ${missing[*]} " == *" nasm "* ]] && [ -d target/release/build ] \
                && ls -d target/release/build/openh264-sys2-* >/dev/null 2>&1; then
                # openh264-sys2 decided at its first build that there was no nasm, and cargo
                # keeps that build: rebuild it so the encoder gets its assembly.
                echo "test.sh: rebuilding openh264-sys2 with nasm"
                cargo clean --release -p openh264-sys2
            fi
        else
            echo "test.sh: missing ${missing[*]}, and no apt-get to install them with" >&2
        fi
    else
        echo "test.sh: missing ${missing[*]}: run as root or with sudo to install them," >&2
        echo "         or: sudo apt-get install ${missing[*]}" >&2
    fi
else
    echo "test.sh: the test packages are installed (nasm, ffmpeg, iproute2, iptables, chromium, clang, lld, wasi-libc, libclang-rt-dev-wasm32)"
fi

if [ "${1:-}" = "--packages" ]; then exit 0; fi
if [ "${1:-}" = "--" ]; then shift; fi

# cargo prints one summary per test binary; the sum of them closes the run, and is kept
# in target/test-summary.txt for .ci/run to repeat at its end.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --release --workspace "$@" 2>&1 | tee "$log" || status=$?
summary="$(awk '/^test result:/ {
        for (i = 1; i <= NF; i++) {
            if ($(i + 1) ~ /^passed/) passed += $i
            if ($(i + 1) ~ /^failed/) failed += $i
        }
    } END { printf "%d passed, %d failed\n", passed, failed }' "$log")"
mkdir -p target
echo "$summary" > target/test-summary.txt
echo
echo "$summary"
exit "$status"
