#!/usr/bin/env bash
# Runs every fuzz target (host/fuzz: config, scenario, admin_body,
# request_headers) with cargo-fuzz (libFuzzer) for SECONDS each (default 60),
# starting from the committed seed corpora. A crash stops the run and leaves
# its input under host/fuzz/artifacts/TARGET/: copy it into
# host/fuzz/corpus/TARGET/ and `cargo test -p veer fuzzing` replays it from
# then on. Installs cargo-fuzz from crates.io if missing. The first build
# (veer and wasmtime with sanitizer coverage) takes several minutes.
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-60}
shift || true
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(config scenario admin_body request_headers)

bash scripts/setup.sh >/dev/null
export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz (crates.io)"
    cargo install cargo-fuzz --locked
fi
# cargo-fuzz passes nightly-only flags; the pinned stable toolchain accepts
# them with RUSTC_BOOTSTRAP (there is no other toolchain to fetch here).
export RUSTC_BOOTSTRAP=1
cd host
for target in "${TARGETS[@]}"; do
    echo "== fuzz $target for ${SECONDS_PER_TARGET}s (building first)"
    # A scratch copy of the corpus: new inputs libFuzzer finds stay out of git.
    work=$(mktemp -d "/tmp/veer-fuzz-$target.XXXXXX")
    cp -r "fuzz/corpus/$target/." "$work/"
    cargo fuzz run "$target" "$work" -- -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=4096 -timeout=10 2>&1 \
        | grep -E "^(#[0-9]+.*(DONE|pulse|NEW)|==|SUMMARY|Done|INFO: (Running|Loaded|seed))" | tail -n 5
    echo "fuzz $target: ok, $(ls "$work" | wc -l) corpus inputs after the run"
    rm -rf "$work"
done
