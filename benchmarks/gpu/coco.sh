#!/usr/bin/env bash
# The prepared GPU check of the coco preset's budget (issue 18), about 6-8 minutes on one
# H100/H200. Run from the repository root, with coco_person beside the repository:
#   COCO=../shared/data/coco_person OUT=results bash benchmarks/gpu/coco.sh
# COCO may name several folders: COCO="../shared/data/coco_person ../shared/data/coco_person_extra" (and
# TRAIN_MIN=100 admits their smaller people to training only).
# S scales the epochs (S=0.01 for a dry run, which also works on a CPU).
#  1. build-coco at the homework's 256x256 (person).
#  2. run --dataset coco (the coco recipe) at the coco preset's depth 16 and 150 epochs, ASPP on, seed 0,
#     with --compile: wall time, the validation curve, test person IoU against the floors.
set -u
S=${S:-1}
OUT=${OUT:-/tmp/gpu_coco}
PY=${PY:-python3}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>&1
# shellcheck disable=SC2086  # COCO is a list of folders
$PY -m dlstudio_aspp.cli build-coco --coco-root ${COCO:-../shared/data/coco_person} ${TRAIN_MIN:+--train-min-size $TRAIN_MIN} --classes person --size 256 \
    --out "$OUT/person256" --no-progress > "$OUT/build.log" 2>&1
EPOCHS=$($PY -c "print(max(1, int(150 * $S)))")
t=$(date +%s.%N)
timeout 540 $PY -m dlstudio_aspp.cli run --dataset coco --data "$OUT/person256" --epochs "$EPOCHS" --depth 16 --compile \
    --no-progress --workers 0 --out "$OUT/runs/coco150" > "$OUT/coco150.log" 2>&1
echo "coco150 rc=$? seconds=$($PY -c "print(round($(date +%s.%N)-$t, 1))")" > "$OUT/times.txt"
(cd "$OUT" && find runs -name 'saved_model' -o -name '*.ckpt' -o -name 'samples.npz' | xargs rm -f)
cat "$OUT/gpu.txt" "$OUT/times.txt"; grep -E "validation|floors|test mIoU" "$OUT/coco150.log" | tail -14
