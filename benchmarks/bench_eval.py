"""Our evaluation against stock's testing method: same model, same batches, same run.

Stock loops over pixels in Python and shows only every 50th batch (its display is
redirected to PNG files here so nothing blocks). We time one batch of 4 and the whole
real 1000-image test set for both. Usage: python benchmarks/bench_eval.py [--model PATH]
(default: a freshly initialised mUNet, depth 16; the timing does not depend on the weights).
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, real_shapes, stock_dlstudio, table  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="a saved mUNetASPP state_dict (aspp on), e.g. outputs/run/saved_model")
    args = ap.parse_args()
    from dlstudio_aspp.dlstudio_glue import save_instead_of_show
    from dlstudio_aspp.model import mUNetASPP
    from dlstudio_aspp.segmentation import SemanticSegmentationASPP

    src = real_shapes()
    work = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    os.chdir(work)
    net = mUNetASPP(depth=16)
    if args.model:
        net.load_state_dict(torch.load(args.model, map_location="cpu", weights_only=True))
    torch.save(net.state_dict(), work / "model")
    DLStudio, dls = stock_dlstudio(src, path_saved_model=str(work / "model"))
    save_instead_of_show(dls, work / "stock_display")
    ours = SemanticSegmentationASPP(dl_studio=dls, max_num_objects=5, out_dir=str(work))
    test = ours.PurdueShapes5MultiObjectDataset(dls, ours, "test", "PurdueShapes5MultiObject-1000-test.gz")
    stock = DLStudio.SemanticSegmentation(dl_studio=dls, max_num_objects=5)
    one = torch.utils.data.Subset(test, range(4))
    rows = []
    for label, data, our_bs in (("one batch of 4", one, 4), ("whole test set (1000)", test, 32)):
        loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=False, num_workers=0)
        stock.test_dataloader = ours.test_dataloader = loader
        t = time.perf_counter()
        stock.run_code_for_testing_semantic_segmentation(net)
        s = time.perf_counter() - t
        t = time.perf_counter()
        ours.run_code_for_testing_semantic_segmentation(net, progress=False, grid_images=4, batch_size=our_bs)
        o = time.perf_counter() - t
        shown = (len(loader) + 49) // 50
        rows.append([label, f"{s:.2f} (looks at {shown} batch{'es' if shown > 1 else ''}, no metric)",
                     f"{o:.2f} (scores all {len(data)} images, batch {our_bs})", f"{s / o:.1f}x"])
    x = torch.stack([one[i]["image"] for i in range(4)])
    net.eval()
    with torch.no_grad():
        net(x)
        t = time.perf_counter()
        net(x)
        fwd = time.perf_counter() - t
    rows.append(["forward pass of that batch alone", f"{fwd:.2f} (part of both)", "", f"bound: {rows[0][1].split()[0]}/{fwd:.2f}"])
    print(f"machine: {machine()}; mUNetASPP depth 16, 64x64")
    table(rows, ["", "stock testing (s)", "ours (s)", "stock / ours"])


if __name__ == "__main__":
    main()
