#!/usr/bin/env bash
# The GPU checks behind benchmarks/RESULTS.md (learning curves, lr sweep, losses under the
# modern recipe, AMP against fp32, a 4-run grid one at a time against two at once), in one
# call of about 8 minutes on an H200. Run from the repository root:
#   DATA=path/to/PurdueShapes5MultiObject/ OUT=results bash benchmarks/gpu_checks.sh
# WHEELS=folder installs DLStudio and pymsgbox offline first (for a machine with no index).
# S scales every iteration count (S=0.01 for a dry run).
set -u
S=${S:-1}
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
PY=${PY:-python3}
R=$OUT/runs
mkdir -p "$R"
it() { python3 -c "print(max(4, int($1 * $S)))"; }
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
export OMP_NUM_THREADS=1  # the CPU side only launches kernels; many runs share 16 cores
RUN="$PY -m dlstudio_aspp.cli run --data $D --no-progress --log-every 1000 --workers 0"
date +%s > "$OUT/t0"
# Phase 1: everything at once (each run is launch-bound; the GPU has room for many).
P1=${P1:-360}
timeout $P1 $RUN --out $R/hw_dense_modern_15000 --recipe modern --head dense --max-iters $(it 15000) --checkpoint-every 1000 > $R/hw.log 2>&1 &
for head in stock dense; do for recipe in stock modern; do for n in 300 1000 3000; do
  timeout $P1 $RUN --out $R/curve_${head}_${recipe}_$n --recipe $recipe --head $head --max-iters $(it $n) --checkpoint-every 0 > $R/curve_${head}_${recipe}_$n.log 2>&1 &
done; done; done
for loss in mse dice dice+mse:20; do
  timeout $P1 $RUN --out $R/loss_$loss --recipe modern --head dense --loss $loss --max-iters $(it 1000) --checkpoint-every 0 > $R/loss_$loss.log 2>&1 &
done
for lr in 0.001 0.01; do
  timeout $P1 $RUN --out $R/sweep_lr_$lr --recipe modern --head dense --lr $lr --max-iters $(it 3000) --checkpoint-every 0 > $R/sweep_lr_$lr.log 2>&1 &
done
wait
date +%s > "$OUT/t1"
# Phase 2: timings alone on the GPU. AMP against fp32; a 4-run grid one at a time against two at once.
P2=${P2:-45}
for amp in "" "--amp"; do
  timeout $P2 $RUN --out $R/time_fp32${amp:+_amp} --recipe modern --head dense --max-iters $(it 1000) --checkpoint-every 0 $amp > $R/time${amp:+_amp}.log 2>&1
done
G="$PY -m dlstudio_aspp.cli experiments --data $D --preset quick --losses bce+dice --aspp both --max-iters $(it 500) --depth 16 --test-subset 1000 --no-report --no-progress"
t=$(date +%s.%N); timeout 90 $G $R/grid_serial --seeds 0,1 > $R/grid_serial.log 2>&1; echo "serial $(python3 -c "print($(date +%s.%N)-$t)")" > "$OUT/grid_times.txt"
t=$(date +%s.%N); (timeout 90 $G $R/grid_half_a --seeds 0 > $R/grid_half_a.log 2>&1 & timeout 90 $G $R/grid_half_b --seeds 1 > $R/grid_half_b.log 2>&1 & wait); echo "two_at_once $(python3 -c "print($(date +%s.%N)-$t)")" >> "$OUT/grid_times.txt"
date +%s > "$OUT/t2"
# Bundle: the run folders' small files (no weights, no checkpoints).
(cd "$OUT" && tar czf results.tgz --exclude='saved_model' --exclude='*.ckpt' --exclude='samples.npz' runs t0 t1 t2 gpu.txt grid_times.txt && rm -rf runs)
ls -la "$OUT"
