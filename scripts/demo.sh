#!/usr/bin/env bash
# Sets up, builds and runs the demo: three simulated backends with different
# profiles and veer on 127.0.0.1:8080 routing with builtin:p2c-ewma. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
if [[ ! -x target/debug/veer ]]; then
    echo "demo: first build: about 10 to 15 minutes on 2 cores (wasmtime and the built-in"
    echo "demo: pickers compile once; later builds take seconds). cargo shows each crate below."
fi
echo "demo: building veer"
# Not quiet: a long build must show that it is moving.
cargo build -p veer
exec target/debug/veer demo "$@"
