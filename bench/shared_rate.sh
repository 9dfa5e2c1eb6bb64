#!/usr/bin/env bash
# What the fleet-wide rate limit costs per request: veer with no client
# limit, with the per-instance limit, and with the limit shared through a
# real Redis (Debian's redis-server), each sending REQUESTS requests with
# h2load (HTTP/1.1 keep-alive, 4 connections) through one worker to one 0 ms
# backend, every request admitted (the limit is far above the load), ROUNDS
# rounds interleaved; the median round of each is reported.
#
#   bash bench/shared_rate.sh [REQUESTS] [ROUNDS]     # default 20000 3
#
# Per request: mean time (h2load's "time for request"), veer's CPU time and
# Redis's CPU time (both from /proc, all threads), and the difference to the
# per-instance limit. Everything listens on 127.0.0.1 and stops on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${1:-20000}
ROUNDS=${2:-3}
BASE=${BASE_PORT:-18400}
BENCH_NAME=shared-rate
source bench/common.sh
install_peers redis-server
command -v h2load >/dev/null || install_peers nghttp2-client

bash scripts/setup.sh >/dev/null
echo "building veer (release)"
cargo build --release -q -p veer
VEER=target/release/veer
BACKEND=$((BASE + 1)) PORT=$((BASE + 10)) ADMIN=$((BASE + 30)) REDIS=$((BASE + 40))
$VEER sim --backend "name=a,port=$BACKEND,latency=0ms" >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
redis-server --bind 127.0.0.1 --port "$REDIS" --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
wait_port "$BACKEND"
wait_port "$REDIS"

config() { # name client_rate-yaml
    cat >"$WORK/$1.yaml" <<CONF
listen: 127.0.0.1:$PORT
admin: {listen: 127.0.0.1:$ADMIN}
picker: {source: "native:round-robin"}
proxy: {workers: 1}
health: {check: {enabled: false}}
reload: {watch: false}
backends: [{name: a, address: "127.0.0.1:$BACKEND"}]
admission: {client_rate: $2}
CONF
}
config none "null"
config local "{per_second: 1000000, burst: 1000000}"
config shared "{per_second: 1000000, burst: 1000000, shared: {redis: \"redis://127.0.0.1:$REDIS\", timeout: 100ms, on_error: refuse}}"

run() { # name: one round; prints "mean_us veer_cpu_us redis_cpu_us" per request
    RUST_LOG=warn $VEER run --config "$WORK/$1.yaml" >"$WORK/veer.log" 2>&1 &
    local pid=$!
    wait_port "$PORT"
    h2load --h1 -c 4 -n 2000 "http://127.0.0.1:$PORT/" >/dev/null 2>&1 # warm-up
    local veer0 redis0 veer1 redis1
    veer0=$(cpu_ticks "$pid") redis0=$(cpu_ticks "$REDIS_PID")
    h2load --h1 -c 4 -n "$REQUESTS" "http://127.0.0.1:$PORT/" >"$WORK/h2load.log" 2>&1
    veer1=$(cpu_ticks "$pid") redis1=$(cpu_ticks "$REDIS_PID")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    grep -q "succeeded, 0 failed, 0 errored" "$WORK/h2load.log" || { grep requests: "$WORK/h2load.log"; exit 1; }
    awk -v n="$REQUESTS" -v t="$TICK_US" -v v=$((veer1 - veer0)) -v r=$((redis1 - redis0)) '
        /time for request:/ { mean = $6; if (mean ~ /ms$/) { sub(/ms$/, "", mean); mean *= 1000 } else if (mean ~ /us$/) { sub(/us$/, "", mean) } else { sub(/s$/, "", mean); mean *= 1000000 } }
        END { printf "%.1f %.1f %.1f\n", mean, v * t / n, r * t / n }' "$WORK/h2load.log"
}

declare -A ROWS
for round in $(seq 1 "$ROUNDS"); do
    for name in none local shared; do
        ROWS[$name]+="$(run "$name")"$'\n'
    done
    echo "round $round of $ROUNDS done"
done

median() { # column of the rows of $1
    sort -n -k"$2" <<<"${ROWS[$1]}" | awk 'NF' | awk -v c="$2" '{ v[NR] = $c } END { print v[int((NR + 1) / 2)] }'
}
echo
echo "$REQUESTS requests x $ROUNDS rounds (median), one worker, h2load --h1 -c 4, one 0 ms backend, all admitted:"
echo "| client limit | time per request (µs) | veer CPU per request (µs) | Redis CPU per request (µs) | added time | added CPU (veer + Redis) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
LT=$(median local 1) LV=$(median local 2) LR=$(median local 3)
for name in none local shared; do
    t=$(median "$name" 1) v=$(median "$name" 2) r=$(median "$name" 3)
    awk -v n="$name" -v t="$t" -v v="$v" -v r="$r" -v lt="$LT" -v lv="$LV" -v lr="$LR" \
        'BEGIN { printf "| %s | %.1f | %.1f | %.1f | %+.1f µs | %+.1f µs |\n", n, t, v, r, t - lt, (v + r) - (lv + lr) }'
done
