#!/usr/bin/env bash
# The wasm kernel's benchmark (docs/benchmarks.md): builds the example renderer to
# WebAssembly and natively (clang, wasi-libc, lld: `scripts/test.sh --packages`) and an
# empty C program, then runs kernels/examples/wasm_bench.rs on them.
#
#   scripts/bench-wasm.sh                 # 8 frames of 640x480, 2000 chunks
#   scripts/bench-wasm.sh --frames 4 --size 320x240 --chunks 500
set -euo pipefail
cd "$(dirname "$0")/.."
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
src=examples/wasm/render/render.c
clang --target=wasm32-wasi -O2 -ffp-contract=off "$src" -o "$dir/render.wasm"
clang -O2 -ffp-contract=off "$src" -o "$dir/render-native" -lm
printf 'int main(void) { return 0; }\n' > "$dir/empty.c"
clang --target=wasm32-wasi -O2 "$dir/empty.c" -o "$dir/empty.wasm"
cargo run --release -q -p idlegrid-kernels --example wasm_bench -- \
    "$dir/render.wasm" "$dir/render-native" "$dir/empty.wasm" "$@"
