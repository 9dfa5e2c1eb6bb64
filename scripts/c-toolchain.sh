# Sourced by the build scripts of C pickers (examples/c-plugin/build.sh and
# what `veer plugin new NAME --lang c` writes). Needs $root, a veer checkout.
#
# build_c_picker OUT SOURCE...: installs the toolchain if it is missing (all
# Debian packages: clang-16, lld-16 for wasm-ld, wasi-libc, and
# libclang-rt-16-dev-wasm32 for the compiler builtins), builds
# veer-c-component (wit-bindgen's C generator and wit-component with the WASI
# adapter, as Rust crates; $VEER_C_COMPONENT names one already built), writes the bindings of wit/picker.wit, compiles the
# sources with them for wasm32-wasi as a reactor (a library: no main) and
# wraps the core module into the component OUT.

c_toolchain_install() {
    local missing=()
    command -v clang-16 >/dev/null 2>&1 || missing+=(clang-16)
    command -v wasm-ld-16 >/dev/null 2>&1 || missing+=(lld-16)
    [[ -f /usr/lib/wasm32-wasi/libc.a ]] || missing+=(wasi-libc)
    [[ -f /usr/lib/llvm-16/lib/clang/16/lib/wasi/libclang_rt.builtins-wasm32.a ]] || missing+=(libclang-rt-16-dev-wasm32)
    if [[ ${#missing[@]} -eq 0 ]]; then
        return
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "c-toolchain: a C picker needs the Debian packages ${missing[*]}, and apt-get is not available" >&2
        return 1
    fi
    echo "c-toolchain: installing Debian packages: ${missing[*]}"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}") >/dev/null
}

build_c_picker() {
    local out="$1"
    shift
    c_toolchain_install
    local tool="${VEER_C_COMPONENT:-}"
    if [[ -z "$tool" ]]; then
        echo "c-toolchain: building veer-c-component (cargo)"
        (cd "$root" && cargo build --locked --quiet -p veer-c-component)
        tool="$root/target/debug/veer-c-component"
    fi
    local work
    work="$root/target/c-build/$(basename "$out" .wasm)"
    mkdir -p "$work"
    "$tool" bindings --wit "$root/wit" --out "$work/bindings" >/dev/null
    # --sysroot=/usr: Debian's wasi-libc lives in /usr/include/wasm32-wasi and
    # /usr/lib/wasm32-wasi. -mexec-model=reactor: a library, not a command.
    clang-16 --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor -O2 -std=c11 \
        -Wall -Wextra -Werror -Wl,--strip-debug -I"$work/bindings" -o "$work/core.wasm" \
        "$@" "$work/bindings/picker.c" "$work/bindings/picker_component_type.o"
    "$tool" componentize "$work/core.wasm" --output "${out}.tmp" >/dev/null
    mv "${out}.tmp" "$out"
}
