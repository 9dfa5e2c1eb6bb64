#!/usr/bin/env bash
# The bad-input table: a corpus of hostile and malformed HTTP/1 requests
# (bench/bad_input.py) sent to veer, nginx and HAProxy in front of the same
# recording backend; prints each proxy's status per request and how many
# requests the backend received because of it. Fails if veer forwards what
# both peers refuse, or stops answering.
#
#   bash bench/bad_input.sh
#
# Environment: BASE_PORT (default 19000). Installs nginx and haproxy from
# Debian packages if missing. Everything listens on 127.0.0.1 and is stopped
# on exit; each request waits at most 3 s.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${BASE_PORT:-19000}
BENCH_NAME=bad-input
source bench/common.sh
install_peers nginx haproxy

bash scripts/setup.sh >/dev/null
echo "building veer"
cargo build -q -p veer
VEER=target/debug/veer

BACKEND=$((BASE + 1)) CONTROL=$((BASE + 2))
VEER_PORT=$((BASE + 10)) NGINX_PORT=$((BASE + 20)) HAPROXY_PORT=$((BASE + 30))
python3 bench/record_backend.py "$BACKEND" "$CONTROL" &
PIDS+=($!)

cat >"$WORK/veer.yaml" <<CONF
listen: 127.0.0.1:$VEER_PORT
admin:
  listen: null
picker:
  source: builtin:round-robin
health:
  check:
    enabled: false
proxy:
  workers: 1
  retry:
    max_attempts: 1
reload:
  watch: false
backends:
  - name: recorder
    address: 127.0.0.1:$BACKEND
CONF
$VEER run --config "$WORK/veer.yaml" >"$WORK/veer.log" 2>&1 &
PIDS+=($!)

cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://127.0.0.1:$BACKEND;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
nginx -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log"

cat >"$WORK/haproxy.cfg" <<CONF
global
    maxconn 256
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend front
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend recorder
backend recorder
    server r1 127.0.0.1:$BACKEND
CONF
haproxy -f "$WORK/haproxy.cfg" -D -p "$WORK/haproxy.pid"
PIDS+=("$(cat "$WORK/haproxy.pid")")

for port in "$CONTROL" "$VEER_PORT" "$NGINX_PORT" "$HAPROXY_PORT"; do wait_port "$port"; done
echo "versions: $($VEER --version), $(nginx -v 2>&1), $(haproxy -v | head -1)"
python3 bench/bad_input.py "$CONTROL" veer="$VEER_PORT" nginx="$NGINX_PORT" haproxy="$HAPROXY_PORT"
