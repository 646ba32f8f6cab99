"""``dlstudio-aspp sam-compare``: SAM against mUNet on a few test images, side by side and measured.

Writes into ``out``: ``sam_<dataset>.png`` (one row per image: SAM overlay, mUNet overlay,
ground-truth outlines on both; optional input and "everything" columns),
``sam_<dataset>_metrics.json`` and ``sam_<dataset>_metrics.md``.
"""
from __future__ import annotations

import math
import random
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch

from . import atomic
from .card import RunCard
from .masks import mask_truth
from .evaluation import overlay, to_rgb
from .plots import class_legend
from .mask_metrics import DEFAULT_TOL, mask_scores, mean_scores
from .errors import UserError

PANEL_PX = 250  # each panel is PANEL_PX x PANEL_PX pixels in the saved figure


def pick_indices(n: int, count: int, indices: Optional[Sequence[int]], seed: Optional[int]) -> List[int]:
    if indices:
        bad = [i for i in indices if not 0 <= i < n]
        if bad:
            raise UserError(f"image indices {bad} are outside the test set (0..{n - 1})")
        return list(indices)
    if count < 1:
        raise UserError(f"--count must be >= 1, got {count}")
    if seed is None:
        return list(range(min(count, n)))
    return sorted(random.Random(seed).sample(range(n), min(count, n)))


def _overlay(image: torch.Tensor, masks: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Image with class colours blended in and the ground-truth outlines in white."""
    from .mask_metrics import boundary

    out = overlay(image, masks).permute(1, 2, 0).numpy().astype(np.float32) / 255.0
    edge = boundary(torch.from_numpy(gt)).any(0).numpy()
    out[edge] = 1.0
    return out


#: The SAM column's title for each source of its masks.
SAM_LABELS = {"local": "SAM (box prompts)", "saved": "SAM (saved demo masks)"}


def save_figure(rows, path: Path, title: str, show_input: bool, everything: bool, sam_label: str = SAM_LABELS["local"],
                class_names: Sequence[str] = ()) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cols = [sam_label, "mUNet"]
    if everything:
        cols.append("SAM everything")
    if show_input:
        cols = ["input"] + cols
    n = len(rows)
    fig, axes = plt.subplots(n, len(cols), figsize=(len(cols) * PANEL_PX / 100, n * PANEL_PX / 100), dpi=100, squeeze=False)
    for r, row in enumerate(rows):
        panels = {"input": to_rgb(row["image"]), sam_label: _overlay(row["image"], row["sam"], row["gt"]),
                  "mUNet": _overlay(row["image"], row["munet"], row["gt"])}
        if everything:
            panels["SAM everything"] = _overlay(row["image"], row["everything"], row["gt"])
        for c, name in enumerate(cols):
            ax = axes[r, c]
            ax.imshow(panels[name], interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{name}: #{row['index']}", fontsize=7)
    fig.suptitle(title, fontsize=8)
    bottom = class_legend(fig, class_names, fontsize=6) if class_names else 0.01
    fig.subplots_adjust(left=0.01, right=0.99, bottom=bottom, top=0.93, wspace=0.03, hspace=0.15)
    atomic.save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def _fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def metrics_markdown(result: dict) -> str:
    keys = ["iou", "boundary_f1", "completeness", "fp_rate", "fn_rate"]
    head = ["image", "method"] + ["IoU", f"boundary F1 (±{result['tolerance_px']} px)", "completeness (recall)", "FP rate", "FN rate"]
    lines = [f"### SAM vs mUNet on {result['dataset']} ({result['sam_source']})", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["images"]:
        for method, scores in row["scores"].items():
            lines.append("| " + " | ".join([str(row["index"]), method] + [_fmt(scores[k]) for k in keys]) + " |")
    for method, scores in result["mean"].items():
        lines.append("| " + " | ".join(["**mean**", method] + [_fmt(scores[k]) for k in keys]) + " |")
    return "\n".join(lines) + "\n"


def source_of(dataset, index: int) -> dict:
    """Where test image ``index`` came from: the base dataset's ``source_of`` (COCO: its id and file), else its
    position in the test set."""
    from .data.wrappers import innermost_dataset

    base = innermost_dataset(dataset)
    return base.source_of(index) if hasattr(base, "source_of") else {"test index": index}


def export_demo(dataset, out: Path, indices: Sequence[int], sam_size: int) -> Path:
    """Write test images ``indices`` as ``<index>.png`` for upload to the SAM demo, enlarged by a whole factor to
    about ``sam_size`` (as SAM gets them here), with ``index.md`` and ``index.json`` naming each one's source."""
    from PIL import Image

    out = Path(out)
    rows = []
    for idx in indices:
        rgb = (to_rgb(dataset[idx]["image"]) * 255).round().astype(np.uint8)  # (H, W, 3)
        factor = max(1, round(sam_size / max(rgb.shape[:2])))
        im = Image.fromarray(rgb).resize((rgb.shape[1] * factor, rgb.shape[0] * factor), Image.NEAREST)
        atomic.save_image(im, out / f"{idx}.png")
        rows.append({"file": f"{idx}.png", "index": idx, "size": list(im.size), **source_of(dataset, idx)})
    atomic.write_json(out / "index.json", rows)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    table = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    table += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    atomic.write_text(out / "index.md", "\n".join(table) + "\n")
    return out


def _sam_runner(sam, sam_model, sam_checkpoint, sam_size: int, points_per_side: int, device):
    """A SamRunner from a loaded SAM or a checkpoint; None when SAM's masks come from saved PNGs."""
    if sam is None and sam_checkpoint is not None:
        from .sam import load_sam

        sam = load_sam(sam_model, sam_checkpoint, device)
    if sam is None:
        return None
    from .sam import SamRunner

    return SamRunner(sam.to(device).eval(), sam_size=sam_size, points_per_side=points_per_side)


def _score_image(item, idx: int, card, model, runner, sam_masks, everything: bool, tolerance: int, device):
    """One test image: SAM's and mUNet's masks (the figure's row) and their scores against the ground truth."""
    from .sam import boxes_by_class, masks_from_dir

    image, gt = item["image"], mask_truth(item["mask_tensor"]).numpy()
    with torch.no_grad():
        munet = card.binarize(model(card.prepare_input(image[None].to(device))).float().cpu())[0].numpy()
    row = {"index": idx, "image": image, "gt": gt, "munet": munet}
    scores = {}
    if runner is not None:
        row["sam"] = runner.box_masks(image, boxes_by_class(item["bbox_tensor"], item["mask_tensor"]), gt.shape[0])
        scores["SAM (box prompts)"] = mask_scores(row["sam"], gt, tolerance)
        if everything:
            row["everything"] = runner.everything(image)
            scores["SAM everything (vs union)"] = mask_scores(row["everything"], gt.any(0), tolerance)
    else:
        saved = masks_from_dir(sam_masks, idx, card.class_names, gt.shape[1:])
        if saved["classes"] is not None:
            row["sam"] = saved["classes"]
            scores["SAM (saved, per class)"] = mask_scores(row["sam"], gt, tolerance)
        else:
            row["sam"] = saved["agnostic"]
            scores["SAM (saved, vs union)"] = mask_scores(row["sam"], gt.any(0), tolerance)
    scores["mUNet"] = mask_scores(munet, gt, tolerance)
    return row, scores


def compare(run, dataset, out, *, dataset_name: str, count: int = 5, indices=None, seed=None, sam_model: str = "vit_b",
            sam_checkpoint=None, sam_masks=None, everything: bool = False, show_input: bool = False,
            tolerance: int = DEFAULT_TOL, sam_size: int = 1024, points_per_side: int = 16, device: str = "cpu",
            sam=None) -> dict:
    """Score SAM and the run's mUNet on ``count`` test images of ``dataset``; write figure and tables to ``out``.

    ``run`` is a run folder (or its ``saved_model``); its :class:`RunCard` rebuilds the
    model and gives the input scaling and thresholds. SAM comes from ``sam`` (a loaded
    SAM model), ``sam_checkpoint`` (with ``sam_model``) or ``sam_masks`` (saved PNGs).
    """
    if (sam_checkpoint is None) == (sam_masks is None) and sam is None:
        raise UserError("give exactly one SAM source: --sam-checkpoint PATH (local SAM) or --sam-masks DIR (saved masks)")
    for flag, value, high in (("--sam-size", sam_size, 4096), ("--points-per-side", points_per_side, 128),
                              ("--count", count, 1000), ("--tolerance", tolerance, 64)):
        if not 1 <= value <= high and not (flag == "--tolerance" and value == 0):
            raise UserError(f"{flag} must be from 1 to {high}, got {value}")
    card = RunCard.load(run)
    model = card.load_model(device)
    names = card.class_names
    channels = int(dataset[0]["mask_tensor"].shape[0])
    if channels != len(names):
        raise UserError(f"the run at {run} has {len(names)} classes but the test data has {channels}; "
                        "use the dataset the run was trained on (--dataset, --data)")
    runner = _sam_runner(sam, sam_model, sam_checkpoint, sam_size, points_per_side, device)
    everything = everything and runner is not None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, records = [], []
    for idx in pick_indices(len(dataset), count, indices, seed):
        row, scores = _score_image(dataset[idx], idx, card, model, runner, sam_masks, everything, tolerance, device)
        rows.append(row)
        records.append({"index": idx, "scores": scores})
    methods = list(dict.fromkeys(m for r in records for m in r["scores"]))
    run_dir = card.folder
    result = {"dataset": dataset_name, "run": atomic.relative_path(run_dir, out), "tolerance_px": tolerance, "images": records,
              "sam_source": f"local SAM {sam_model}" if runner is not None
              else f"saved demo masks from {atomic.relative_path(sam_masks, run_dir)}/",
              "mean": {m: mean_scores([r["scores"][m] for r in records if m in r["scores"]]) for m in methods}}
    stem = f"sam_{dataset_name}"
    label = SAM_LABELS["local" if runner is not None else "saved"]
    figure = save_figure(rows, out / f"{stem}.png", f"{dataset_name}: SAM vs mUNet (white: ground-truth outlines)",
                         show_input, everything, label, card.class_names)
    result["figure"], result["sam_column"] = figure.name, label
    atomic.write_json(out / f"{stem}_metrics.json", result)
    atomic.write_text(out / f"{stem}_metrics.md", metrics_markdown(result))
    return result
