#!/usr/bin/env bash
# The prepared GPU check behind benchmarks/RESULTS.md ("The GPU at the card's speed"), about
# 8 minutes on one H100/H200. Run from the repository root:
#   DATA=path/to/PurdueShapes5MultiObject/ OUT=results bash benchmarks/gpu/checks.sh
# WHEELS=folder installs DLStudio and pymsgbox offline first (for a machine with no index).
# S scales every iteration count (S=0.01 for a dry run, which also works on a CPU).
#  1. benchmarks/gpu/bench_gpu.py: bare eager / bare CUDA-graph step / run's loop eager / with
#     --compile, at 64x64 and 256x256 batch 4, one process, one table (alone on the card).
#  2. the main job with --compile: 2500 iterations, wall time and test mIoU (alone).
#  3. the homework budget with --compile: 15000 iterations, wall time and test mIoU (alone).
set -u
S=${S:-1}
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
PY=${PY:-python3}
it() { $PY -c "print(max(8, int($1 * $S)))"; }
if [ -n "${WHEELS:-}" ]; then
  $PY -m pip install --no-deps --no-index -q "$WHEELS"/*.whl 2>&1 | tail -1
  $PY -m pip install --no-deps --no-index --no-build-isolation -q -e . 2>&1 | tail -1
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>&1
D=$(cd "${DATA:-./data/PurdueShapes5MultiObject/}" && pwd)/
$PY -c "
from pathlib import Path
from dlstudio_aspp.data.shapes import load_arrays
for f in ('PurdueShapes5MultiObject-10000-train.gz', 'PurdueShapes5MultiObject-1000-test.gz'):
    load_arrays(Path('$D') / f, [64, 64])
print('data cached')"
RUN="$PY -m dlstudio_aspp.cli run --data $D --no-progress --log-every 500 --workers 0"
timed() {  # name, timeout, command...: wall seconds into $OUT/times.txt, output into $OUT/<name>.log
  local name=$1 limit=$2; shift 2
  local t=$(date +%s.%N)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; local rc=$?
  echo "$name rc=$rc seconds=$($PY -c "print(round($(date +%s.%N)-$t, 1))")" >> "$OUT/times.txt"
}
timed bench_gpu 200 $PY benchmarks/gpu/bench_gpu.py --iters $(it 200) --warmup $(it 30) --json "$OUT/bench_gpu.json"
timed main_compile 75 $RUN --out "$OUT/runs/main_compile" --compile --max-iters $(it 2500)
timed hw15000_compile 240 $RUN --out "$OUT/runs/hw15000_compile" --compile --max-iters $(it 15000)
grep -h "test mIoU" "$OUT"/main_compile.log "$OUT"/hw15000_compile.log > "$OUT/miou.txt" 2>/dev/null
(cd "$OUT" && find runs -name 'saved_model' -o -name '*.ckpt' -o -name 'samples.npz' | xargs rm -f)
cat "$OUT/times.txt" "$OUT/miou.txt"; tail -12 "$OUT/bench_gpu.log"
