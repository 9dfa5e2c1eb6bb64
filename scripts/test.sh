#!/usr/bin/env bash
# The test command: formatting, lints (warnings are errors) and every test in
# the workspace (unit, plugin-native, plugin-through-Wasm, conformance and
# end-to-end), after building the Python and JavaScript example plugins.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# dnsmasq lives in /usr/sbin, which a non-root PATH may lack.
export PATH="$HOME/.cargo/bin:$PATH:/usr/sbin:/sbin"

# Debian packages the tests drive: promtool checks /metrics and the alert
# rules; curl and openssl are the real TLS clients of the HTTPS tests;
# systemd-analyze verifies the systemd unit; dnsmasq is the DNS server of the
# discovery tests and redis-server the store of the fleet-wide rate limit;
# chromium shows the dashboard to the browser test.
missing=()
for tool in promtool:prometheus curl:curl openssl:openssl systemd-analyze:systemd dnsmasq:dnsmasq-base redis-server:redis-server chromium:chromium; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing Debian packages: ${missing[*]}"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}") >/dev/null
    else
        echo "setup: the tests need ${missing[*]} (Debian packages) and apt-get is not available" >&2
        exit 1
    fi
fi
echo "setup: $(promtool --version 2>&1 | head -1); $(curl --version | head -1 | cut -d' ' -f1-2); $(openssl version)"
echo "setup: $(dnsmasq --version | head -1 | cut -d' ' -f1-3); $(redis-server --version | cut -d' ' -f1-3)"

# playwright-core (npm, pinned by tests/browser/package-lock.json) drives
# chromium in the dashboard test.
if [ ! -d tests/browser/node_modules/playwright-core ]; then
    echo "setup: installing playwright-core (npm) for the browser test"
    npm ci --prefix tests/browser --no-audit --no-fund --silent
fi

# The Python h2 package: the HTTP/2 hostile-client test frames its attacks with it.
if ! python3 -c 'import h2' >/dev/null 2>&1; then
    echo "setup: installing the Python package h2 (PyPI)"
    python3 -m pip install --quiet --disable-pip-version-check 'h2>=4,<5'
fi
echo "setup: python h2 $(python3 -c 'import h2; print(h2.__version__)')"

# kubernetes-validate (PyPI): checks the Kubernetes manifests under deploy/
# against the API's schemas, which it carries (no cluster needed).
if ! python3 -c 'import kubernetes_validate' >/dev/null 2>&1; then
    echo "setup: installing the Python package kubernetes-validate (PyPI)"
    python3 -m pip install --quiet --disable-pip-version-check 'kubernetes-validate>=1.30,<2'
fi
echo "setup: kubernetes-validate $(python3 -m kubernetes_validate --version 2>&1)"

# The Python, JavaScript and C example plugins: their build scripts install the
# pinned toolchains (componentize-py from PyPI, jco from npm, clang-16 and
# wasi-libc from Debian) and write the components the conformance and
# end-to-end tests load. The tests fail, not skip, without them.
echo "== example plugins in Python, JavaScript and C"
bash examples/python-plugin/build.sh
bash examples/js-plugin/build.sh
bash examples/c-plugin/build.sh

# The Python and JavaScript SDKs' own tests and the examples' policy tests,
# under each SDK's fake host (pytest, node --test): no component involved.
echo "== SDK tests: Python (pytest) and JavaScript (node --test)"
bash examples/python-plugin/build.sh test
bash examples/js-plugin/build.sh test

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (-D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo doc (warnings are errors: every public item documented, every link resolved)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
echo "== cargo test"
cargo test --workspace --locked
