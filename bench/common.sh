# Shared by the bench scripts (sourced, not run): a work directory cleaned up
# on exit with every process listed in PIDS, the peers from Debian packages,
# and waiting for a port on 127.0.0.1.
WORK=$(mktemp -d "/tmp/veer-${BENCH_NAME:-bench}.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
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
