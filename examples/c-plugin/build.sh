#!/usr/bin/env bash
# Builds the C least-connections picker into a component:
#   target/example-plugins/least-conn-c.wasm
# Installs its toolchain first if it is missing, all from Debian packages:
# clang-16 and lld-16 (compiler and wasm-ld), wasi-libc (the C library for
# wasm32-wasi) and libclang-rt-16-dev-wasm32 (compiler builtins). The bindings
# and the component come from tools/c-component (wit-bindgen's C generator and
# wit-component with the WASI adapter, as Rust crates). Skips the build when
# the component is newer than its sources.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$root/target/example-plugins/least-conn-c.wasm"
source "$root/scripts/c-toolchain.sh"

if [[ -f "$out" && "$out" -nt "$here/least_conn.c" && "$out" -nt "$root/wit/picker.wit" \
    && "$out" -nt "$root/tools/c-component/src/main.rs" ]]; then
    echo "c-plugin: $out is up to date"
    exit 0
fi
mkdir -p "$(dirname "$out")"
build_c_picker "$out" "$here/least_conn.c"
echo "c-plugin: wrote $out ($(du -h "$out" | cut -f1))"
