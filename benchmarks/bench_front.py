"""Person IoU per CPU-minute: the training-step rate of each point of the front.

Usage: python benchmarks/bench_front.py [--depths 4 8 16] [--sizes 96 128] [--batches 4 8]

Times the bare training step (mUNetASPP, dense head, bce+dice, AdamW: the coco recipe's
step without data loading) for each depth x input size x batch size in one process, on
this machine's threads, and prints iterations and images per second with the ratio to
the coco recipe's own point (depth 16, 128x128, batch 4). Multiplying a run's iterations
by 1/rate gives the minutes axis of the front in benchmarks/RESULTS.md; the person IoU of
each point comes from ``dlstudio-aspp run`` (benchmarks/front.sh).
"""
import argparse
import itertools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import coco_recipe_step, machine, table  # noqa: E402


def step_rate(depth: int, size: int, batch: int, seconds: float = 6.0) -> float:
    """Training iterations per second of one (depth, size, batch) point, after 3 warm-up steps."""
    from dlstudio_aspp.model import mUNetASPP

    torch.manual_seed(0)
    step = coco_recipe_step(mUNetASPP(skip_connections=True, depth=depth, num_classes=1, head="dense").train(),
                            batch, size)
    for _ in range(3):
        step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    return n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--depths", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--sizes", type=int, nargs="+", default=[96, 128])
    ap.add_argument("--batches", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--seconds", type=float, default=6.0)
    args = ap.parse_args()
    print(machine())
    rates = {p: step_rate(*p, seconds=args.seconds)
             for p in itertools.product(args.depths, args.sizes, args.batches)}
    ref = rates.get((16, 128, 4))
    rows = [[d, s, b, f"{r:.2f}", f"{r * b:.1f}", f"{r / ref:.2f}" if ref else "-", f"{1000 / r / 60:.1f}"]
            for (d, s, b), r in rates.items()]
    table(rows, ["depth", "size", "batch", "it/s", "images/s", "x (16, 128, 4)", "min per 1000 it"])


if __name__ == "__main__":
    main()
