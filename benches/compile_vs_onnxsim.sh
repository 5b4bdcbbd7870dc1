#!/usr/bin/env bash
# Benchmark (not a test): `detrc compile` against `python -m onnxsim` on DETR-R50, measured
# side by side in one run on this machine. Prints wall time and peak RSS (GNU time) and node
# counts, with ratios against onnxsim as the baseline.
#
#   benches/compile_vs_onnxsim.sh                 # R50, 800x800, opset 17, batch 1
#   MODEL=path.onnx RUNS=5 benches/compile_vs_onnxsim.sh
#
# Regenerates the model when missing, which needs torch: scripts/setup_python.sh --fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-bench-out/detr_r50_op17_b1_800x800.onnx}
RUNS=${RUNS:-3}
OUT=bench-out
mkdir -p "$OUT"
command -v /usr/bin/time >/dev/null || { echo "needs GNU time (apt-get install time)" >&2; exit 1; }

cargo build --release --locked -q
DETRC=target/release/detrc
if [ ! -f "$MODEL" ]; then
    echo "generating $MODEL (random seeded DETR-R50)..." >&2
    scripts/setup_python.sh --fixtures
    .venv/bin/python scripts/make_fixtures.py --config r50 --out "$MODEL"
fi
.venv/bin/python -c "import onnxsim" 2>/dev/null || scripts/setup_python.sh --fixtures

# median of N "seconds kilobytes" lines -> "seconds kilobytes" (max RSS over runs)
measure() {
    local log=$1; shift
    : >"$log.all"
    for _ in $(seq "$RUNS"); do
        /usr/bin/time -f "%e %M" -o "$log.one" "$@" >/dev/null 2>"$log.err" || { cat "$log.err" >&2; exit 1; }
        cat "$log.one" >>"$log.all"
    done
    sort -n "$log.all" | awk '{t[NR]=$1; if ($2>m) m=$2} END {print t[int((NR+1)/2)], m}'
}

read -r d_s d_kb < <(measure "$OUT/detrc" "$DETRC" compile "$MODEL" -o "$OUT/r50.detrc.onnx" -q)
read -r o_s o_kb < <(measure "$OUT/onnxsim" .venv/bin/python -m onnxsim "$MODEL" "$OUT/r50.onnxsim.onnx")
nodes() { "$DETRC" inspect "$1" --json | .venv/bin/python -c "import json,sys; print(json.load(sys.stdin)['nodes'])"; }
n_in=$(nodes "$MODEL"); n_d=$(nodes "$OUT/r50.detrc.onnx"); n_o=$(nodes "$OUT/r50.onnxsim.onnx")

printf '\n%s (%s nodes), median of %s runs, %s cores\n' "$MODEL" "$n_in" "$RUNS" "$(nproc)"
printf '%-10s %10s %12s %8s\n' tool seconds "peak MB" nodes
printf '%-10s %10.2f %12.0f %8s\n' onnxsim "$o_s" "$((o_kb / 1024))" "$n_o"
printf '%-10s %10.2f %12.0f %8s\n' detrc "$d_s" "$((d_kb / 1024))" "$n_d"
.venv/bin/python - "$o_s" "$d_s" "$o_kb" "$d_kb" <<'PY'
import sys
o_s, d_s, o_kb, d_kb = map(float, sys.argv[1:])
print(f"detrc is {o_s / max(d_s, 1e-9):.1f}x faster than onnxsim and uses {d_kb / o_kb:.2f}x its peak memory")
PY
echo "numerics of the detrc output against the original (onnxruntime):"
.venv/bin/python scripts/ort_compare.py "$MODEL" "$OUT/r50.detrc.onnx" | tail -1
