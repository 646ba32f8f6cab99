"""First and second load of PurdueShapes5MultiObject-10000-train.gz: stock DLStudio against ours.

Usage: python benchmarks/bench_loading.py [DATAROOT]   (default: fetched into the cache)

Stock caches the decoded dataset as torch_saved_*.pt in the working directory; on torch
>= 2.6 its second load fails (torch.load weights_only=True). For reference only, the
benchmark also times that second load with weights_only=False on the file stock itself
just wrote in this run's temporary folder.
"""
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, real_shapes, stock_dlstudio, table, timeit  # noqa: E402

FILE = "PurdueShapes5MultiObject-10000-train.gz"


def main():
    from dlstudio_aspp.data.shapes import PurdueShapes5MultiObjectDataset as Fast
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else real_shapes()
    work = Path(tempfile.mkdtemp(prefix="bench_loading_"))
    data = work / "data"
    data.mkdir()
    os.symlink(src / FILE, data / FILE)
    os.chdir(work)
    DLStudio, dls = stock_dlstudio(data)
    seg = DLStudio.SemanticSegmentation(dl_studio=dls, max_num_objects=5)
    Stock = DLStudio.SemanticSegmentation.PurdueShapes5MultiObjectDataset

    s1 = timeit(lambda: Stock(dl_studio=dls, segmenter=seg, train_or_test="train", dataset_file=FILE))
    stock_cache = sum(p.stat().st_size for p in work.glob("torch_saved_*.pt"))
    try:
        Stock(dl_studio=dls, segmenter=seg, train_or_test="train", dataset_file=FILE)
        stock_second = "worked"
    except Exception as exc:
        stock_second = f"FAILS: {type(exc).__name__}"
    orig = torch.load
    torch.load = lambda *a, **k: orig(*a, **{**k, "weights_only": False})
    s2 = timeit(lambda: Stock(dl_studio=dls, segmenter=seg, train_or_test="train", dataset_file=FILE))
    torch.load = orig

    # ours: the .npz cache goes beside the data file
    for p in (data / ".dlstudio_aspp_cache").glob("*"):
        p.unlink()
    o1 = timeit(lambda: Fast(dls, seg, "train", FILE))
    o2 = timeit(lambda: Fast(dls, seg, "train", FILE), repeat=3)
    ours_cache = sum(p.stat().st_size for p in (data / ".dlstudio_aspp_cache").glob("*.npz"))
    print(f"machine: {machine()}")
    table([
        ["first load (s)", f"{s1:.1f}", f"{o1:.1f}", f"{s1 / o1:.1f}x"],
        ["second load (s)", f"{s2:.2f} (weights_only=False; default {stock_second})", f"{o2:.2f}", f"{s2 / o2:.1f}x"],
        ["cache size (MB)", f"{stock_cache / 1e6:.0f}", f"{ours_cache / 1e6:.0f}", f"{stock_cache / ours_cache:.1f}x smaller"],
    ], ["", "stock DLStudio", "dlstudio-aspp", "ratio"])


if __name__ == "__main__":
    main()
