"""COCO: builder throughput, and dataset loading at 256x256 against the training step rate.

Usage: python benchmarks/bench_coco.py [--coco-root ../shared/data/coco_tiny]

Builds the set from the real COCO sample (images per second), then times
COCOSegmentationDataset item loading against one mUNetASPP training step (depth 16,
batch 4, 256x256) in the same run: loading must not be the bottleneck.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bare_step, machine, table, timeit  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--coco-root", default=str(REPO.parent / "shared" / "data" / "coco_tiny"))
    ap.add_argument("--classes", nargs="+", default=["person", "dog", "cat", "motorcycle", "pizza", "bus", "dining table"])
    args = ap.parse_args()
    from dlstudio_aspp.data.coco import COCOSegmentationDataset
    from dlstudio_aspp.data.coco_build import build_coco
    from dlstudio_aspp.model import mUNetASPP

    out = Path(tempfile.mkdtemp(prefix="bench_coco_")) / "set"
    t = time.perf_counter()
    index = build_coco(args.coco_root, out, classes=args.classes, progress=False, log=lambda s: None)
    build_s = time.perf_counter() - t
    n_built = sum(len(v) for v in index["splits"].values())

    class D:
        image_size = [256, 256]
        dataroot = str(out)

    ds = COCOSegmentationDataset(D(), None, "train")
    n = len(ds)
    load_s = timeit(lambda: [ds[i] for i in range(n)], repeat=3) / n
    bs = 4
    net = mUNetASPP(depth=16, num_classes=len(args.classes)).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)
    batch = torch.utils.data.default_collate([ds[i % n] for i in range(bs)])

    def step():
        bare_step(opt, lambda a, b: torch.nn.functional.mse_loss(net(a), b), batch["image"], batch["mask_tensor"].float())

    step()
    step_s = timeit(step, repeat=3)
    print(f"machine: {machine()}; {args.coco_root}, classes {args.classes}")
    table([
        ["build-coco", f"{n_built / build_s:.1f} images/s", f"{n_built} images in {build_s:.1f} s"],
        ["dataset item load (256x256)", f"{1 / load_s:.0f} images/s", f"{load_s * 1e3:.1f} ms per image"],
        ["training step (depth 16, batch 4)", f"{bs / step_s:.2f} images/s", f"{step_s:.2f} s per step"],
        ["loading share of a step", f"{bs * load_s / step_s:.2%}", "single process, no workers"],
    ], ["what", "rate", "detail"])


if __name__ == "__main__":
    main()
