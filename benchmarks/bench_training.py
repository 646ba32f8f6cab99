"""Our training loop against stock's method and against the bare model step, eager and compiled.

Same model (mUNetASPP, depth 16), same data (the first N*batch real training images),
same batch size (4), N iterations, in the same run. Reports images per second: whole
loops (best of three rounds, order rotated), and the steady state of our loop eager and
with ``compile=True`` (steps after the first three, so compiling is not counted; the
compiled row runs once, after the others).

Usage: python benchmarks/bench_training.py [--iters N] [--no-compile]
"""
import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bare_step, machine, real_shapes, stock_dlstudio, table  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled row (compiling takes minutes on CPU)")
    args = ap.parse_args()
    from dlstudio_aspp.model import mUNetASPP
    from dlstudio_aspp.segmentation import SemanticSegmentationASPP

    src = real_shapes()
    os.chdir(tempfile.mkdtemp(prefix="bench_training_"))
    bs, n = 4, args.iters
    DLStudio, dls = stock_dlstudio(src, batch_size=bs, use_gpu=True)
    ours = SemanticSegmentationASPP(dl_studio=dls, max_num_objects=5)
    full = ours.PurdueShapes5MultiObjectDataset(dls, ours, "train", "PurdueShapes5MultiObject-10000-train.gz")
    data = torch.utils.data.Subset(full, range(n * bs))
    stock = DLStudio.SemanticSegmentation(dl_studio=dls, max_num_objects=5)
    for seg in (ours, stock):
        seg.train_dataloader = torch.utils.data.DataLoader(data, batch_size=bs, shuffle=True, num_workers=0)
    torch.manual_seed(0)
    net = mUNetASPP(depth=16)

    def bare():
        m = copy.deepcopy(net).train()
        opt = torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9)
        batches = [(b["image"], b["mask_tensor"].float()) for b in torch.utils.data.DataLoader(data, batch_size=bs)]
        t = time.perf_counter()
        for x, y in batches:
            bare_step(opt, lambda a, b: torch.nn.functional.mse_loss(m(a), b), x, y)
        return time.perf_counter() - t

    def timed(fn):
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    loops = {
        "bare": bare,
        "stock": lambda: timed(lambda: stock.run_code_for_training_for_semantic_segmentation(net)),
        "ours": lambda: timed(lambda: ours.run_code_for_training_for_semantic_segmentation(net, progress=True, checkpoint_every=0)),
    }
    runs = {k: [] for k in loops}
    order = list(loops)
    for r in range(3):  # interleaved, order rotated each round, best of three
        for k in order[r:] + order[:r]:
            runs[k].append(loops[k]())
    best = {k: min(v) for k, v in runs.items()}
    ips = {k: n * bs / v for k, v in best.items()}
    ips["ours, steady"] = steady(lambda: ours.run_code_for_training_for_semantic_segmentation(
        net, progress=False, checkpoint_every=0), bs)
    if not args.no_compile:
        ips["ours --compile, steady"] = steady(lambda: ours.run_code_for_training_for_semantic_segmentation(
            net, progress=False, checkpoint_every=0, compile=True), bs)
    print(f"machine: {machine()}; {n} iterations of batch {bs}, 64x64, mUNetASPP depth 16")
    table([[k, f"{n * bs / ips[k]:.1f}" if k in best else "", f"{ips[k]:.2f}", f"{ips[k] / ips['bare']:.3f}",
            f"{ips[k] / ips['stock']:.3f}"] for k in ips], ["loop", "seconds", "images/s", "vs bare step", "vs stock"])


def steady(train, bs: int, skip: int = 3) -> float:
    """Images/s of the training loop's steps after the first ``skip`` (timestamps taken around each step)."""
    from dlstudio_aspp import training

    stamps, real = [], training._Run.step

    def step(self, data):
        out = real(self, data)
        stamps.append(time.perf_counter())
        return out

    training._Run.step = step
    try:
        train()
    finally:
        training._Run.step = real
    return (len(stamps) - 1 - skip) * bs / (stamps[-1] - stamps[skip])


if __name__ == "__main__":
    main()
