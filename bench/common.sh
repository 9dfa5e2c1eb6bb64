# Shared by the bench scripts (sourced, not run): a work directory cleaned up
# on exit with every process listed in PIDS, the peers from Debian packages,
# waiting for a port on 127.0.0.1, and the CPU time processes have used.
WORK=$(mktemp -d "/tmp/veer-${BENCH_NAME:-bench}.XXXXXX")
PIDS=()
cleanup() {
    # Processes started in subshells are listed in $WORK/pids. Children
    # first: a process under strace outlives its tracer.
    [[ -f $WORK/pids ]] && mapfile -t -O "${#PIDS[@]}" PIDS <"$WORK/pids"
    for pid in "${PIDS[@]}"; do pkill -TERM -P "$pid" 2>/dev/null || true; kill "$pid" 2>/dev/null || true; done
    [[ -f $WORK/nginx.pid ]] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# install_peers TOOL...: installs the Debian packages of the tools missing.
install_peers() {
    local need=() tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] || need+=("$tool")
    done
    if ((${#need[@]})); then
        echo "installing ${need[*]} (Debian packages)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    export PATH="$PATH:/usr/sbin"
}

wait_port() {
    for _ in $(seq 1 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listening on port $1" >&2
    exit 1
}

# CPU time (clock ticks of TICK_US µs) used so far by the given processes, all threads.
TICK_US=$((1000000 / $(getconf CLK_TCK)))
cpu_ticks() {
    local total=0 pid stat
    for pid in "$@"; do
        for stat in /proc/"$pid"/task/*/stat; do
            # Fields 14 and 15: utime and stime (after the ")" that ends the command name).
            total=$((total + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "$stat" 2>/dev/null || echo 0)))
        done
    done
    echo "$total"
}
