"""Training-step speed on one device, in one process and one table: the bare step against run's loop.

Rows, at 64x64 batch 4 (PurdueShapes) and 256x256 batch 4 (the COCO shape), depth 16,
dense head, AdamW, BCE+Dice (the main job's model and recipe):

- bare eager: zero_grad, forward, loss, backward, optimizer step, nothing else;
- bare CUDA graphs: the same with forward+loss under ``torch.compile(mode="reduce-overhead")``
  (inductor's default mode on CPU), as ``--compile`` does;
- run's loop, eager and with ``compile=True``: :func:`dlstudio_aspp.runner.train_run` on
  random data of that shape (device-resident batches on CUDA, as ``run`` uses them).

Every row is timed over ``--iters`` steps after ``--warmup`` steps; the ratio columns are
against the bare eager and the bare CUDA-graph step of the same shape. A row that crashes, or
a ``--compile`` loop that fell back to eager, is printed as failed with its cause, and the
other rows still run. On a CPU it runs too (use small
``--iters``): that is how the script itself is tested.

Usage: python benchmarks/gpu/bench_gpu.py [--iters 200] [--warmup 30] [--depth 16] [--sides 64 256] [--json OUT.json]
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import bare_step, machine, table  # noqa: E402

SHAPES = ((64, 5), (256, 1))  # (side, classes): PurdueShapes, a one-class COCO set


class RandomSet(torch.utils.data.Dataset):
    """n images of one shape with random masks, held as uint8 arrays like PurdueShapes (so CUDA draws on the device)."""

    def __init__(self, n: int, side: int, classes: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (n, 3, side, side), generator=g, dtype=torch.uint8)
        self.masks = (torch.rand(n, classes, side, side, generator=g) > 0.7).to(torch.uint8) * 50
        self.label_map = {f"c{k}": 50 * (k + 1) for k in range(classes)}
        self.image_size = [side, side]

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        return {"image": self.images[i].float(), "mask_tensor": self.masks[i]}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare(side: int, classes: int, device, compiled: bool, iters: int, warmup: int, depth: int) -> float:
    from dlstudio_aspp.losses import get_loss
    from dlstudio_aspp.model import mUNetASPP

    torch.manual_seed(0)
    net = mUNetASPP(depth=depth, num_classes=classes, head="dense").to(device).train()
    loss_fn = get_loss("bce+dice")
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4, fused=device.type == "cuda")
    x = torch.rand(4, 3, side, side, device=device)
    y = (torch.rand(4, classes, side, side, device=device) > 0.7).float()

    def forward_loss(a, b):
        return loss_fn(net(a), b)

    fn = forward_loss
    if compiled:
        fn = torch.compile(forward_loss, mode="reduce-overhead" if device.type == "cuda" else None, dynamic=False)
    for k in range(warmup + iters):
        if k == warmup:
            sync(device)
            t = time.perf_counter()
        bare_step(opt, fn, x, y)
    sync(device)
    return iters / (time.perf_counter() - t)


def loop(side: int, classes: int, device, compiled: bool, iters: int, warmup: int, depth: int) -> float:
    """run's loop (:func:`dlstudio_aspp.runner.train_run`) in it/s; raises when ``--compile`` fell back to eager, so
    that a fallback is reported as such and not timed as the compiled loop."""
    from dlstudio_aspp import training
    from dlstudio_aspp.card import RunCard
    from dlstudio_aspp.run_files import RunFiles
    from dlstudio_aspp.losses import get_loss
    from dlstudio_aspp.runner import build_model, train_run
    from dlstudio_aspp.spec import RunSpec

    data = RandomSet(4 * (warmup + iters), side, classes)
    spec = RunSpec.build("modern", seed=0, max_iters=warmup + iters, progress=False, compile=compiled, depth=depth,
                         checkpoint_every=0, log_every=10 ** 6).validate()
    net = build_model(spec, classes)
    folder = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    card = RunCard.for_training(RunFiles.at(folder).weights, net, data, [side, side], spec, get_loss(spec.loss))
    stamps, real = [], training._Run.step

    def step(self, batch):
        real(self, batch)
        if len(stamps) in (warmup - 1, warmup + iters - 1):
            sync(device)
        stamps.append(time.perf_counter())

    training._Run.step = step
    try:
        _, history = train_run(spec, card, net, torch.utils.data.DataLoader(data, batch_size=4), device,
                         perf_file=str(folder / "perf.txt"))
    finally:
        training._Run.step = real
    if history.get("compile_fallback"):
        raise RuntimeError(f"--compile fell back to eager ({history['compile_fallback']})")
    return iters / (stamps[warmup + iters - 1] - stamps[warmup - 1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--depth", type=int, default=16, help="mUNet depth (default: 16, the main job's)")
    ap.add_argument("--sides", type=int, nargs="+", default=[side for side, _ in SHAPES], help="image sizes (64 256)")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    rows, out = [], {"device": name, "machine": machine(), "iters": args.iters}
    for side, classes in [(side, classes) for side, classes in SHAPES if side in args.sides]:
        res, failed = {}, {}
        for label, fn, compiled in (("bare eager", bare, False), ("bare CUDA graphs", bare, True),
                                    ("run's loop, eager", loop, False), ("run's loop, --compile", loop, True)):
            try:  # a row that crashes (a compiler bug) is recorded as such; the other rows still run
                res[label] = fn(side, classes, device, compiled, args.iters, args.warmup, args.depth)
                print(f"{side}x{side} {label}: {res[label]:.1f} it/s", flush=True)
            except Exception as exc:
                failed[label] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}"
                print(f"{side}x{side} {label}: FAILED ({failed[label]})", flush=True)
        for label in ("bare eager", "bare CUDA graphs", "run's loop, eager", "run's loop, --compile"):
            v = res.get(label)
            ratios = [f"{v / res[base]:.2f}x" if v and res.get(base) else "-" for base in ("bare eager", "bare CUDA graphs")]
            rows.append([f"{side}x{side}", label, f"{v:.1f}" if v else "failed", f"{4 * v:.0f}" if v else "-", *ratios])
        out[f"{side}x{side}"] = dict(res, failed=failed)
    print(f"device: {name}; {machine()}; batch 4, depth {args.depth}, dense head, AdamW, "
          f"BCE+Dice; {args.iters} timed steps after {args.warmup}")
    table(rows, ["input", "step", "it/s", "images/s", "vs bare eager", "vs bare CUDA graphs"])
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
