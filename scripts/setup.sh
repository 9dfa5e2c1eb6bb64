#!/usr/bin/env bash
# Installs what building and testing veer needs on a bare machine: the Rust
# toolchain pinned in rust-toolchain.toml with the wasm32-wasip2 target, and
# promtool for the metrics test.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v rustup >/dev/null 2>&1; then
    if [[ -x "$HOME/.cargo/bin/rustup" ]]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    elif command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing rustup from Debian packages"
        apt-get update -qq && apt-get install -y -qq rustup >/dev/null
    else
        echo "setup: rustup is required (https://rustup.rs) and could not be installed" >&2
        exit 1
    fi
fi

# rust-toolchain.toml names the toolchain, its components and the wasm target.
rustup toolchain install >/dev/null 2>&1 || rustup show active-toolchain >/dev/null
rustup target add wasm32-wasip2 >/dev/null
echo "setup: $(rustc --version), targets: $(rustup target list --installed | tr '\n' ' ')"

# promtool (Debian package `prometheus`): the metrics test checks /metrics with it.
if ! command -v promtool >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing promtool (Debian package prometheus)"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) >/dev/null
    else
        echo "setup: promtool is required by the tests and apt-get is not available" >&2
        exit 1
    fi
fi
echo "setup: $(promtool --version 2>&1 | head -1)"
