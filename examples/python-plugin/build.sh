#!/usr/bin/env bash
# Builds the Python least-connections picker into a component:
#   target/example-plugins/least-conn-py.wasm
# Installs its toolchain first if it is missing: python3 with venv from Debian,
# then the pinned componentize-py and pytest (requirements.txt) from PyPI into
# a venv at target/example-toolchains/python. Skips the build when the
# component is newer than its sources (the policy, the SDK in sdk/python, the
# WIT). `bash build.sh test` runs the policy's and the SDK's pytest suites
# (fake host, no component) instead.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$root/target/example-plugins/least-conn-py.wasm"
venv="$root/target/example-toolchains/python"

if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "python-plugin: installing python3 and python3-venv from Debian packages"
    apt-get update -qq && apt-get install -y -qq python3 python3-venv >/dev/null
fi

if [[ ! -x "$venv/bin/componentize-py" ]] || [[ "$here/requirements.txt" -nt "$venv/bin/componentize-py" ]]; then
    echo "python-plugin: installing $(grep -v '^#' "$here/requirements.txt") into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    touch "$venv/bin/componentize-py"
fi

if [[ "${1:-}" == "test" ]]; then
    cd "$here"
    PYTHONPATH="$root/sdk/python:$here" exec "$venv/bin/python" -m pytest -q -p no:cacheprovider \
        "$here" "$root/sdk/python/tests"
fi

# Any source newer than the component (none to compare with on a first build).
newest_source=""
if [[ -f "$out" ]]; then
    newest_source="$(find "$here" "$root/sdk/python/veer_picker" -name '*.py' ! -name 'test_*' -newer "$out" | head -1)"
fi
if [[ -f "$out" && -z "$newest_source" && "$out" -nt "$root/wit/picker.wit" && "$out" -nt "$here/requirements.txt" ]]; then
    echo "python-plugin: $out is up to date"
    exit 0
fi
mkdir -p "$(dirname "$out")"
# The bindings (the `wit_world` package the SDK's export imports) are generated
# from the WIT during componentize; CPython, app.py, least_conn.py and the SDK
# are snapshotted into the component.
"$venv/bin/componentize-py" --wit-path "$root/wit" --world picker \
    componentize --python-path "$here" --python-path "$root/sdk/python" app --output "${out}.tmp"
mv "${out}.tmp" "$out"
echo "python-plugin: wrote $out ($(du -h "$out" | cut -f1))"
