"""One training step (forward, backward, SGD step) of stock mUNet against mUNetASPP, depth 16.

Usage: python benchmarks/bench_step.py [--steps N]
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bare_step, machine, table, timeit  # noqa: E402


def step_time(net, batch, size, steps):
    x = torch.rand(batch, 3, size, size) * 255
    t = torch.rand(batch, 5, size, size) * 250
    opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)
    loss_fn = torch.nn.MSELoss()

    def step():
        bare_step(opt, lambda a, b: loss_fn(net(a), b), x, t)

    step()  # warm-up
    return timeit(lambda: [step() for _ in range(steps)], repeat=3) / steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    from dlstudio_aspp.model import StockMUNet, mUNetASPP

    rows = []
    for size, batch in ((64, 4), (256, 2)):
        torch.manual_seed(0)
        stock = StockMUNet(skip_connections=True, depth=16).train()
        ours = mUNetASPP(skip_connections=True, depth=16).train()
        steps = args.steps if size == 64 else max(2, args.steps // 4)
        # interleave to share any drift in machine load
        ts, to = [], []
        for _ in range(2):
            ts.append(step_time(stock, batch, size, steps))
            to.append(step_time(ours, batch, size, steps))
        s, o = min(ts), min(to)
        added = sum(p.numel() for p in ours.aspp.parameters())
        rows.append([f"{size}x{size}, batch {batch}", f"{s * 1e3:.0f}", f"{o * 1e3:.0f}", f"{o / s:.3f}", f"+{(o / s - 1) * 100:.1f}%", f"{added:,}"])
    print(f"machine: {machine()}")
    table(rows, ["input", "stock mUNet step (ms)", "mUNetASPP step (ms)", "ratio", "ASPP adds", "ASPP params"])


if __name__ == "__main__":
    main()
