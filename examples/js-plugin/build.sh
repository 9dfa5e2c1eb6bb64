#!/usr/bin/env bash
# Builds the JavaScript least-connections picker into a component:
#   target/example-plugins/least-conn-js.wasm
# Installs its toolchain first if it is missing: Node.js and npm from Debian,
# then the pinned @bytecodealliance/jco from package-lock.json (into
# this directory's node_modules). Skips the build when the component is newer
# than its sources (the policy, the SDK in sdk/js, the WIT).
# `bash build.sh test` runs the policy's and the SDK's `node --test` suites
# (fake host, no component) instead.
#
# jco builds with its QuickJS backend (componentize-qjs), not the default
# StarlingMonkey one (componentize-js): measured here, a StarlingMonkey picker
# accumulates garbage across calls and reaches veer's 64 MiB memory cap after
# ~75 000 requests (a fault, a fallback and a fresh instance each time), and
# with a larger cap its collections overrun the 5 ms call deadline instead.
# QuickJS frees by reference counting as it goes: 400 000 requests, no fault,
# and the component is 1.6 MB instead of 12 MB.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$root/target/example-plugins/least-conn-js.wasm"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "js-plugin: installing Node.js and npm from Debian packages"
    apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi

cd "$here"
if [[ ! -x node_modules/.bin/jco ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
    echo "js-plugin: npm install (jco $(sed -n 's/.*"@bytecodealliance\/jco": "\(.*\)".*/\1/p' package.json), as locked)"
    # Not `npm ci`: npm 11 leaves some other platforms' optional native
    # bindings out of the lock file and `npm ci` then refuses it ("Missing:
    # ...@ from lock file"). `npm install --no-save` installs the locked
    # versions and never rewrites package-lock.json.
    npm install --no-save --no-audit --no-fund --loglevel=error
fi

if [[ "${1:-}" == "test" ]]; then
    exec node --test "$here/least-conn.test.js" "$root/sdk/js/test/"
fi

# Any source newer than the component (none to compare with on a first build).
newest_source=""
if [[ -f "$out" ]]; then
    newest_source="$(find "$here"/*.js "$root/sdk/js" -name '*.js' ! -name '*.test.js' ! -path '*/node_modules/*' -newer "$out" | head -1)"
fi
if [[ -f "$out" && -z "$newest_source" && "$out" -nt "$root/wit/picker.wit" && "$out" -nt package-lock.json ]]; then
    echo "js-plugin: $out is up to date"
    exit 0
fi
mkdir -p "$(dirname "$out")"
# --backend-qjs-disable-async: plain synchronous exports (veer's engine runs
# without component-model async). --cwd is the repository: jco takes in only
# modules under it, and app.js imports least-conn.js and the SDK (sdk/js).
cd "$root"
"$here/node_modules/.bin/jco" componentize examples/js-plugin/app.js --cwd "$root" --wit wit --world-name picker \
    --backend quickjs --backend-qjs-disable-async --out "${out}.tmp"
mv "${out}.tmp" "$out"
echo "js-plugin: wrote $out ($(du -h "$out" | cut -f1))"
