#!/usr/bin/env bash
# Keeps the scenario simulator honest: the oracle's goodput in every shipped
# scenario, over real sockets (simulated backends, veer, the runner's client,
# all on 127.0.0.1) and in virtual time (`--virtual`, one seed), side by side.
# They must agree within 10%: the virtual mode models the same backends, load
# and proxy, so a larger gap means the simulator drifted from what it models.
#
#   bash bench/virtual_vs_real.sh [SCALE]     # default 1 (the files' lengths; ~3 min)
#
# Exits non-zero if any scenario is off by more than 10%.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:-1}
BENCH_NAME=virtual-vs-real
source bench/common.sh

bash scripts/setup.sh >/dev/null
echo "building veer (release)"
cargo build --release -q -p veer
VEER=target/release/veer
echo "oracle over real sockets (scale $SCALE)"
$VEER bench scenarios --strategies oracle --scale "$SCALE" --out "$WORK/real" | grep -E '^[a-z]' | grep -v '^results' || true
echo "oracle in virtual time (scale $SCALE)"
$VEER bench scenarios --virtual --seeds 1 --strategies oracle --scale "$SCALE" --out "$WORK/virtual" >/dev/null
python3 - "$WORK/real/summary.csv" "$WORK/virtual/summary.csv" <<'PY'
import csv, sys
def goodput(path):
    with open(path) as f:
        return {row["scenario"]: float(row["goodput_per_s"]) for row in csv.DictReader(f) if row["strategy"] == "oracle"}
real, virtual = goodput(sys.argv[1]), goodput(sys.argv[2])
print(f"\n| scenario | real, ok/s | virtual, ok/s | virtual / real |\n| --- | ---: | ---: | ---: |")
off = []
for name in real:
    ratio = virtual[name] / real[name] if real[name] else float("inf")
    print(f"| {name} | {real[name]:.0f} | {virtual[name]:.0f} | {ratio:.3f} |")
    if not 0.9 <= ratio <= 1.1:
        off.append(name)
if off:
    print(f"\nmore than 10% apart: {', '.join(off)}")
    sys.exit(1)
print("\nevery scenario within 10%")
PY
