"""``dlstudio-aspp sam-compare``: SAM against mUNet on a few test images, side by side and measured.

Writes into ``out``: ``sam_<dataset>.png`` (one row per image: SAM overlay, mUNet overlay,
ground-truth outlines on both; optional input and "everything" columns),
``sam_<dataset>_metrics.json`` and ``sam_<dataset>_metrics.md``; with files saved from the demo
(``--sam-masks``) also ``sam_<dataset>_files.png``: each file as it was read, the mask recovered from it
outlined on it and on the test image it went to, with that mask's scores.
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
SAM_LABELS = {"local": "SAM (box prompts)", "saved": "SAM (files saved from the demo)"}


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
    if "files" in result:
        lines += ["", f"Files read (checking figure: {result['files_figure']}):", "",
                  "| file | image | class | kind | IoU | how it was read |", "|---|---|---|---|---|---|"]
        lines += [f"| {f['file']} | {f['index']} | {f['class']} | {f['kind']} | {_fmt(f['scores']['iou'])} | {f['how']} |"
                  for f in result["files"]]
        lines += ([""] + [f"- not read: {p}" for p in result["problems"]]) if result["problems"] else []
    return "\n".join(lines) + "\n"


def source_of(dataset, index: int) -> dict:
    """Where test image ``index`` came from: the base dataset's ``source_of`` (COCO: its id and file), else its
    position in the test set."""
    from .data.wrappers import innermost_dataset

    base = innermost_dataset(dataset)
    return base.source_of(index) if hasattr(base, "source_of") else {"test index": index}


#: What to do with the exported images, in index.md and in the command's message.
DEMO_STEPS = (
    "Upload each image to the SAM demo (https://segment-anything.com/demo) and click on the object (or hover, or use "
    "Everything). The demo has no mask download; save what it does give, into one folder, renamed or not:\n"
    "- a cut-out: \"Cut out object\" (or \"Cut out all objects\" in Everything) and save the PNG it shows;\n"
    "- or a screenshot of the image with its mask shown (after a click, while hovering, or in Everything), "
    "PNG or JPEG, the page around it included.\n"
    "Name a file <index>.png (or <index>_<class>.png for one object of a class) to say which image it is, or keep "
    "the demo's name (\"download (1).png\"): the file is matched to its image by content. If the link opens "
    "another demo, any tool that shows the image with its mask, or cuts the object out, gives files of these kinds; "
    "upload the exported image itself, not the original photograph, so that it can be found.")


def export_demo(dataset, out: Path, indices: Sequence[int], sam_size: int) -> Path:
    """Write test images ``indices`` as ``<index>.png`` for upload to the SAM demo, enlarged by a whole factor to
    about ``sam_size`` (``demo_files.demo_image``, which reads the demo's files back), with ``index.md`` (what to
    save from the demo) and ``index.json`` naming each one's source."""
    from PIL import Image

    from .demo_files import demo_image

    out = Path(out)
    rows = []
    for idx in indices:
        im = Image.fromarray(demo_image(dataset[idx]["image"], sam_size))
        atomic.save_image(im, out / f"{idx}.png")
        rows.append({"file": f"{idx}.png", "index": idx, "size": list(im.size), **source_of(dataset, idx)})
    atomic.write_json(out / "index.json", rows)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    table = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    table += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    atomic.write_text(out / "index.md", "\n".join(table) + "\n\n" + DEMO_STEPS + "\n")
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


def _score_image(item, idx: int, card, model, runner, saved, everything: bool, tolerance: int, device):
    """One test image: SAM's and mUNet's masks (the figure's row) and their scores against the ground truth; ``saved``
    holds the masks read from the demo's files when there is no local SAM."""
    from .sam import boxes_by_class

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
            sam=None, sam_kind: str = "auto") -> dict:
    """Score SAM and the run's mUNet on ``count`` test images of ``dataset``; write figure and tables to ``out``.

    ``run`` is a run folder (or its ``saved_model``); its :class:`RunCard` rebuilds the
    model and gives the input scaling and thresholds. SAM comes from ``sam`` (a loaded
    SAM model), ``sam_checkpoint`` (with ``sam_model``) or ``sam_masks`` (a folder of files saved
    from the demo: masks, cut-outs or screenshots, read as ``sam_kind`` says, by default by their
    content). The result's ``problems`` name each saved file that could not be read, and each
    image that had none; the images with files are compared all the same.
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
    picked = pick_indices(len(dataset), count, indices, seed)
    items = {idx: dataset[idx] for idx in picked}
    readings, problems, saved = [], [], {}
    if runner is None:
        readings, problems, saved = _read_demo_files(sam_masks, items, names, sam_size, sam_kind)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, records = [], []
    for idx in [i for i in picked if runner is not None or i in saved]:
        row, scores = _score_image(items[idx], idx, card, model, runner, saved.get(idx), everything, tolerance, device)
        rows.append(row)
        records.append({"index": idx, "scores": scores})
    methods = list(dict.fromkeys(m for r in records for m in r["scores"]))
    run_dir = card.folder
    result = {"dataset": dataset_name, "run": atomic.relative_path(run_dir, out), "tolerance_px": tolerance, "images": records,
              "sam_source": f"local SAM {sam_model}" if runner is not None
              else f"files saved from the demo in {atomic.relative_path(sam_masks, run_dir)}/",
              "mean": {m: mean_scores([r["scores"][m] for r in records if m in r["scores"]]) for m in methods}}
    stem = f"sam_{dataset_name}"
    label = SAM_LABELS["local" if runner is not None else "saved"]
    figure = save_figure(rows, out / f"{stem}.png", f"{dataset_name}: SAM vs mUNet (white: ground-truth outlines)",
                         show_input, everything, label, card.class_names)
    result["figure"], result["sam_column"] = figure.name, label
    if runner is None:
        result["files"] = [_file_record(r, items[r.index], names, tolerance) for r in readings]
        result["problems"] = problems
        result["files_figure"] = files_figure(readings, items, result["files"], out / f"{stem}_files.png").name
    atomic.write_json(out / f"{stem}_metrics.json", result)
    atomic.write_text(out / f"{stem}_metrics.md", metrics_markdown(result))
    return result


def _read_demo_files(folder, items: dict, class_names, sam_size: int, kind: str):
    """The demo's files in ``folder`` read against the exported images of ``items``: (readings, problem lines, masks
    per image index)."""
    from .demo_files import DemoReader, masks_by_image

    size = tuple(next(iter(items.values()))["mask_tensor"].shape[1:])
    reader = DemoReader({i: it["image"] for i, it in items.items()}, size, class_names, sam_size, kind)
    readings, problems = reader.read_all(folder)
    saved = masks_by_image(readings, class_names, size)
    problems += [f"--sam-masks: no file in {folder} went to test image {i}; save one from the demo for it"
                 for i in items if i not in saved]
    if not saved:
        raise UserError("no file in --sam-masks folder could be read:\n" + "\n".join(problems))
    return readings, problems, saved


def _file_record(reading, item, class_names, tolerance: int) -> dict:
    """What one saved file became: its image, class and kind, how it was read, and its mask's scores."""
    gt = mask_truth(item["mask_tensor"]).numpy()
    truth = gt.any(0) if reading.class_name is None else gt[[n.lower() for n in class_names].index(reading.class_name.lower())]
    return {"file": reading.file, "index": reading.index, "class": reading.class_name or "all classes (vs union)",
            "kind": reading.kind, "how": reading.how, "scores": mask_scores(reading.mask, truth, tolerance)}


def files_figure(readings, items: dict, records, path: Path) -> Path:
    """One row per file read: the file as it was read with the recovered mask outlined on it (yellow; a cut-out over a
    checkerboard), and the test image it went to with that mask outlined (yellow) and the ground truth (white)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from .mask_metrics import boundary

    n = max(1, len(readings))
    fig, axes = plt.subplots(n, 2, figsize=(2 * PANEL_PX / 100 * 1.3, n * PANEL_PX / 100), dpi=100, squeeze=False)
    for ax, r, rec in zip(axes, readings, records):
        ax[0].imshow(_as_read(r), interpolation="nearest")
        ax[0].set_title(f"{r.file} ({r.kind}" + (", the image's part of the page)" if r.frame else ")"), fontsize=6)
        image = items[r.index]["image"]
        shown = to_rgb(image).copy()
        gt = mask_truth(items[r.index]["mask_tensor"])
        shown[boundary(gt).any(0).numpy()] = 1.0
        shown[boundary(torch.from_numpy(r.mask)[None])[0].numpy()] = (1.0, 0.9, 0.0)
        ax[1].imshow(shown, interpolation="nearest")
        sc = rec["scores"]
        ax[1].set_title(f"#{r.index}, {rec['class']}: IoU {_fmt(sc['iou'])}, boundary F1 {_fmt(sc['boundary_f1'])}",
                        fontsize=6)
    for a in axes.ravel():
        a.set_xticks([]), a.set_yticks([])
    if not readings:
        axes[0, 0].set_title("no file could be read", fontsize=7)
    fig.suptitle("files saved from the demo, as read (yellow: the mask recovered; white: ground truth)", fontsize=7)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93 if n > 1 else 0.85, wspace=0.03, hspace=0.2)
    atomic.save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def _as_read(reading) -> np.ndarray:
    """The file's pixels (a cut-out over a grey checkerboard) with the recovered mask's edge in yellow, in the file's
    own frame."""
    from .mask_metrics import boundary

    px = reading.pixels.astype(np.float32) / 255.0
    h, w = px.shape[:2]
    board = np.where(((np.arange(h)[:, None] // 16 + np.arange(w)[None] // 16) % 2) == 0, 0.8, 0.6)[..., None]
    rgb = px[..., :3] * px[..., 3:] + board * (1 - px[..., 3:])
    edge = boundary(torch.from_numpy(np.ascontiguousarray(reading.in_file))[None])[0].numpy()
    edge = torch.nn.functional.max_pool2d(torch.from_numpy(edge[None, None].astype(np.float32)), 3, 1, 1)[0, 0].numpy() > 0
    rgb[edge] = (1.0, 0.9, 0.0)
    if reading.frame is not None:  # a screenshot: the image's part of the page
        x0, y0, x1, y1 = reading.frame
        rgb = rgb[y0:y1, x0:x1]
    return rgb
