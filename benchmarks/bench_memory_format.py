"""The modern recipe's training step on CPU in the default (contiguous) memory format
against channels-last, the format oneDNN convolves fastest.

mUNetASPP depth 16, dense head, one output class, the coco recipe's AdamW and BCE+Dice; forward, backward and
step, best of 3 x N steps, the two formats interleaved so that both see the same load.

Usage: python benchmarks/bench_memory_format.py [--steps N] [--sizes 64 128]
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import coco_recipe_step, machine, table, timeit  # noqa: E402


def step_time(net, size: int, batch: int, steps: int, fmt) -> float:
    step = coco_recipe_step(net, batch, size, memory_format=fmt)
    step()  # warm-up: oneDNN picks its kernels on the first call
    return timeit(lambda: [step() for _ in range(steps)], repeat=3) / steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    args = ap.parse_args()
    from dlstudio_aspp.model import mUNetASPP

    rows = []
    for size in args.sizes:
        torch.manual_seed(0)
        net = mUNetASPP(depth=16, num_classes=1, head="dense").train()
        times = {torch.contiguous_format: [], torch.channels_last: []}
        for _ in range(2):
            for fmt in times:
                times[fmt].append(step_time(net, size, 4, args.steps, fmt))
        c, cl = min(times[torch.contiguous_format]), min(times[torch.channels_last])
        rows.append([f"{size}x{size}, batch 4", f"{c * 1e3:.0f}", f"{cl * 1e3:.0f}", f"{c / cl:.2f}x"])
    print(f"machine: {machine()}")
    table(rows, ["input", "contiguous step (ms)", "channels-last step (ms)", "speed-up"])


if __name__ == "__main__":
    main()
