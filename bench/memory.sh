#!/usr/bin/env bash
# Memory benchmark: veer's resident memory idle with each picker loaded, and
# what each idle keep-alive client connection costs veer against nginx.
#
# 1. Idle RSS: veer started with one backend and each picker (every built-in,
#    and native:round-robin), with --workers 1 and 2, read from
#    /proc/PID/status 3 s after its admin API answers (mimalloc returns freed
#    memory to the system after 1 s). The largest is what "every built-in"
#    costs at most.
# 2. Per idle connection: CONNECTIONS clients (default 10000) each open a
#    keep-alive connection, send one request, read the answer and stay
#    connected; RSS (all processes of the proxy) after, minus before,
#    divided by CONNECTIONS. veer (Wasm round robin, one worker) and nginx
#    (one worker process, upstream keepalive) proxy to the same backend.
#
#   bash bench/memory.sh
#
# Environment: CONNECTIONS (default 10000), BASE_PORT (default 18300).
# Installs nginx from Debian packages if missing. Everything listens on
# 127.0.0.1 and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNECTIONS=${CONNECTIONS:-10000}
BASE=${BASE_PORT:-18300}
BENCH_NAME=memory
source bench/common.sh

install_peers nginx python3
ulimit -n $((CONNECTIONS * 2 + 1000)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "building veer (release)..."
cargo build --release -q -p veer
VEER=target/release/veer

BACKEND=$((BASE + 1))
$VEER sim --backend "name=a,port=$BACKEND,latency=0ms" >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
wait_port "$BACKEND"

rss_kb() { # total VmRSS of the given processes, kB
    local total=0 pid
    for pid in "$@"; do total=$((total + $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status"))); done
    echo "$total"
}

# start_veer PICKER WORKERS: starts veer on BASE+10 (admin BASE+11); sets VPID.
start_veer() {
    $VEER run --listen "127.0.0.1:$((BASE + 10))" --admin "127.0.0.1:$((BASE + 11))" \
        --backend "127.0.0.1:$BACKEND" --picker "$1" --workers "$2" --no-health-check >"$WORK/veer.log" 2>&1 &
    VPID=$!
    PIDS+=("$VPID")
    wait_port $((BASE + 11))
    sleep 3
}

echo
echo "idle RSS (MB), one backend, after start"
printf "%-28s %10s %10s\n" picker "workers 1" "workers 2"
pickers="native:round-robin builtin:round-robin builtin:weighted-rr builtin:least-conn builtin:least-response-time builtin:p2c-ewma builtin:q-learning builtin:prequal builtin:consistent-hash"
for picker in $pickers; do
    row=()
    for workers in 1 2; do
        start_veer "$picker" "$workers"
        row+=("$(awk -v kb="$(rss_kb "$VPID")" 'BEGIN { printf "%.1f", kb / 1024 }')")
        kill "$VPID"; wait "$VPID" 2>/dev/null || true
    done
    printf "%-28s %10s %10s\n" "$picker" "${row[0]}" "${row[1]}"
done

cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile $((CONNECTIONS * 2 + 1000));
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections $((CONNECTIONS * 2 + 100)); }
http {
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 100000;
    upstream sims { server 127.0.0.1:$BACKEND; keepalive 128; }
    server {
        listen 127.0.0.1:$((BASE + 20)) backlog=16384;
        location / {
            proxy_pass http://sims;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF

# idle_connections PORT PIDS...: RSS growth per idle keep-alive connection, bytes.
idle_connections() {
    local port=$1; shift
    local before after
    before=$(rss_kb "$@")
    python3 - "$port" "$CONNECTIONS" "$WORK/held" <<'PY' &
import socket, sys, time, os
port, n, flag = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
held = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(body) < length:
        body += s.recv(4096)
    held.append(s)
open(flag, "w").write("ok")
time.sleep(3600)
PY
    local client=$!
    while [[ ! -f $WORK/held ]]; do sleep 0.2; done
    sleep 3
    after=$(rss_kb "$@")
    kill "$client"; wait "$client" 2>/dev/null || true
    rm -f "$WORK/held"
    echo $(((after - before) * 1024 / CONNECTIONS))
}

echo
echo "RSS per idle keep-alive client connection ($CONNECTIONS connections, each after one request)"
start_veer builtin:round-robin 1
veer_bytes=$(idle_connections $((BASE + 10)) "$VPID")
kill "$VPID"; wait "$VPID" 2>/dev/null || true
nginx -c "$WORK/nginx.conf" -g 'daemon off;' >"$WORK/nginx.log" 2>&1 &
NPID=$!
PIDS+=("$NPID")
wait_port $((BASE + 20))
sleep 1
nginx_pids=$(pgrep -P "$NPID" | tr '\n' ' ')
# shellcheck disable=SC2086
nginx_bytes=$(idle_connections $((BASE + 20)) "$NPID" $nginx_pids)
printf "veer  %8d bytes per connection\nnginx %8d bytes per connection\n" "$veer_bytes" "$nginx_bytes"
awk -v v="$veer_bytes" -v n="$nginx_bytes" 'BEGIN { if (n > 0) printf "ratio veer/nginx %.2f\n", v / n }'
