#!/usr/bin/env bash
# Overload benchmark: offered load against goodput and p99, with and without
# admission control (AIMD), for one simulated backend of known capacity
# (20 ms per request, 10 at once: ~500 req/s). Load generator, veer and the
# backend share one process on 127.0.0.1; each step starts them afresh.
#
#   bash bench/overload.sh [SECONDS_PER_STEP] [RATES]      e.g. bash bench/overload.sh 4 250,500,1000,1500
#
# Environment: PROFILE (default dev: dependencies are optimised in every
# profile, and at these rates veer's own code is not the bottleneck; set
# PROFILE=release for a release build), SVG (a path: also write a plot).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_STEP=${1:-4}
RATES=${2:-250,500,750,1000,1500}
PROFILE=${PROFILE:-dev}

args=(--seconds "$SECONDS_PER_STEP" --rates "$RATES")
[[ -n ${SVG:-} ]] && args+=(--svg "$SVG")
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
RUST_LOG=warn cargo run -q --profile "$PROFILE" -p veer-tests --example overload -- "${args[@]}"
