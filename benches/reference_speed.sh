#!/usr/bin/env bash
# Benchmark (not a test) for the onnxruntime reference runtime, on DETR-R50 800x800 opset 17,
# every number measured side by side in this one run:
#   1. `detrc compile --verify` (onnxruntime) wall + peak RSS against `python -m onnxsim` on the
#      same file (and, with TRACT=1, `--verify --reference tract`);
#   2. `detrc bench` on the compiled model against onnxruntime's Python API on the same model
#      (2 threads, default optimizations);
#   3. peak RSS of `compile --verify` against the model file's size;
#   4. `detrc run` detections on the compiled model against scripts/ref_detect.py (onnxruntime +
#      numpy + PIL) on the original.
# Ratios are what to compare; this machine is shared, so absolute times vary.
#
#   benches/reference_speed.sh
#   MODEL=path.onnx RUNS=5 ITERS=20 TRACT=1 benches/reference_speed.sh
#
# Needs .venv (scripts/setup_python.sh --fixtures for onnxsim; FIXPY=python with torch to
# regenerate the model) and GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-bench-out/detr_r50_op17_b1_800x800.onnx}
RUNS=${RUNS:-3}
ITERS=${ITERS:-20}
THREADS=${THREADS:-2}
PY=${PY:-.venv/bin/python}
FIXPY=${FIXPY:-$PY}
# python with onnxsim (default: PY)
SIMPY=${SIMPY:-$PY}
OUT=bench-out/reference
mkdir -p "$OUT"
command -v /usr/bin/time >/dev/null || { echo "needs GNU time (apt-get install time)" >&2; exit 1; }

[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --locked -q
DETRC=target/release/detrc
PYTHON=$PY scripts/install_onnxruntime.sh >/dev/null
export DETRC_ONNXRUNTIME="$PWD/.ort/libonnxruntime.so.1.31.1"
if [ ! -f "$MODEL" ]; then
    echo "generating $MODEL (random seeded DETR-R50)..." >&2
    "$FIXPY" scripts/make_fixtures.py --config r50 --out "$MODEL"
fi
"$SIMPY" -c "import onnxsim" 2>/dev/null || scripts/setup_python.sh --fixtures

# median seconds and max KB over RUNS runs of a command
measure() {
    local log=$1; shift
    : >"$log.all"
    for _ in $(seq "$RUNS"); do
        /usr/bin/time -f "%e %M" -o "$log.one" "$@" >/dev/null 2>"$log.err" || { cat "$log.err" >&2; exit 1; }
        cat "$log.one" >>"$log.all"
    done
    sort -n "$log.all" | awk '{t[NR]=$1; if ($2>m) m=$2} END {print t[int((NR+1)/2)], m}'
}

# 1 + 3: verification against onnxsim (runs interleaved so both see the same machine load)
: >"$OUT/v.all"; : >"$OUT/s.all"
for _ in $(seq "$RUNS"); do
    /usr/bin/time -f "%e %M" -o "$OUT/v.one" "$DETRC" compile "$MODEL" -o "$OUT/r50.detrc.onnx" --verify \
        --reference onnxruntime 2>"$OUT/verify.log" || { cat "$OUT/verify.log" >&2; exit 1; }
    cat "$OUT/v.one" >>"$OUT/v.all"
    /usr/bin/time -f "%e %M" -o "$OUT/s.one" "$SIMPY" -m onnxsim "$MODEL" "$OUT/r50.onnxsim.onnx" >/dev/null 2>&1
    cat "$OUT/s.one" >>"$OUT/s.all"
done
med() { sort -n "$1" | awk '{t[NR]=$1; if ($2>m) m=$2} END {print t[int((NR+1)/2)], m}'; }
read -r v_s v_kb < <(med "$OUT/v.all")
read -r s_s s_kb < <(med "$OUT/s.all")
read -r c_s c_kb < <(measure "$OUT/c" "$DETRC" compile "$MODEL" -o "$OUT/r50.detrc.onnx" -q)
verified=$(grep -o 'verified with .*' "$OUT/verify.log" || true)
t_s=; t_kb=
if [ "${TRACT:-0}" = 1 ]; then
    /usr/bin/time -f "%e %M" -o "$OUT/t.one" "$DETRC" compile "$MODEL" -o "$OUT/r50.tract.onnx" --verify \
        --reference tract -q
    read -r t_s t_kb <"$OUT/t.one"
fi
model_bytes=$(stat -c %s "$MODEL")

# 2: inference, detrc bench (onnxruntime) against onnxruntime's Python API, same model,
# alternated so both see the same load
: >"$OUT/b.all"
for _ in $(seq "$RUNS"); do
    "$DETRC" bench "$OUT/r50.detrc.onnx" --reference onnxruntime --iters "$ITERS" --json \
        | "$PY" -c "import json,sys; print('detrc', json.load(sys.stdin)['results'][0]['median_ms'])" >>"$OUT/b.all"
    "$PY" benches/ort_python.py "$OUT/r50.detrc.onnx" --threads "$THREADS" --iters "$ITERS" \
        | "$PY" -c "import json,sys; print('python', json.load(sys.stdin)['median_ms'])" >>"$OUT/b.all"
done

# 4: detections of the compiled model (detrc run, onnxruntime) against ref_detect.py on the
# original, every query kept (threshold 0)
rm -rf "$OUT/run"
"$DETRC" run "$OUT/r50.detrc.onnx" --images examples/images --threshold 0 -o "$OUT/run" -q --reference onnxruntime
"$PY" scripts/ref_detect.py "$MODEL" --images examples/images --threshold 0 -o "$OUT/ref.json"

"$PY" - "$MODEL" "$model_bytes" "$RUNS" "$v_s" "$v_kb" "$s_s" "$s_kb" "$c_s" "$c_kb" "$OUT/b.all" \
    "$OUT/run/detections.json" "$OUT/ref.json" "$verified" "${t_s:-nan}" "${t_kb:-nan}" <<'PY'
import json, statistics, sys
(model, size, runs, v_s, v_kb, s_s, s_kb, c_s, c_kb, bench, dets, ref, verified,
 t_s, t_kb) = sys.argv[1:]
size = int(size); mb = lambda kb: float(kb) / 1024
v_s, s_s, c_s, t_s = map(float, (v_s, s_s, c_s, t_s))
b = {"detrc": [], "python": []}
for line in open(bench):
    k, v = line.split(); b[k].append(float(v))
d_ms, p_ms = statistics.median(b["detrc"]), statistics.median(b["python"])
print(f"\n{model}: {size / 1e6:.1f} MB, median of {runs} runs each, interleaved")
print(f"  {verified}")
print(f"{'':34} {'seconds':>8} {'peak MB':>8}")
print(f"{'python -m onnxsim':34} {s_s:8.2f} {mb(s_kb):8.0f}")
print(f"{'detrc compile':34} {c_s:8.2f} {mb(c_kb):8.0f}")
print(f"{'detrc compile --verify (ort)':34} {v_s:8.2f} {mb(v_kb):8.0f}")
if t_s == t_s:
    print(f"{'detrc compile --verify (tract)':34} {t_s:8.2f} {mb(t_kb):8.0f}")
print(f"  verify wall / onnxsim wall: {v_s / s_s:.3f}x (target <= 0.25x)")
print(f"  verify peak RSS / model file: {float(v_kb) * 1024 / size:.2f}x (target <= 2x); "
      f"/ onnxsim's peak: {float(v_kb) / float(s_kb):.2f}x")
print(f"inference on the compiled model, median ms over {len(b['detrc'])} x ITERS runs:")
print(f"  detrc bench (onnxruntime) {d_ms:.1f} ms, onnxruntime Python API {p_ms:.1f} ms: "
      f"{d_ms / p_ms:.3f}x (target <= 1.1x)  [per run: detrc {b['detrc']}, python {b['python']}]")
ours, theirs = json.load(open(dets)), json.load(open(ref))
bad = [(a, r) for a, r in zip(ours, theirs)
       if a["image"] != r["image"] or a["category_id"] != r["category_id"]
       or abs(a["score"] - r["score"]) > 2e-3
       or max(abs(x - y) for x, y in zip(a["bbox"], r["bbox"])) > 1.0]
ds = max(abs(a["score"] - r["score"]) for a, r in zip(ours, theirs))
db = max(max(abs(x - y) for x, y in zip(a["bbox"], r["bbox"])) for a, r in zip(ours, theirs))
same = len(ours) == len(theirs) and not bad
print(f"detections (compiled, detrc run) vs ref_detect.py (original): {len(ours)} vs {len(theirs)}, "
      f"max |score diff| {ds:.2e}, max |box diff| {db:.3f} px: {'SAME' if same else 'DIFFERENT'}")
sys.exit(0 if same else 1)
PY
