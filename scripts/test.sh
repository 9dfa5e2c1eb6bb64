#!/usr/bin/env bash
# The test command: formatting, lints (warnings are errors) and every test in
# the workspace (unit, plugin-native, plugin-through-Wasm, conformance and
# end-to-end), after building the Python and JavaScript example plugins.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

# The Python and JavaScript example plugins: their build scripts install the
# pinned toolchains (componentize-py from PyPI, jco from npm) and
# write the components the conformance and end-to-end tests load. The tests
# fail, not skip, without them.
echo "== example plugins in Python and JavaScript"
bash examples/python-plugin/build.sh
bash examples/js-plugin/build.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (-D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
