#!/usr/bin/env bash
# Two detrc binaries, every committed fixture: is the compiled ONNX byte for byte the same?
# For restructurings that promise unchanged behaviour (a changed byte names the fixture), and
# the compile time of each binary on the same files in the same run, interleaved (A, B, A, B),
# so a ratio is what to read.
#
#   benches/same_output.sh OLD/detrc NEW/detrc [--batch dynamic] [--verify]
#
# Exit 1 if any output differs.
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1 new=$2; shift 2
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
differ=0; n=0; t_old=0; t_new=0
now() { date +%s%N; }
for f in fixtures/*.onnx fixtures/dynamic/*.onnx fixtures/family/*.onnx fixtures/decode/*.onnx; do
  base=$(basename "$f" .onnx)
  for side in old new; do
    bin=${!side}
    t0=$(now)
    mkdir -p "$out/$side/$base"
    if ! "$bin" compile "$f" -o "$out/$side/$base/out.onnx" -q "$@" >"$out/$side-$base.log" 2>&1; then
      echo "$side failed on $f: $(tail -1 "$out/$side-$base.log")" >&2
    fi
    t1=$(now)
    if [[ $side == old ]]; then t_old=$((t_old + t1 - t0)); else t_new=$((t_new + t1 - t0)); fi
  done
  n=$((n + 1))
  # The model and any external data file beside it; a failure on both sides is also "same".
  if ! diff -rq "$out/old/$base" "$out/new/$base" >/dev/null || ! cmp -s "$out/old-$base.log" "$out/new-$base.log"; then
    echo "DIFFERS: $f"; differ=$((differ + 1))
  fi
done
echo "$n fixtures, $differ differ; compile time old $((t_old / 1000000)) ms, new $((t_new / 1000000)) ms (new/old $(python3 -c "print(f'{$t_new/$t_old:.3f}')"))"
[[ $differ == 0 ]]
