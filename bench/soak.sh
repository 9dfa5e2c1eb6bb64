#!/usr/bin/env bash
# Soak: veer (release build) in front of three simulated backends for MINUTES
# (default 30), with polite keep-alive GET/PUT clients, hostile clients,
# backends killed and restarted, picker swaps and config reloads. Prints
# veer's RSS and open file descriptors every minute, then the failed polite
# requests and the RSS drift after the first minute (warm-up).
# Targets: drift under 5%, fd count flat, 0 failed polite requests.
#
#   bash bench/soak.sh [MINUTES]
#
# Environment: BASE_PORT (default 20000), PROFILE (release, or debug for a
# quick try). Everything listens on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-30}
BASE=${BASE_PORT:-20000}
PROFILE=${PROFILE:-release}
WORK=$(mktemp -d /tmp/veer-soak.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}" "${SIMS[@]:-}"; do [[ -n $pid ]] && kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

bash scripts/setup.sh >/dev/null
echo "building veer ($PROFILE)"
if [[ $PROFILE == release ]]; then cargo build --release -q -p veer; else cargo build -q -p veer; fi
VEER=target/$PROFILE/veer
PORT=$((BASE + 10)) ADMIN=$((BASE + 11))
declare -a SIMS
start_sim() { # index
    local port=$((BASE + 1 + $1))
    $VEER sim --backend "name=s$1,port=$port,latency=2ms,jitter=1ms" >>"$WORK/sim$1.log" 2>&1 &
    SIMS[$1]=$!
}
for i in 0 1 2; do start_sim "$i"; done

write_config() { # picker
    cat >"$WORK/veer.yaml" <<CONF
listen: 127.0.0.1:$PORT
admin:
  listen: 127.0.0.1:$ADMIN
picker:
  source: $1
health:
  check:
    interval_ms: 500
    timeout_ms: 500
proxy:
  workers: 2
  client_header_timeout: 2s
  client_send_timeout: 2s
reload:
  watch: false
backends:
  - {name: s0, address: 127.0.0.1:$((BASE + 1))}
  - {name: s1, address: 127.0.0.1:$((BASE + 2))}
  - {name: s2, address: 127.0.0.1:$((BASE + 3))}
CONF
}
write_config builtin:p2c-ewma
$VEER run --config "$WORK/veer.yaml" >"$WORK/veer.log" 2>&1 &
VEER_PID=$!
PIDS+=("$VEER_PID")
for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

SECONDS_TOTAL=$((MINUTES * 60))
python3 bench/soak_clients.py polite "$PORT" "$SECONDS_TOTAL" 4 >"$WORK/polite.json" &
POLITE=$!
python3 bench/soak_clients.py hostile "$PORT" "$SECONDS_TOTAL" >"$WORK/hostile.json" &
HOSTILE=$!
PIDS+=("$POLITE" "$HOSTILE")

rss() { awk '/VmRSS/ {print $2}' "/proc/$VEER_PID/status"; }
fds() { ls "/proc/$VEER_PID/fd" | wc -l; }
pickers=(builtin:round-robin builtin:least-conn builtin:p2c-ewma builtin:q-learning)
start=$(date +%s)
next_minute=$((start + 60))
tick=0 kills=0 swaps=0 reloads=0
echo "minute,rss_kib,open_fds"
echo "0,$(rss),$(fds)"
declare -a samples
while (($(date +%s) - start < SECONDS_TOTAL)); do
    sleep 5
    tick=$((tick + 1))
    if ((tick % 4 == 0)); then # every 20 s: kill a backend, bring it back 5 s later
        victim=$(((tick / 4) % 3))
        kill "${SIMS[$victim]}" 2>/dev/null || true
        kills=$((kills + 1))
        sleep 5
        start_sim "$victim"
    fi
    if ((tick % 3 == 0)); then # every 15 s: swap the picker
        picker=${pickers[$(((tick / 3) % 4))]}
        curl -s -o /dev/null -X PUT "127.0.0.1:$ADMIN/picker" -d "{\"source\": \"$picker\"}" && swaps=$((swaps + 1))
    fi
    if ((tick % 6 == 0)); then # every 30 s: reload the config file (a picker change)
        write_config "${pickers[$(((tick / 6) % 4))]}"
        curl -s -o /dev/null -X POST "127.0.0.1:$ADMIN/reload" && reloads=$((reloads + 1))
    fi
    if (($(date +%s) >= next_minute)); then
        minute=$(((next_minute - start) / 60))
        samples[$minute]=$(rss)
        echo "$minute,${samples[$minute]},$(fds)"
        next_minute=$((next_minute + 60))
    fi
done
wait "$POLITE" "$HOSTILE"
echo "chaos: $kills backend kills, $swaps picker swaps, $reloads reloads"
echo "polite: $(cat "$WORK/polite.json")"
echo "hostile: $(cat "$WORK/hostile.json")"
# Drift: the mean of the last five minutes against the mean of the five after
# a two-minute warm-up (single samples swing a few percent with the allocator).
if ((MINUTES >= 12)); then
    early=$(printf '%s\n' "${samples[@]:3:5}" | awk '{ s += $1 } END { printf "%d", s / NR }')
    late=$(printf '%s\n' "${samples[@]:$((MINUTES - 4)):5}" | awk '{ s += $1 } END { printf "%d", s / NR }')
    awk -v a="$early" -v b="$late" -v m="$MINUTES" \
        'BEGIN { printf "rss drift: minutes 3-7 mean %d KiB, minutes %d-%d mean %d KiB, %+.1f%%\n", a, m - 4, m, b, (b - a) * 100 / a }'
fi
kill -0 "$VEER_PID" 2>/dev/null && echo "veer: still running" || { echo "veer: exited"; exit 1; }
