#!/usr/bin/env bash
# Sets up, builds and runs the demo: three simulated backends with different
# profiles and veer on 127.0.0.1:8080 routing with builtin:p2c-ewma. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
exec cargo run -q -p veer -- demo "$@"
