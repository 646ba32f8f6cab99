"""Helpers shared by the benchmarks: timing, a tiny table printer, the bare training step every
loop is measured against, and stock DLStudio set up as its example sets it up."""
import platform
import time

import torch


def timeit(fn, repeat=1):
    """Best wall time of ``repeat`` calls, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def table(rows, header):
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


def bare_step(opt, forward_loss, x, y) -> None:
    """One bare training step: zero_grad, forward and loss (``forward_loss(x, y)``), backward, optimizer step;
    nothing else (no logging, no host sync): what a training loop's overhead is measured against."""
    opt.zero_grad()
    forward_loss(x, y).backward()
    opt.step()


def coco_recipe_step(net, batch: int, size: int, memory_format=torch.contiguous_format):
    """One bare step of the coco recipe (AdamW at lr 1e-3, weight decay 1e-4, BCE + Dice on one class) on a fixed
    random batch: x (B, 3, size, size), target (B, 1, size, size); returns the step as a callable."""
    from dlstudio_aspp.losses import get_loss

    net = net.to(memory_format=memory_format)
    x = torch.rand(batch, 3, size, size).contiguous(memory_format=memory_format)
    target = (torch.rand(batch, 1, size, size) > 0.5).float()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = get_loss("bce+dice")
    return lambda: bare_step(opt, lambda a, b: loss_fn(net(a), b), x, target)


def real_shapes():
    """The folder holding the four real PurdueShapes5MultiObject files (fetched once into the package's cache)."""
    from dlstudio_aspp.data.sources import cache_dir, fetch_shapes

    src = cache_dir() / "shapes"
    fetch_shapes(src, log=lambda s: None)
    return src


def stock_dlstudio(dataroot, **kw):
    """(the DLStudio class, an instance as stock's example makes it: 64x64, batch 4, SGD lr 1e-4 momentum 0.9,
    the five shape classes, on the CPU); ``kw`` overrides any argument."""
    from dlstudio_aspp.dlstudio_glue import load_dlstudio

    DLStudio = load_dlstudio()
    args = dict(dataroot=str(dataroot).rstrip("/") + "/", image_size=[64, 64], path_saved_model="m", momentum=0.9,
                learning_rate=1e-4, epochs=1, batch_size=4, classes=("rectangle", "triangle", "disk", "oval", "star"),
                use_gpu=False)
    args.update(kw)
    return DLStudio, DLStudio(**args)
