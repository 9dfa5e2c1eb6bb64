#!/usr/bin/env bash
# Builds the JavaScript least-connections picker into a component:
#   target/example-plugins/least-conn-js.wasm
# Installs its toolchain first if it is missing: Node.js and npm from Debian,
# then the pinned @bytecodealliance/componentize-js from package-lock.json
# (`npm ci`, into this directory's node_modules). Skips the build when the
# component is newer than its sources.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$root/target/example-plugins/least-conn-js.wasm"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "js-plugin: installing Node.js and npm from Debian packages"
    apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi

cd "$here"
if [[ ! -x node_modules/.bin/componentize-js ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
    echo "js-plugin: npm ci (componentize-js $(sed -n 's/.*"@bytecodealliance\/componentize-js": "\(.*\)".*/\1/p' package.json))"
    npm ci --no-audit --no-fund --loglevel=error
fi

if [[ -f "$out" && "$out" -nt least-conn.js && "$out" -nt "$root/wit/picker.wit" && "$out" -nt package-lock.json ]]; then
    echo "js-plugin: $out is up to date"
    exit 0
fi
mkdir -p "$(dirname "$out")"
# componentize-js reads the WIT through a WASI sandbox rooted at the working
# directory, so it runs from the repository root with relative paths. The
# `http` and `fetch-event` features are off: they would import wasi:http,
# which veer does not provide (a picker gets no network).
cd "$root"
node_modules_bin="$here/node_modules/.bin"
"$node_modules_bin/componentize-js" --wit wit --world-name picker \
    --disable http fetch-event \
    --out "${out}.tmp" examples/js-plugin/least-conn.js
mv "${out}.tmp" "$out"
echo "js-plugin: wrote $out ($(du -h "$out" | cut -f1))"
