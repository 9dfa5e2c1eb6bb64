#!/usr/bin/env bash
# Does the pick scale with cores? Runs the criterion bench `pick_scaling`
# (1, 2, 4 and 8 threads picking at once on one picker, per built-in) and
# prints its table: time per pick per thread, wall clock normalised by the
# cores that can run at once, and each thread's CPU time (the bench's doc
# comment says what each shows), and 8 threads against 1. "per-worker" is the
# layout the server runs (an instance per worker); "shared" is one instance
# behind one mutex, the layout before it.
#
#   bash bench/pick_scaling.sh            # the whole bench, ~6 minutes after the build
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
    layout, measure = meta["function_id"].split("/")
    rows.setdefault((source, layout), {})[(measure, int(meta["value_str"]))] = estimate["mean"]["point_estimate"]
if not rows:
    sys.exit(f"no results under {root}: run the bench first")
threads = [1, 2, 4, 8]
head = " | ".join(f"{m} {t} thr" for m in ["wall", "cpu"] for t in threads)
print(f"| picker | layout | {head} | wall 8 vs 1 | cpu 8 vs 1 |")
print("| --- | --- | " + " | ".join("---:" for _ in range(len(threads) * 2 + 2)) + " |")
for source, layout in sorted(rows):
    cells = rows[(source, layout)]
    values = [cells.get((m, t)) for m in ["wall", "cpu"] for t in threads]
    if None in values:
        continue
    text = " | ".join(f"{v:.0f}" for v in values)
    ratios = " | ".join(f"{cells[(m, 8)] / cells[(m, 1)]:.2f}×" for m in ["wall", "cpu"])
    print(f"| {source} | {layout} | {text} | {ratios} |")
print("(ns per pick per thread)")
PY
