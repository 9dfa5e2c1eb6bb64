#!/usr/bin/env bash
# Does the pick scale with cores? Runs the criterion bench `pick_scaling`
# (1, 2, 4 and 8 threads picking at once on one picker, per built-in) and
# prints its table: CPU time per pick per thread, and 8 threads against 1.
# "per-worker" is the layout the server runs (an instance per worker);
# "shared" is one instance behind one mutex, the layout before it.
#
#   bash bench/pick_scaling.sh            # the whole bench, ~4 minutes after the build
#   bash bench/pick_scaling.sh --table    # only print the table of the last run
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
if [[ ${1:-} != --table ]]; then
    echo "== cargo bench -p veer --bench pick_scaling (the first build takes ~15 minutes here)"
    cargo bench -p veer --bench pick_scaling
fi
python3 - "$target/criterion" <<'PY'
import json, pathlib, sys
root = pathlib.Path(sys.argv[1])
rows = {}
for bench in root.glob("pick-scaling_*/*/*/new/benchmark.json"):
    meta = json.loads(bench.read_text())
    estimate = json.loads((bench.parent / "estimates.json").read_text())
    source = meta["group_id"].split("/", 1)[1]
    layout, threads = meta["function_id"], int(meta["value_str"])
    rows.setdefault(source, {})[(layout, threads)] = estimate["mean"]["point_estimate"]
if not rows:
    sys.exit(f"no results under {root}: run the bench first")
threads = [1, 2, 4, 8]
head = " | ".join(f"{t} thr" for t in threads)
print(f"| picker | layout | {head} | 8 vs 1 |")
print("| --- | --- | " + " | ".join("---:" for _ in threads) + " | ---: |")
for source in sorted(rows):
    for layout in ["per-worker", "shared"]:
        cells = [rows[source].get((layout, t)) for t in threads]
        if None in cells:
            continue
        text = " | ".join(f"{c:.0f} ns" for c in cells)
        print(f"| {source} | {layout} | {text} | {cells[-1] / cells[0]:.2f}× |")
PY
