"""The report of a single run folder (``dlstudio-aspp report outputs/run``).

From the run card, its history and its metrics: the configuration and how it was made,
the loss curve with its components and the learning rate, per-class IoU and Dice with
95% bootstrap intervals, the per-class TP/FP/FN picture, the test grid and the time each
phase took. Written as ``report.md`` in the run folder (with ``report.html`` and
``report.pdf`` by :func:`dlstudio_aspp.documents.write_document`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

from .atomic import relative_path, write_text
from .card import RunCard
from .documents import key_value_table
from .errors import UserError
from .explain_report import run_section
from .floors import FLOORS_NOTE, floors_rows
from .grid import read_json
from .report import sam_section
from .plots import pyplot as _plt, running_mean, save_plot as _save
from .spec import SPEC_FIELDS, flag, show_value

REPORT_NAME = "report.md"
FIGURES = "figures"


def plot_training(history: dict, path: Path) -> Path:
    """Loss (running mean) and each component on the left, the learning rate on the right."""
    plt = _plt()
    n = len(history["loss"])
    w = max(1, min(100, n // 10))
    x = np.arange(1, n + 1)
    fig, (ax, lr) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    ax.plot(x, running_mean(history["loss"], w), label=f"{history.get('loss_name', 'loss')} (running mean of {w})")
    for name, values in sorted(history.get("components", {}).items()):
        if name != "dice_scale" and len(values) == n:
            ax.plot(x, running_mean(values, w), label=name, linewidth=1, alpha=0.8)
    ax.set(xlabel="iteration", ylabel="training loss", title="training loss and its components")
    ax.legend(fontsize=8)
    lr.plot(x, history["lr"])
    lr.set(xlabel="iteration", title="learning rate")
    return _save(fig, path)


def plot_per_class(metrics: dict, path: Path) -> Path:
    """Per-class IoU and Dice with their intervals, and the pixel counts TP / FP / FN."""
    plt = _plt()
    names = metrics["class_names"]
    k = np.arange(len(names))
    fig, (ax, cx) = plt.subplots(1, 2, figsize=(11, 3.8))
    for j, (key, label) in enumerate((("iou", "IoU"), ("dice", "Dice"))):
        vals = np.array(metrics[key], dtype=float)
        ci = np.array(metrics.get(f"{key}_ci95") or [[np.nan, np.nan]] * len(names), dtype=float)
        err = np.abs(np.stack([vals - ci[:, 0], ci[:, 1] - vals]))
        ax.bar(k + (j - 0.5) * 0.38, vals, 0.38, yerr=np.nan_to_num(err), capsize=3, label=label)
    ax.set(xticks=k, xticklabels=names, ylim=(0, 1.05), title="per class, with 95% bootstrap intervals")
    ax.legend(fontsize=8)
    conf = np.array(metrics["confusion"], dtype=float)  # (C, 2, 2): [[tn, fp], [fn, tp]]
    tp, fp, fn = conf[:, 1, 1], conf[:, 0, 1], conf[:, 1, 0]
    cx.bar(k, tp, label="true positive")
    cx.bar(k, fp, bottom=tp, label="false positive")
    cx.bar(k, fn, bottom=tp + fp, label="false negative")
    cx.set(xticks=k, xticklabels=names, ylabel="pixels", title="where the pixels went (test set)")
    cx.legend(fontsize=8)
    return _save(fig, path)


def _fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"


def metrics_rows(metrics: dict) -> List[str]:
    rows = ["| class | IoU | 95% interval | Dice | 95% interval | pixel accuracy |", "|---|---|---|---|---|---|"]
    ci_iou = metrics.get("iou_ci95") or [[None, None]] * len(metrics["class_names"])
    ci_dice = metrics.get("dice_ci95") or [[None, None]] * len(metrics["class_names"])
    for name, i, d, a, ci, cd in zip(metrics["class_names"], metrics["iou"], metrics["dice"],
                                     metrics["pixel_accuracy"], ci_iou, ci_dice):
        rows.append(f"| {name} | {_fmt(i)} | {_fmt(ci[0])}-{_fmt(ci[1])} | {_fmt(d)} | {_fmt(cd[0])}-{_fmt(cd[1])} | {_fmt(a)} |")
    lo, hi = metrics.get("miou_ci95", [None, None])
    rows.append(f"| **mean** | **{_fmt(metrics['miou'])}** | {_fmt(lo)}-{_fmt(hi)} | {_fmt(metrics['mean_dice'])} | | "
                f"{_fmt(metrics['mean_pixel_accuracy'])} |")
    return rows


def data_rows(card: RunCard) -> List[str]:
    """The data section: each split's images and the rule that took them (when the set recorded them)."""
    if not card.data:
        return []
    rows = ["## Data", "", "| split | images | taken when the image holds | from |", "|---|---|---|---|"]
    test_rule = card.data.get("test", {}).get("rule")
    for split, about in card.data.items():
        folders = ", ".join(f"{Path(f).name} {n}" for f, n in about.get("folders", {}).items())
        once = f" ({about['taken_once']} duplicates taken once)" if about.get("taken_once") else ""
        count = about["images"]
        if split == "train" and card.validation.get("images"):
            count = f"{about['images'] - card.validation['images']} (+{card.validation['images']} validation)"
        rows.append(f"| {split} | {count} | {about['rule']} | {folders}{once} |")
    if card.validation.get("images") and test_rule:
        rows += ["", f"The validation images are drawn from the training images that meet the test split's rule "
                     f"({test_rule}), so the best weights are chosen on images like the test's."]
    return rows + [""]


def _rel(card: RunCard, path) -> str:
    return relative_path(path, card.folder)


def _summary_section(card: RunCard, metrics: dict) -> List[str]:
    seconds = ", ".join(f"{k} {v:.0f} s" for k, v in card.seconds.items())
    return [
        f"# Run report: {card.folder.name}", "",
        f"mUNet{'+ASPP' if card.model.get('aspp') else ''} (depth {card.model.get('depth')}, output layer "
        f"`{card.model.get('head', 'stock')}`), recipe `{card.recipe}`, loss `{card.spec.get('loss')}`; "
        f"{card.iterations} iterations ({card.epochs} epoch{'s' * (card.epochs != 1)}); test mIoU **{metrics['miou']:.3f}** on "
        f"{metrics['num_images']} test images. Time: {seconds or 'not recorded'}.", ""]


def _metrics_section(card: RunCard, metrics: dict) -> List[str]:
    per_class = plot_per_class(metrics, card.folder / FIGURES / "per_class.png")
    return ["## Test metrics", "", f"Decision rule: {card.threshold_rule()}.", "", *metrics_rows(metrics), "",
            f"![per class]({_rel(card, per_class)})", "",
            *([FLOORS_NOTE, "", *floors_rows(metrics), ""] if "floors" in metrics else [])]


def _training_section(card: RunCard, metrics: dict) -> List[str]:
    training = plot_training(read_json(card.files.history_json), card.folder / FIGURES / "training.png")
    return ["## Training", "", f"![training]({_rel(card, training)})", ""]


def _images_section(card: RunCard, metrics: dict) -> List[str]:
    if not card.files.test_grid.is_file():
        return []
    return ["## Test images", "", "Input, ground truth, the maximum over the output channels, then each class "
            "binarised; the legend names each class's colour.", "", f"![test grid]({_rel(card, card.files.test_grid)})", ""]


def _flag(name: str) -> str:
    """An option as the command line names it (``--val-split``); a name this version does not know (a card
    from a newer one) stays as recorded."""
    return f"`{flag(name)}`" if name in SPEC_FIELDS else name


def _as_flags(spec: dict) -> dict:
    """The run's options keyed and spelled as the command line does: ``--val-split`` off, ``--rates`` 2,4,6."""
    return {_flag(k): show_value(k, v) if k in SPEC_FIELDS else v for k, v in spec.items()}


def _appendix_section(card: RunCard, metrics: dict) -> List[str]:
    commands = card.provenance.get("commands") or [card.provenance.get("command", "not recorded")]
    why = {_flag(name): reason for name, reason in card.why().items()}
    return ["## Appendix: the commands and the options", "",
            "Every command that trained this run, in order (a resumed run lists each part):", "",
            "```", *[str(c) for c in commands], "```", "",
            "### Options (the run's spec)", "", *key_value_table("option", _as_flags(card.spec)), "",
            *(["### Why the recipe chose these values", "", *key_value_table("option", why, "why"), ""] if why else []),
            "### How it was made", "", *key_value_table("provenance", card.provenance or {"recorded": "no"}), ""]


#: The run report's sections, in order: name -> (card, metrics) -> Markdown lines. The report joins
#: them; the notebook (:mod:`dlstudio_aspp.notebook`) shows each under its own code cell.
SECTIONS: Dict[str, Callable[[RunCard, dict], List[str]]] = {
    "summary": _summary_section,
    "test metrics": _metrics_section,
    "training": _training_section,
    "test images": _images_section,
    "what aspp does": lambda card, metrics: run_section(card.folder, lambda p: _rel(card, p)),
    "data": lambda card, metrics: data_rows(card),
    "sam": lambda card, metrics: sam_section(card.folder / "sam", lambda p: _rel(card, p)),
    "appendix": _appendix_section,
}


def section(name: str, folder) -> List[str]:
    """One section of the report of the run in ``folder`` (see :data:`SECTIONS`), its figures written."""
    if name not in SECTIONS:
        raise UserError(f"no run report section {name!r}; the sections are {', '.join(SECTIONS)}")
    card = RunCard.load(folder)
    return SECTIONS[name](card, read_json(card.files.metrics_file))


def make_run_report(folder) -> Path:
    """Write ``report.md`` (and its figures) for the run in ``folder``; return its path."""
    card = RunCard.load(folder)
    metrics = read_json(card.files.metrics_file)
    parts = [line for fn in SECTIONS.values() for line in fn(card, metrics)]
    return write_text(card.folder / REPORT_NAME, "\n".join(parts) + "\n")
