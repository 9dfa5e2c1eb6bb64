#!/usr/bin/env bash
# Work per proxied request, counted instead of timed, so that a shared,
# noisy machine gives the same answer twice: veer (native and Wasm round
# robin), nginx and HAProxy, each with one worker, in front of one 0 ms
# backend, HTTP/1.1 keep-alive from h2load (4 connections).
#
#   bash bench/instructions.sh [REQUESTS]      # default 4000
#   ONLY='veer' bash bench/instructions.sh      # only the targets whose name matches
#
# veer-traced has observe.tracing on without export (trace context continued
# and passed on); veer-otlp also exports every request's spans over OTLP to a
# local sink. Their difference to veer-native-rr is what tracing costs.
# veer-wasm-rr-2w runs two workers (the instructions of every thread are
# counted): against veer-wasm-rr it says whether the cost per request grows
# with workers. The `-h2` rows take HTTP/2 from the client (h2load, h2c
# with prior knowledge, 4 connections, up to 8 streams each; HTTP/1.1 to the
# backend, as every row). The `-1m` rows fetch a 1 MiB file (REQUESTS / 20
# of them) from a static nginx backend: their figures are per MiB.
#
# - user-space instructions per request: the proxy runs under callgrind;
#   after a warm-up its counters are zeroed (callgrind_control -z), REQUESTS
#   requests are sent, and the counters dumped: every thread's instructions
#   over those requests only (start-up and plugin compilation excluded);
# - system calls per request: the proxy runs under `strace -f -c`, once with
#   REQUESTS and once with 3 x REQUESTS requests; the difference of the two
#   totals over 2 x REQUESTS leaves start-up and shutdown out.
#
# Installs valgrind, strace, h2load (nghttp2-client), nginx and haproxy from
# Debian packages if missing. Everything listens on 127.0.0.1 and stops on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${1:-4000}
BASE=${BASE_PORT:-18200}
BENCH_NAME=instructions
source bench/common.sh
install_peers valgrind strace nginx haproxy
command -v h2load >/dev/null || install_peers nghttp2-client

bash scripts/setup.sh >/dev/null
echo "building veer (release)"
cargo build --release -q -p veer
VEER=target/release/veer
BACKEND=$((BASE + 1)) PORT=$((BASE + 10)) ADMIN=$((BASE + 30))
$VEER sim --backend "name=a,port=$BACKEND,latency=0ms" >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
wait_port "$BACKEND"

# nginx_preamble NAME: one worker in the foreground, its pid file and error
# log named after NAME.
nginx_preamble() {
    printf 'worker_processes 1;\nmaster_process off;\ndaemon off;\n'
    printf 'pid %s/%s.pid;\nerror_log %s/%s-error.log warn;\n' "$WORK" "$1" "$WORK" "$1"
    printf 'events { worker_connections 1024; }\n'
}

{ nginx_preamble nginx; cat <<CONF
http {
    access_log off;
    # Not the default 1000: h2load keeps its 4 connections for every request.
    keepalive_requests 1000000;
    upstream one { server 127.0.0.1:$BACKEND; keepalive 16; }
    server {
        listen 127.0.0.1:$PORT;
        # Streams what does not fit its buffers, as veer does, instead of
        # spooling it to a temporary file (the 1 MiB rows).
        location / {
            proxy_pass http://one; proxy_http_version 1.1; proxy_set_header Connection "";
            proxy_max_temp_file_size 0;
        }
    }
}
CONF
} >"$WORK/nginx.conf"
sed 's|listen 127.0.0.1:'"$PORT"';|listen 127.0.0.1:'"$PORT"' http2;|' "$WORK/nginx.conf" >"$WORK/nginx-h2.conf"
cat >"$WORK/haproxy.cfg" <<CONF
global
    nbthread 1
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend in
    bind 127.0.0.1:$PORT
    default_backend one
backend one
    server a 127.0.0.1:$BACKEND
CONF
sed 's|bind 127.0.0.1:'"$PORT"'|bind 127.0.0.1:'"$PORT"' proto h2|' "$WORK/haproxy.cfg" >"$WORK/haproxy-h2.cfg"

# The 1 MiB rows' backend: nginx serving a static file (not measured).
BIG=$((BASE + 3))
mkdir -p "$WORK/www"
head -c 1048576 /dev/urandom >"$WORK/www/big"
echo ok >"$WORK/www/healthz" # what veer's health checks ask for
{ nginx_preamble static; cat <<CONF
http {
    access_log off;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:$BIG; root $WORK/www; location / { } }
}
CONF
} >"$WORK/static.conf"
nginx -c "$WORK/static.conf" &
PIDS+=($!)
wait_port "$BIG"
sed "s|127.0.0.1:$BACKEND|127.0.0.1:$BIG|" "$WORK/nginx.conf" | sed "s|$WORK/nginx.pid|$WORK/nginx-1m.pid|" >"$WORK/nginx-1m.conf"
sed "s|127.0.0.1:$BACKEND|127.0.0.1:$BIG|" "$WORK/haproxy.cfg" >"$WORK/haproxy-1m.cfg"

SINK=$((BASE + 2))
$VEER sim --backend "name=otlp-sink,port=$SINK,latency=0ms" >"$WORK/sink.log" 2>&1 &
PIDS+=($!)
wait_port "$SINK"
traced_config() { # file, tracing settings
    cat >"$1" <<CONF
listen: 127.0.0.1:$PORT
admin: {listen: 127.0.0.1:$ADMIN}
proxy: {workers: 1}
reload: {watch: false}
picker: {source: "native:round-robin"}
backends: [{name: a, address: "127.0.0.1:$BACKEND"}]
observe: {tracing: $2}
CONF
}
traced_config "$WORK/traced.yaml" "{}"
traced_config "$WORK/otlp.yaml" "{otlp_endpoint: \"http://127.0.0.1:$SINK/v1/traces\"}"

# name | command (listening on $PORT)
TARGETS=(
    "veer-native-rr|$VEER run --listen 127.0.0.1:$PORT --admin 127.0.0.1:$ADMIN --workers 1 --picker native:round-robin --backend a=127.0.0.1:$BACKEND"
    "veer-wasm-rr|$VEER run --listen 127.0.0.1:$PORT --admin 127.0.0.1:$ADMIN --workers 1 --picker builtin:round-robin --backend a=127.0.0.1:$BACKEND"
    "veer-traced|$VEER run --config $WORK/traced.yaml"
    "veer-otlp|$VEER run --config $WORK/otlp.yaml"
    "nginx|nginx -c $WORK/nginx.conf"
    "haproxy|haproxy -db -f $WORK/haproxy.cfg"
    "veer-wasm-rr-2w|$VEER run --listen 127.0.0.1:$PORT --admin 127.0.0.1:$ADMIN --workers 2 --picker builtin:round-robin --backend a=127.0.0.1:$BACKEND"
    "veer-wasm-rr-h2|$VEER run --listen 127.0.0.1:$PORT --admin 127.0.0.1:$ADMIN --workers 1 --picker builtin:round-robin --backend a=127.0.0.1:$BACKEND"
    "nginx-h2|nginx -c $WORK/nginx-h2.conf"
    "haproxy-h2|haproxy -db -f $WORK/haproxy-h2.cfg"
    "veer-wasm-rr-1m|$VEER run --listen 127.0.0.1:$PORT --admin 127.0.0.1:$ADMIN --workers 1 --picker builtin:round-robin --backend a=127.0.0.1:$BIG"
    "nginx-1m|nginx -c $WORK/nginx-1m.conf"
    "haproxy-1m|haproxy -db -f $WORK/haproxy-1m.cfg"
)

# per_request N: how many requests a target is sent for N (a `-1m` target
# fetches 1 MiB each: a twentieth).
per_request() { if [[ $CURRENT == *-1m ]]; then echo $(($1 / 20)); else echo "$1"; fi; }

# send N: N requests (of the target's kind) from h2load, HTTP/1.1 or (a `-h2` target) HTTP/2.
send() {
    local protocol=(--h1) path=/
    [[ $CURRENT == *-h2 ]] && protocol=(-m 8)
    [[ $CURRENT == *-1m ]] && path=/big
    h2load "${protocol[@]}" -c 4 -n "$(per_request "$1")" "http://127.0.0.1:$PORT$path" >"$WORK/h2load.log" 2>&1 || { cat "$WORK/h2load.log"; exit 1; }
    grep -q "succeeded, 0 failed, 0 errored" "$WORK/h2load.log" || {
        { echo "requests failed:"; grep -E "requests:|status codes:" "$WORK/h2load.log"; tail -n 3 "$WORK"/*error.log; } >&2
        exit 1
    }
}

# start PREFIX...: runs a target's command under PREFIX in the background; sets PID.
start() {
    RUST_LOG=warn "$@" >"$WORK/target.log" 2>&1 &
    PID=$!
    echo "$PID" >>"$WORK/pids" # stopped on exit too, should a measurement (a subshell) fail
    for _ in $(seq 1 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
        kill -0 "$PID" 2>/dev/null || { cat "$WORK/target.log"; exit 1; }
        sleep 0.2
    done
    echo "nothing listening on $PORT" >&2; exit 1
}
# stop: SIGTERM to the proxy (strace's child when traced: strace then writes its summary).
stop() {
    local child
    child=$(pgrep -P "$PID" || true)
    kill -TERM ${child:-$PID} 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
}

instructions() { # command...: user-space instructions per request
    start valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" "$@"
    send 500 # warm-up: pools, caches, the picker's first calls
    callgrind_control -z "$PID" >/dev/null 2>&1
    send "$REQUESTS"
    callgrind_control -d "$PID" >/dev/null 2>&1
    stop
    # The dump asked for is cg.out.1 (the one at exit, cg.out, holds only the shutdown).
    local dump=$WORK/cg.out.1
    [[ -s $dump ]] || { echo "no callgrind dump" >&2; exit 1; }
    awk -v n="$(per_request "$REQUESTS")" '/^(summary|totals):/ { printf "%.0f", $2 / n; exit }' "$dump"
    rm -f "$WORK"/cg.out*
}

syscalls() { # command...: system calls per request
    local totals=()
    for n in "$REQUESTS" $((3 * REQUESTS)); do
        start strace -f -c -o "$WORK/strace.out" "$@"
        send "$n"
        stop
        totals+=("$(awk '$NF == "total" { print $4 + 0 }' "$WORK/strace.out")")
    done
    awk -v a="${totals[0]}" -v b="${totals[1]}" -v n="$(per_request "$REQUESTS")" 'BEGIN { printf "%.2f", (b - a) / (2 * n) }'
}

printf "%-16s %14s %14s\n" target "instr/request" "syscalls/req"
declare -A IR SC
MEASURED=()
for target in "${TARGETS[@]}"; do
    IFS='|' read -r name command <<<"$target"
    [[ -n ${ONLY:-} && ! $name =~ $ONLY ]] && continue
    CURRENT=$name
    MEASURED+=("$name")
    read -ra argv <<<"$command"
    IR[$name]=$(instructions "${argv[@]}")
    SC[$name]=$(syscalls "${argv[@]}")
    printf "%-16s %14s %14s\n" "$name" "${IR[$name]}" "${SC[$name]}"
done
echo
echo "$REQUESTS requests (syscalls: $REQUESTS and $((3 * REQUESTS))), one worker each (but -2w), h2load --h1 -c 4 (-h2: h2c, -m 8), one 0 ms backend; -1m: $((REQUESTS / 20)) and $((3 * REQUESTS / 20)) requests of 1 MiB, figures per MiB:"
# Each row against nginx of the same kind (nginx, nginx-h2, nginx-1m) when it was measured.
echo "| target | instructions per request | vs its peer | system calls per request | vs its peer |"
echo "| --- | ---: | ---: | ---: | ---: |"
for name in "${MEASURED[@]}"; do
    peer=nginx
    [[ $name =~ -(h2|1m)$ ]] && peer=nginx-${BASH_REMATCH[1]}
    [[ -n ${IR[$peer]:-} ]] || peer=${MEASURED[0]}
    awk -v t="$name" -v p="$peer" -v i="${IR[$name]}" -v s="${SC[$name]}" -v ni="${IR[$peer]}" -v ns="${SC[$peer]}" \
        'BEGIN { printf "| %s | %d | %.2fx %s | %.2f | %.2fx |\n", t, i, i / ni, p, s, s / ns }'
done
