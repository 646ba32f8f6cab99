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


def machine() -> str:
    """The CPU that made a fingerprint: vendor, family, model and stepping, and torch's CPU capability. Floating-point
    reordering differs between CPUs (AVX2 and AVX-512 kernels), so the weights' bytes are compared only on the same."""
    import torch

    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("vendor_id", "cpu family", "model", "stepping") and key.strip() not in info:
                info[key.strip()] = value.strip()
    except OSError:
        pass
    return " ".join(f"{k}={v}" for k, v in sorted(info.items())) + f" torch_cpu={torch.backends.cpu.get_cpu_capability()}"


def differences(made: dict, want: dict, rel: float = 1e-4, pixels: float = 0.005) -> list:
    """What differs beyond floating-point reordering: the iterations exactly, every loss within ``rel`` (relative),
    and the IoUs within ``pixels`` (absolute: a last-bit change of the weights flips a few pixels at the threshold).
    Empty when they agree."""
    import math

    out = [] if made["iterations"] == want["iterations"] else ["iterations"]
    if len(made["loss"]) != len(want["loss"]) or not all(math.isclose(a, b, rel_tol=rel, abs_tol=rel)
                                                        for a, b in zip(made["loss"], want["loss"])):
        out.append("loss")
    ious = made["iou"] + [made["miou"]], want["iou"] + [want["miou"]]
    if len(ious[0]) != len(ious[1]) or any(abs(a - b) > pixels for a, b in zip(*ious)):
        out.append("iou")
    return out


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
    result["made_on"] = machine()
    Path(args.out).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"{len(result)} runs fingerprinted into {args.out}", file=sys.stderr)
