"""``dlstudio-aspp compare RUN_A RUN_B``: two runs scored on the same test images, paired image by image.

Each run folder keeps the per-image counts of its test scoring (``saved_model.image_counts.npy``:
tp, fp and fn of every class on every test image); a run scored before that file existed is
scored again here from its card. The difference of the two mIoUs gets a percentile bootstrap
interval over the test images, both runs taken on the same resamples
(:func:`~dlstudio_aspp.metrics.bootstrap_miou` with ``minus``, the resampling of every interval
in the reports), and so does each class's IoU difference. The interval covers which test
images were drawn, not the training's own variance: for that, compare seeds in a grid.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict

import numpy as np

from .card import RunCard
from .errors import UserError
from .metrics import bootstrap_miou, class_scores, bootstrap_per_class, miou_from_counts


def run_counts(card: RunCard, device="cpu", progress: bool = False) -> np.ndarray:
    """(N, C, 3) tp, fp, fn of each test image of a run: from its folder, else scored again from its ``card``."""
    if card.files.image_counts_file.is_file():
        return np.load(card.files.image_counts_file, allow_pickle=False)
    import torch

    from .data.open import open_datasets
    from .evaluation import evaluate
    from .spec import RunSpec

    _, test = open_datasets(RunSpec.from_json(card.spec))
    loader = torch.utils.data.DataLoader(test, batch_size=32, shuffle=False)
    return evaluate(card.load_model(device), loader, card, device, progress=progress)["image_counts"]


def compare_runs(run_a, run_b, device="cpu", progress: bool = False) -> Dict:
    """A − B on the same test images: mIoU and per-class IoU differences, their paired 95% intervals, a verdict."""
    cards = [RunCard.load(r) for r in (run_a, run_b)]
    if cards[0].class_names != cards[1].class_names:
        raise UserError(f"{run_a} and {run_b} segment other classes ({cards[0].class_names} and "
                        f"{cards[1].class_names}); compare runs of the same data")
    a, b = (run_counts(card, device, progress) for card in cards)
    if a.shape != b.shape:
        raise UserError(f"{run_a} was scored on {a.shape[0]} test images and {run_b} on {b.shape[0]}; compare runs "
                        "scored on the same test set (the same --test-subset)")
    low, high = bootstrap_miou(a, minus=b)
    per_class = bootstrap_per_class(a, minus=b)["iou_ci95"]
    miou = [float(miou_from_counts(a)), float(miou_from_counts(b))]
    names = [Path(run_a).name or str(run_a), Path(run_b).name or str(run_b)]
    verdict = (f"{names[0]} better" if low > 0 else f"{names[1]} better" if high < 0
               else "no difference detectable on these test images")
    class_diff = class_scores(a)[0] - class_scores(b)[0]
    return {"runs": [str(run_a), str(run_b)], "names": names, "num_images": int(a.shape[0]),
            "miou": miou, "difference": miou[0] - miou[1],
            "ci95": [low, high], "verdict": verdict,
            "classes": [{"class": n, "difference": float(d), "ci95": ci}
                        for n, d, ci in zip(cards[0].class_names, class_diff, per_class)]}


def _signed(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:+.3f}"


def compare_markdown(result: Dict) -> str:
    a, b = result["names"]
    lo, hi = result["ci95"]
    lines = [f"{a} − {b} on the same {result['num_images']} test images: mIoU {result['miou'][0]:.3f} − "
             f"{result['miou'][1]:.3f} = {_signed(result['difference'])}, 95% paired bootstrap interval "
             f"[{_signed(lo)}, {_signed(hi)}]: {result['verdict']}", "",
             "| class | IoU difference | 95% interval |", "|---|---|---|"]
    for c in result["classes"]:
        lines.append(f"| {c['class']} | {_signed(c['difference'])} | [{_signed(c['ci95'][0])}, {_signed(c['ci95'][1])}] |")
    return "\n".join(lines)
