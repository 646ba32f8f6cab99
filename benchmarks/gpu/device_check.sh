#!/usr/bin/env bash
# The prepared check of the GPU path, sized to stay under 8 minutes on one H100/H200 (each step has its own
# timeout; the sum of the timeouts is 470 s). Run from the repository root:
#   DATA=path/to/PurdueShapes5MultiObject/ OUT=results bash benchmarks/gpu/device_check.sh
# WHEELS=folder installs DLStudio and pymsgbox offline first (for a machine with no index).
# S scales every iteration count and DEPTH sets the network (default 16); EXTRA is added to every run and grid
# command, GRID to the packed grid's, BENCH to bench_gpu.py's; GPUS_PER_RUN (default 0.125: 8 runs share the card). The suite runs this script on a CPU with small values of all of them.
#  1. resume on the device: a run stopped by SIGTERM and resumed, an uninterrupted run and its twin; the sha256 of
#     each one's saved_model (the twin shows whether the device itself repeats a run bit for bit);
#  2. those weights and that checkpoint loaded with torch.load's defaults in a process that sees no GPU;
#  3. benchmarks/gpu/bench_gpu.py at 64x64 and 256x256: bare steps and run's loop, every row in one process;
#  4. the main job with --compile: wall time, test mIoU, and whether the step fell back to eager;
#  5. the homework-dense grid: one run's time, then all its runs packed on the card with Ray (--gpus-per-run;
#     without Ray, one `experiments` process per seed at once).
set -u
S=${S:-1}
DEPTH=${DEPTH:-16}
OUT=${OUT:-/tmp/device_check}
PY=${PY:-python3}
EXTRA=${EXTRA:-}
GRID=${GRID:-}
mkdir -p "$OUT"
it() { $PY -c "print(max(8, int($1 * $S)))"; }
if [ -n "${WHEELS:-}" ]; then
  $PY -m pip install --no-deps --no-index -q "$WHEELS"/*.whl 2>&1 | tail -1
  $PY -m pip install --no-deps --no-index --no-build-isolation -q -e . 2>&1 | tail -1
fi
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU";
  $PY -c "import torch; print('torch', torch.__version__)"; } > "$OUT/device.txt"
D=$(cd "${DATA:-./data/PurdueShapes5MultiObject/}" && pwd)/
: > "$OUT/times.txt"
timed() {  # name, timeout, command...: wall seconds and exit code into times.txt, output into <name>.log
  local name=$1 limit=$2; shift 2
  local t=$(date +%s.%N)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; local rc=$?
  echo "$name rc=$rc seconds=$($PY -c "print(round($(date +%s.%N)-$t, 1))")" >> "$OUT/times.txt"
}
# shellcheck disable=SC2086  # EXTRA and GRID are lists of arguments
RUN="$PY -m dlstudio_aspp.cli run --data $D --no-progress --workers 0 --depth $DEPTH --log-every 100000 $EXTRA"
sha() { $PY -c "import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest())" "$1" 2>/dev/null; }

# 1. Resume on the device.
N=$(it 600)
EVERY=$($PY -c "print(max(2, $N // 6))")
R="$RUN --max-iters $N --test-subset 8 --checkpoint-every $EVERY --checkpoint-seconds 0"
timed resume_full 50 $R --out "$OUT/resume/full"
timed resume_twin 50 $R --out "$OUT/resume/twin"
t=$(date +%s)
$R --out "$OUT/resume/stopped" > "$OUT/resume_stop.log" 2>&1 &
pid=$!
while kill -0 "$pid" 2>/dev/null && [ ! -f "$OUT/resume/stopped/saved_model.ckpt" ] && [ $(($(date +%s) - t)) -lt 50 ]; do
  sleep 0.1
done
kill -TERM "$pid" 2>/dev/null
wait "$pid"; echo "resume_stop rc=$?" >> "$OUT/times.txt"
timed resume_resumed 50 $R --out "$OUT/resume/stopped" --resume
{ for k in full twin stopped; do echo "$k $(sha "$OUT/resume/$k/saved_model")"; done
  grep -ho "stopped at iteration [0-9]*" "$OUT/resume_stop.log"
  grep -ho "resumed from .*" "$OUT/resume_resumed.log"; } > "$OUT/resume.txt"

# 2. The weights and the checkpoint without a GPU, read as stock's scripts read them.
timed load_without_gpu 20 env CUDA_VISIBLE_DEVICES= $PY -c "
import sys, torch
assert not torch.cuda.is_available()
for path in sys.argv[1:]:
    obj = torch.load(path, weights_only=True)
    print('read without a GPU:', path, len(obj), 'entries')" "$OUT/resume/full/saved_model" "$OUT/resume/full/saved_model.ckpt"

# 3. Bare steps against run's loop, 64x64 and 256x256.
timed bench_gpu 130 $PY benchmarks/gpu/bench_gpu.py --iters "$(it 150)" --warmup "$(it 25)" --depth "$DEPTH" \
  --json "$OUT/bench_gpu.json" ${BENCH:-}

# 4. The main job with --compile.
timed main_compile 130 $RUN --out "$OUT/main_compile" --compile --max-iters "$(it 2500)"

# 5. The homework-dense grid: one run, then every run packed on the card.
G="$PY -m dlstudio_aspp.cli experiments --preset homework-dense --data $D --no-progress --workers 0 --depth $DEPTH --no-report $EXTRA"
timed grid_one_run 40 $G --out "$OUT/grid_one" --loss bce+dice --aspp on --seed 0 --max-iters "$(it 1500)"
P="$G --max-iters $(it 300) $GRID"
if $PY -c "import ray" 2>/dev/null; then
  timed grid_packed_ray 100 $P --out "$OUT/grid_packed" --executor ray --gpus-per-run "${GPUS_PER_RUN:-0.125}" \
    --cpus-per-run 2
else
  echo "ray is not installed here: the grid is packed as one experiments process per seed" > "$OUT/grid_packed.txt"
  timed grid_packed_seeds 100 bash -c "for s in 0 1 2; do $P --out $OUT/grid_packed_\$s --seed \$s & done; wait"
fi

(cd "$OUT" && find . -name 'saved_model.ckpt' -o -name 'samples.npz' | xargs rm -f)
{ cat "$OUT/device.txt" "$OUT/times.txt" "$OUT/resume.txt"
  grep -h "test mIoU\|runs finished\|compile" "$OUT"/main_compile.log "$OUT"/grid_*.log 2>/dev/null
  tail -14 "$OUT/bench_gpu.log"; } | tee "$OUT/summary.txt"
