"""The grid report's figures: best- and worst-seed loss curves, all losses together, ASPP on against off, and
the qualitative grid. Each takes the finished runs (:func:`dlstudio_aspp.report.load_runs`) and a folder,
and returns the PNG it wrote."""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import List, Tuple

import numpy as np

from .evaluation import colour_masks
from .masks import mask_truth
from .plots import class_legend, pyplot as _plt, running_mean, save_plot as _save
from .spec import loss_label


def _window(runs) -> int:
    n = min(len(r["history"]["loss"]) for r in runs)
    return max(1, min(100, n // 10))


def by_setting(runs):
    """(loss, aspp) -> runs, in grid order: losses as first seen, ASPP on before off."""
    g = defaultdict(list)
    for r in runs:
        g[(r["label"], r["aspp"])].append(r)
    losses = list(dict.fromkeys(r["label"] for r in sorted(runs, key=lambda r: r.get("order", 0))))
    return {k: g[k] for k in sorted(g, key=lambda k: (losses.index(k[0]), not k[1]))}


def _log_if_needed(ax, curves) -> None:
    lo = min(float(np.min(c)) for c in curves)
    hi = max(float(np.max(c)) for c in curves)
    if lo > 0 and hi / lo > 20:
        ax.set_yscale("log")


def file_label(loss: str) -> str:
    """A loss or variant label as a file name: 'dice+mse:20' -> 'dice+mse-20', 'mse (lr 0.003)' -> 'mse_lr_0.003'."""
    return re.sub(r"[^a-z0-9+.,-]+", "_", loss_label(loss)).strip("_")


def best_and_worst(members, window: int) -> Tuple[np.ndarray, int, int]:
    """(curves (seeds, iterations): running means of ``window`` over the common length, index of the best
    seed, index of the worst): best and worst by the final running loss (lowest is best; ties: grid order)."""
    n = min(len(r["history"]["loss"]) for r in members)
    curves = np.stack([running_mean(r["history"]["loss"][:n], window) for r in members])
    order = np.argsort(curves[:, -1], kind="stable")
    return curves, int(order[0]), int(order[-1])


def best_worst_lines(runs) -> List[str]:
    """One line per (loss, ASPP): which seed was best and which worst, with their final running losses."""
    w, lines = _window(runs), []
    for (loss, aspp), members in by_setting(runs).items():
        curves, b, k = best_and_worst(members, w)
        lines.append(f"- {loss}, ASPP {'on' if aspp else 'off'}: best seed {members[b]['seed']} "
                     f"({curves[b, -1]:.4g}), worst seed {members[k]['seed']} ({curves[k, -1]:.4g})")
    return lines


def plot_best_worst(runs, out: Path) -> List[Path]:
    """Per loss: best and worst seed (by final running loss), spread shaded, ASPP on and off side by side."""
    plt = _plt()
    w = _window(runs)
    groups = by_setting(runs)
    paths = []
    for loss in dict.fromkeys(r["label"] for r in runs):
        settings = [a for a in (True, False) if (loss, a) in groups]
        fig, axes = plt.subplots(1, len(settings), figsize=(6 * len(settings), 4), squeeze=False)
        for ax, aspp in zip(axes[0], settings):
            members = groups[(loss, aspp)]
            curves, b, k = best_and_worst(members, w)
            x = np.arange(1, curves.shape[1] + 1)
            ax.fill_between(x, curves.min(0), curves.max(0), alpha=0.25, label=f"spread over {len(members)} seeds")
            ax.plot(x, curves[b], label=f"best (seed {members[b]['seed']})")
            ax.plot(x, curves[k], label=f"worst (seed {members[k]['seed']})", linestyle="--")
            _log_if_needed(ax, [curves])
            ax.set(title=f"{loss}, ASPP {'on' if aspp else 'off'}", xlabel="iteration",
                   ylabel=f"training loss (running mean of {w})")
            ax.legend(fontsize=8)
        paths.append(_save(fig, out / f"loss_best_worst_{file_label(loss)}.png"))
    return paths


def plot_overlay(runs, out: Path) -> Path:
    """All losses on one log-scale figure (mean over seeds), ASPP on solid, off dashed."""
    plt = _plt()
    w = _window(runs)
    fig, ax = plt.subplots(figsize=(8, 5))
    for (loss, aspp), members in by_setting(runs).items():
        n = min(len(r["history"]["loss"]) for r in members)
        mean = np.mean([running_mean(r["history"]["loss"][:n], w) for r in members], axis=0)
        ax.plot(np.arange(1, n + 1), np.clip(mean, 1e-6, None), linestyle="-" if aspp else "--",
                label=f"{loss}, ASPP {'on' if aspp else 'off'}")
    ax.set_yscale("log")
    ax.set(title="Training loss of every loss (mean over seeds)", xlabel="iteration", ylabel=f"loss (running mean of {w}, log)")
    ax.legend(fontsize=8)
    return _save(fig, out / "loss_overlay.png")


def plot_aspp(runs, out: Path) -> Path:
    """Test mIoU per loss, ASPP on against off (mean and std over seeds)."""
    plt = _plt()
    losses = list(dict.fromkeys(r["label"] for r in runs))
    groups = by_setting(runs)
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(losses)), 4))
    width = 0.38
    for j, aspp in enumerate((True, False)):
        vals = [[r["metrics"]["miou"] for r in groups.get((l, aspp), [])] for l in losses]
        means = [np.nanmean(v) if v else np.nan for v in vals]
        stds = [np.nanstd(v) if v else 0 for v in vals]
        ax.bar(np.arange(len(losses)) + (j - 0.5) * width, means, width, yerr=stds, capsize=3,
               label=f"ASPP {'on' if aspp else 'off'}")
    ax.set_xticks(np.arange(len(losses)), losses)
    ax.set(title="Test mIoU, ASPP on vs off (mean ± std over seeds)", ylabel="mIoU")
    ax.legend()
    return _save(fig, out / "aspp_on_vs_off.png")


def plot_qualitative(runs, out: Path) -> Path:
    """Rows: fixed test images. Columns: input, ground truth, each loss x ASPP prediction (lowest seed)."""
    import torch

    plt = _plt()
    chosen = {}
    for r in sorted(runs, key=lambda r: r["seed"]):
        chosen.setdefault((r["label"], r["aspp"]), r)
    grid_order = list(by_setting(runs))
    keys = sorted(chosen, key=lambda k: (not k[1], grid_order.index(k)))
    samples = {k: np.load(chosen[k]["card"].files.samples_file) for k in keys}
    first = samples[keys[0]]
    rows = len(first["indices"])
    cols = 2 + len(keys)
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 1.9 * rows + 0.5), squeeze=False)
    for r in range(rows):
        axes[r, 0].imshow(first["images"][r].transpose(1, 2, 0))
        axes[r, 1].imshow(colour_masks(mask_truth(first["masks"][r])))
        for c, key in enumerate(keys, start=2):
            pred = chosen[key]["card"].binarize(torch.from_numpy(samples[key]["outputs"][r:r + 1]))[0].numpy()
            axes[r, c].imshow(colour_masks(pred))
        for c in range(cols):
            axes[r, c].set_xticks([]), axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(f"test #{int(first['indices'][r])}", fontsize=8)
    titles = ["input", "ground truth"] + [f"{l}\nASPP {'on' if a else 'off'}" for l, a in keys]
    for c, t in enumerate(titles):
        axes[0, c].set_title(t, fontsize=8)
    return _save(fig, out / "qualitative.png", bottom=class_legend(fig, chosen[keys[0]]["card"].class_names))


__all__ = ["best_and_worst", "best_worst_lines", "by_setting", "plot_aspp", "plot_best_worst", "plot_overlay",
           "plot_qualitative"]
