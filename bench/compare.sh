#!/usr/bin/env bash
# Data-path benchmark: the same three simulated backends behind veer (Wasm
# round robin, Wasm p2c-ewma, native round robin, Wasm round robin with the
# access log on), nginx (upstream keepalive)
# and HAProxy (http-reuse), plus direct to one backend; wrk on 127.0.0.1, runs
# interleaved A/B/A/B so machine noise hits every target alike.
#
# TLS rows: veer, nginx and HAProxy terminating HTTPS (one ECDSA P-256
# certificate, TLS 1.3, the same plaintext backends): `*-tls` keep-alive
# requests, and `*-tls-hs` one request per connection (`Connection: close`)
# with session resumption off in all three, so every request pays a full
# handshake: req/s there is handshakes/s and CPU per request is CPU per
# handshake (veer's count of full and resumed handshakes is printed to prove
# it). ONLY=tls runs just those.
#
#   bash bench/compare.sh [SECONDS_PER_RUN] [ROUNDS]
#
# Environment: CONNECTIONS (default 64), WRK_THREADS (default 1), BASE_PORT
# (default 18000), ONLY (a regex: run only the targets whose names match, e.g.
# ONLY='veer-wasm-rr' for the access log cost; ratios need both sides). Installs wrk, nginx and haproxy from Debian packages if
# missing. Everything listens on 127.0.0.1 and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${1:-10}
ROUNDS=${2:-3}
CONNECTIONS=${CONNECTIONS:-64}
WRK_THREADS=${WRK_THREADS:-1}
BASE=${BASE_PORT:-18000}
BENCH_NAME=bench
source bench/common.sh
install_peers wrk nginx haproxy openssl

bash scripts/setup.sh >/dev/null
echo "building veer (release)"
cargo build --release -q -p veer
VEER=target/release/veer

B1=$((BASE + 1)) B2=$((BASE + 2)) B3=$((BASE + 3))
$VEER sim --backend "name=a,port=$B1,latency=0ms" --backend "name=b,port=$B2,latency=0ms" \
    --backend "name=c,port=$B3,latency=0ms" >"$WORK/sim.log" 2>&1 &
PIDS+=($!)

wait_port "$B1"; wait_port "$B2"; wait_port "$B3"

# nginx_conf FILE LISTEN [SERVER-LINES]: nginx in front of the three backends.
nginx_conf() {
    cat >"$1" <<CONF
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    upstream sims { server 127.0.0.1:$B1; server 127.0.0.1:$B2; server 127.0.0.1:$B3; keepalive 128; }
    server {
        listen $2;
        ${3:-}
        location / {
            proxy_pass http://sims;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
}
nginx_conf "$WORK/nginx.conf" "127.0.0.1:$((BASE + 20))"
cat >"$WORK/haproxy.cfg" <<CONF
global
    nbthread $(nproc)
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend in
    bind 127.0.0.1:$((BASE + 21))
    default_backend sims
backend sims
    balance roundrobin
    server a 127.0.0.1:$B1
    server b 127.0.0.1:$B2
    server c 127.0.0.1:$B3
CONF

# One certificate for every TLS terminator: ECDSA P-256, as most sites serve now.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=bench.test \
    -addext subjectAltName=DNS:bench.test -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/haproxy.pem"
TLS_VEER=$((BASE + 14)) TLS_NGINX=$((BASE + 22)) TLS_HAPROXY=$((BASE + 23))
cat >"$WORK/veer-tls.yaml" <<CONF
listen: 127.0.0.1:$TLS_VEER
admin: { listen: 127.0.0.1:$((BASE + 34)) }
picker: { source: builtin:round-robin }
backends:
  - { name: a, address: 127.0.0.1:$B1 }
  - { name: b, address: 127.0.0.1:$B2 }
  - { name: c, address: 127.0.0.1:$B3 }
listen_tls:
  certificates: [{ cert: $WORK/cert.pem, key: $WORK/key.pem }]
CONF
# The handshake rows: resumption off everywhere, so every connection is a full
# handshake (wrk resumes TLS 1.3 sessions when the server offers tickets).
sed 's/^listen_tls:$/listen_tls:\n  session_resumption: false/' "$WORK/veer-tls.yaml" >"$WORK/veer-tls-full.yaml"
TLS_NGINX_LINES="ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem; ssl_protocols TLSv1.2 TLSv1.3;"
nginx_conf "$WORK/nginx-tls.conf" "127.0.0.1:$TLS_NGINX ssl" "$TLS_NGINX_LINES ssl_session_cache shared:SSL:10m;"
nginx_conf "$WORK/nginx-tls-full.conf" "127.0.0.1:$TLS_NGINX ssl" "$TLS_NGINX_LINES ssl_session_cache off; ssl_session_tickets off;"
sed "s|bind 127.0.0.1:$((BASE + 21))\$|bind 127.0.0.1:$TLS_HAPROXY ssl crt $WORK/haproxy.pem|" "$WORK/haproxy.cfg" >"$WORK/haproxy-tls.cfg"
sed -e "s|ssl crt $WORK/haproxy.pem|& no-tls-tickets|" -e "s|^global$|global\n    tune.ssl.cachesize 0|" \
    "$WORK/haproxy-tls.cfg" >"$WORK/haproxy-tls-full.cfg"

# name | how to start it (empty: already running) | port | URL scheme | extra wrk arguments
CLOSE="-H 'Connection: close'"
TARGETS=(
    "direct||$B1"
    "veer-wasm-rr|$VEER run --listen 127.0.0.1:$((BASE + 10)) --admin 127.0.0.1:$((BASE + 30)) --picker builtin:round-robin|$((BASE + 10))"
    "veer-wasm-p2c|$VEER run --listen 127.0.0.1:$((BASE + 11)) --admin 127.0.0.1:$((BASE + 31)) --picker builtin:p2c-ewma|$((BASE + 11))"
    "veer-native-rr|$VEER run --listen 127.0.0.1:$((BASE + 12)) --admin 127.0.0.1:$((BASE + 32)) --picker native:round-robin|$((BASE + 12))"
    "veer-wasm-rr-logged|$VEER run --listen 127.0.0.1:$((BASE + 13)) --admin 127.0.0.1:$((BASE + 33)) --picker builtin:round-robin --access-log $WORK/access.log|$((BASE + 13))"
    "nginx|nginx -c $WORK/nginx.conf -g 'daemon off;'|$((BASE + 20))"
    "haproxy|haproxy -f $WORK/haproxy.cfg|$((BASE + 21))"
    "veer-tls|$VEER run --config $WORK/veer-tls.yaml|$TLS_VEER|https"
    "nginx-tls|nginx -c $WORK/nginx-tls.conf -g 'daemon off;'|$TLS_NGINX|https"
    "haproxy-tls|haproxy -f $WORK/haproxy-tls.cfg|$TLS_HAPROXY|https"
    "veer-tls-hs|$VEER run --config $WORK/veer-tls-full.yaml|$TLS_VEER|https|$CLOSE"
    "nginx-tls-hs|nginx -c $WORK/nginx-tls-full.conf -g 'daemon off;'|$TLS_NGINX|https|$CLOSE"
    "haproxy-tls-hs|haproxy -f $WORK/haproxy-tls-full.cfg|$TLS_HAPROXY|https|$CLOSE"
)
BACKENDS="--backend a=127.0.0.1:$B1 --backend b=127.0.0.1:$B2 --backend c=127.0.0.1:$B3"

# wrk's latency in ms, whatever unit it printed.
to_ms() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); v/=1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v) } else if (v ~ /s$/) { sub(/s$/,"",v); v*=1000 } printf "%.3f", v }' <<<"$1"; }

RESULTS=$WORK/results.tsv
for round in $(seq 1 "$ROUNDS"); do
    for target in "${TARGETS[@]}"; do
        IFS='|' read -r name start port scheme extra <<<"$target"
        [[ -n ${ONLY:-} && ! $name =~ $ONLY ]] && continue
        url="${scheme:-http}://127.0.0.1:$port/"
        pid=""
        if [[ -n $start ]]; then
            [[ $start == "$VEER run --listen"* ]] && start="$start $BACKENDS"
            RUST_LOG=warn bash -c "exec $start" >"$WORK/$name.log" 2>&1 &
            pid=$!
            wait_port "$port"
        fi
        # A short warm-up fills connection pools and caches.
        eval "wrk -t$WRK_THREADS -c$CONNECTIONS -d2s $extra $url" >/dev/null
        procs=()
        [[ -n $pid ]] && procs=("$pid" $(pgrep -P "$pid" || true))
        before=$(cpu_ticks "${procs[@]}")
        out=$(eval "wrk -t$WRK_THREADS -c$CONNECTIONS -d${SECONDS_PER_RUN}s --latency $extra $url")
        after=$(cpu_ticks "${procs[@]}")
        requests=$(awk '/requests in/ { print $1 }' <<<"$out")
        # The proxy's own CPU per request: the number that does not depend on
        # how the machine's cores were shared with wrk and the backends.
        cpu_us=$(awk -v t=$((after - before)) -v us="$TICK_US" -v n="$requests" 'BEGIN { printf "%.1f", (n > 0 ? t * us / n : 0) }')
        rps=$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")
        p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
        p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
        errors=$(awk '/Non-2xx|Socket errors/ { print }' <<<"$out" | tr '\n' ' ')
        printf "round %d  %-15s %10.0f req/s  p50 %7.3f ms  p99 %7.3f ms  cpu %5.1f us/req %s\n" \
            "$round" "$name" "$rps" "$p50" "$p99" "$cpu_us" "$errors"
        printf "%s\t%s\t%s\t%s\t%s\n" "$name" "$rps" "$p50" "$p99" "$cpu_us" >>"$RESULTS"
        if [[ $name == veer-tls* ]]; then
            # Which handshakes veer made (warm-up included): full or resumed.
            curl -s "http://127.0.0.1:$((BASE + 34))/metrics" |
                awk '/^veer_tls_handshakes_total.*result="(full|resumed)"/ { sub(/.*result="/, ""); sub(/"}/, ""); printf "          handshakes %s\n", $0 }'
        fi
        if [[ -n $pid ]]; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
            [[ $name == nginx* && -f $WORK/nginx.pid ]] && { kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true; rm -f "$WORK/nginx.pid"; }
        fi
    done
done

echo
echo "mean over $ROUNDS rounds of ${SECONDS_PER_RUN}s, $CONNECTIONS connections, $(nproc) cores, everything on this machine:"
awk -F'\t' '
    { n[$1]++; rps[$1]+=$2; p50[$1]+=$3; p99[$1]+=$4; cpu[$1]+=$5; if (!($1 in seen)) { seen[$1]=1; order[++k]=$1 } }
    END {
        printf "| target | req/s | p50 ms | p99 ms | proxy CPU µs/req |\n|---|---:|---:|---:|---:|\n"
        for (i=1; i<=k; i++) {
            t=order[i]; c = (t == "direct") ? "-" : sprintf("%.1f", cpu[t]/n[t])
            printf "| %s | %.0f | %.3f | %.3f | %s |\n", t, rps[t]/n[t], p50[t]/n[t], p99[t]/n[t], c
        }
        split("veer-wasm-rr veer-native-rr veer-wasm-rr-logged nginx haproxy", plain, " ")
        complete = 1
        for (i in plain) if (!(plain[i] in n)) complete = 0
        if (complete) plain_ratios()
        tls_ratios()
    }
    function plain_ratios() {
        best = (rps["nginx"]/n["nginx"] > rps["haproxy"]/n["haproxy"]) ? "nginx" : "haproxy"
        printf "\nratios (req/s): veer-wasm-rr/nginx %.2f, veer-wasm-rr/haproxy %.2f, veer-wasm-rr/best-of(%s) %.2f, wasm-rr/native-rr %.3f\n",
            (rps["veer-wasm-rr"]/n["veer-wasm-rr"]) / (rps["nginx"]/n["nginx"]),
            (rps["veer-wasm-rr"]/n["veer-wasm-rr"]) / (rps["haproxy"]/n["haproxy"]),
            best, (rps["veer-wasm-rr"]/n["veer-wasm-rr"]) / (rps[best]/n[best]),
            (rps["veer-wasm-rr"]/n["veer-wasm-rr"]) / (rps["veer-native-rr"]/n["veer-native-rr"])
        printf "ratios (p99): veer-wasm-rr/best-of(%s) %.2f\n", best, (p99["veer-wasm-rr"]/n["veer-wasm-rr"]) / (p99[best]/n[best])
        printf "access log on/off (req/s): %.3f; CPU per request %.2f\n",
            (rps["veer-wasm-rr-logged"]/n["veer-wasm-rr-logged"]) / (rps["veer-wasm-rr"]/n["veer-wasm-rr"]),
            (cpu["veer-wasm-rr-logged"]/n["veer-wasm-rr-logged"]) / (cpu["veer-wasm-rr"]/n["veer-wasm-rr"])
        printf "ratios (CPU per request): veer-wasm-rr/nginx %.2f, veer-wasm-rr/haproxy %.2f\n",
            (cpu["veer-wasm-rr"]/n["veer-wasm-rr"]) / (cpu["nginx"]/n["nginx"]),
            (cpu["veer-wasm-rr"]/n["veer-wasm-rr"]) / (cpu["haproxy"]/n["haproxy"])
    }
    function tls_ratios() {
        # A ratio needs all of its rows (ONLY may have left some out).
        split("tls tls-hs", kinds, " ")
        for (i = 1; i <= 2; i++) {
            v = "veer-" kinds[i]; g = "nginx-" kinds[i]; h = "haproxy-" kinds[i]
            if (!(v in n) || !(g in n) || !(h in n)) continue
            what = (kinds[i] == "tls") ? "TLS keep-alive" : "TLS handshake per request"
            printf "%s: req/s veer/nginx %.2f, veer/haproxy %.2f; CPU per request veer/nginx %.2f, veer/haproxy %.2f; p99 veer/nginx %.2f\n",
                what, (rps[v]/n[v]) / (rps[g]/n[g]), (rps[v]/n[v]) / (rps[h]/n[h]),
                (cpu[v]/n[v]) / (cpu[g]/n[g]), (cpu[v]/n[v]) / (cpu[h]/n[h]), (p99[v]/n[v]) / (p99[g]/n[g])
        }
    }' "$RESULTS"
