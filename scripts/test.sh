#!/usr/bin/env bash
# The test command: formatting, lints (warnings are errors) and every test in
# the workspace (unit, plugin-native, plugin-through-Wasm, conformance and
# end-to-end), after building the Python and JavaScript example plugins.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

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

# The Python h2 package: the HTTP/2 hostile-client test frames its attacks with it.
if ! python3 -c 'import h2' >/dev/null 2>&1; then
    echo "setup: installing the Python package h2 (PyPI)"
    python3 -m pip install --quiet --disable-pip-version-check 'h2>=4,<5'
fi
echo "setup: python h2 $(python3 -c 'import h2; print(h2.__version__)')"

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
echo "== cargo doc (warnings are errors: every public item documented, every link resolved)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
echo "== cargo test"
cargo test --workspace --locked
