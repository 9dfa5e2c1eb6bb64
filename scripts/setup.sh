#!/usr/bin/env bash
# Installs what building and testing veer needs on a bare machine: the Rust
# toolchain pinned in rust-toolchain.toml with the wasm32-wasip2 target.
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

