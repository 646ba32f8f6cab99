"""A small run and a small grid, fingerprinted: the weights' sha256, the test metrics and the loss history.

``tests/reference/small.json`` holds these fingerprints as an earlier commit of the package made them
(``python tests/reference_runs.py --out tests/reference/small.json``, with that commit first on
PYTHONPATH); ``test_reference.py`` makes them again with today's code and compares: the same seed gives
the same bytes, whatever was reorganised in between. One thread, the CPU.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DATA = ("PurdueShapes5MultiObject-16-train.gz", "PurdueShapes5MultiObject-8-test.gz")


def _fingerprint(folder: Path) -> dict:
    card = json.loads((folder / "saved_model.json").read_text())
    metrics = json.loads((folder / "saved_model.metrics.json").read_text())
    history = json.loads((folder / "saved_model.history.json").read_text())
    return {"weights_sha256": card["weights_sha256"], "iterations": card["iterations"],
            "miou": metrics["miou"], "iou": metrics["iou"], "loss": history["loss"]}


def make(where: Path) -> dict:
    import torch

    from dlstudio_aspp import cli

    torch.set_num_threads(1)
    data = where / "data"
    assert cli.main(["make-shapes", str(data), "--train", "16", "--test", "8"]) == 0
    common = ["--data", str(data), "--train-file", DATA[0], "--test-file", DATA[1], "--depth", "4", "--cpu",
              "--no-progress"]
    out = {}
    for recipe, iters in (("modern", 6), ("stock", 4)):
        folder = where / f"run-{recipe}"
        assert cli.main(["run", *common, "--recipe", recipe, "--max-iters", str(iters), "--out", str(folder)]) == 0
        out[f"run-{recipe}"] = _fingerprint(folder)
    grid = where / "grid"
    assert cli.main(["experiments", str(grid), "--preset", "smoke", *common, "--loss", "mse,dice+mse:20", "--seed", "0",
                     "--max-iters", "3", "--no-report"]) == 0
    for run in sorted((grid / "runs").iterdir()):
        out[f"grid/{run.name}"] = _fingerprint(run)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", default=".")
    args = parser.parse_args()
    result = make(Path(args.work).resolve())
    Path(args.out).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"{len(result)} runs fingerprinted into {args.out}", file=sys.stderr)
