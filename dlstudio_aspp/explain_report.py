"""The figures and tables of ``dlstudio-aspp explain`` (:mod:`dlstudio_aspp.explain`), and the reports'
section "What ASPP does", for a run and for an experiments folder. Everything is read from
``RUN/explain/explain.json``; a run not explained yet gets the command that explains it."""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from .plots import pyplot, save_plot
from .stats import paired_interval

TITLE = "## What ASPP does"
#: Test images `explain` measures on unless told (`--images`).
DEFAULT_IMAGES = 100


def explain_dir(run_folder) -> Path:
    """Where `explain` writes a run's files: ``RUN/explain/``."""
    return Path(run_folder) / "explain"
LUO = ("the gradient of the output at one pixel (summed over classes) with respect to the input image, "
       "as in Luo et al. 2016, *Understanding the Effective Receptive Field in Deep CNNs*")


def read_explained(run_folder) -> Optional[Dict]:
    """``run_folder/explain/explain.json``, or None when the run was not explained."""
    path = explain_dir(run_folder) / "explain.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _ci(lo: float, hi: float, fmt: str = "{:+.3f}") -> str:
    return "n/a" if math.isnan(lo) else f"[{fmt.format(lo)}, {fmt.format(hi)}]"


def _branch_label(b: Dict, padding: Dict[str, float]) -> str:
    return f"{b['branch']} ({padding[b['branch']]:.0%} padding)" if b["branch"] in padding else b["branch"]


def plot_fields(result: Dict, arrays: Dict[str, np.ndarray], path: Path) -> Path:
    """The mean effective field of the centre and the corner pixel, the radius holding the stated share of
    its mass (dashed circle) and the outline of the theoretical field of the convolutions (where it ends
    inside the image)."""
    from matplotlib.colors import LogNorm

    plt = pyplot()
    rf = result["receptive_field"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.6))
    for ax, name in zip(axes, ("centre", "corner")):
        field, mean_map = rf[name], arrays[f"{name}_mean_map"]
        (r, c), radius = field["pixel"], field["radius_of_mean_map"]
        top = float(mean_map.max()) or 1.0
        im = ax.imshow(np.maximum(mean_map, top * 1e-4), cmap="magma", interpolation="nearest",
                       norm=LogNorm(vmin=top * 1e-4, vmax=top))  # log: the tail that holds the last 10% shows
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label="share of the gradient (log scale)")
        ax.add_patch(plt.Circle((c, r), radius, fill=False, color="white", ls="--", lw=1.2))
        ax.plot([c], [r], "x", color="cyan", ms=8, mew=2)
        theory = arrays[f"{name}_theoretical"]
        whole = bool(theory.all())
        if not whole:
            ax.contour(theory.astype(float), levels=[0.5], colors="lime", linewidths=1.2)
        ax.set_title(f"{name} pixel ({r}, {c}): {rf['mass_share']:.0%} within r = {radius:.1f} px\n"
                     f"theoretical field {'covers the whole image' if whole else '(green)'}", fontsize=9)
        h, w = mean_map.shape
        ax.set_xlim(-0.5, w - 0.5), ax.set_ylim(h - 0.5, -0.5)  # the image, not the circle, sets the frame
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"Effective receptive field, mean over {result['num_images']} test images "
                 f"(ASPP {'on' if result['aspp'] else 'off'})", fontsize=10)
    return save_plot(fig, path)


def plot_branches(result: Dict, path: Path) -> Path:
    """Change in test mIoU with each ASPP branch switched off, with its 95% paired interval."""
    plt = pyplot()
    branches = result["branches"]["branches"]
    padding = {p["branch"]: p["padding_share"] for p in result["padding"] if p["rate"] is not None}
    labels = [_branch_label(b, padding) for b in branches]
    diffs = np.array([b["difference"] for b in branches])
    lo, hi = np.array([b["ci95"] for b in branches]).T
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(branches) + 1.6))
    y = np.arange(len(branches))[::-1]
    ax.barh(y, diffs, color=["#c0392b" if h < 0 else "#7f8c8d" for h in hi],
            xerr=[np.nan_to_num(diffs - lo), np.nan_to_num(hi - diffs)], capsize=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, labels, fontsize=9)
    ax.set_xlabel("test mIoU change with the branch off (95% paired bootstrap interval)")
    ax.set_title(f"ASPP branches, one off at a time: intact mIoU {result['branches']['miou']:.4f} on "
                 f"{result['branches']['num_images']} test images\n(red: costs mIoU when off)", fontsize=9)
    return save_plot(fig, path)


def _field_rows(result: Dict) -> List[str]:
    rf = result["receptive_field"]
    rows = [f"| pixel | radius holding {rf['mass_share']:.0%} of the gradient, mean over images [95% interval] | "
            "radius of the mean map | mass inside the theoretical field |", "|---|---|---|---|"]
    for name in ("centre", "corner"):
        f = rf[name]
        rows.append(f"| {name} {tuple(f['pixel'])} | {f['radius_mean']:.1f} px {_ci(*f['radius_ci95'], '{:.1f}')} | "
                    f"{f['radius_of_mean_map']:.1f} px | {f['mass_inside_theoretical']:.1%} |")
    side = f"{rf['theoretical_side']} px" if rf["theoretical_bounded"] else f"at least {rf['theoretical_side']} px"
    h, w = result["image_size"]
    pool = (" The image-pool branch adds the whole image to every output pixel's field." if rf["image_pool"] else "")
    return rows + ["", f"The theoretical field of the convolutions is a square of side {side} (no image border in "
                   f"the way), against {h}x{w} images.{pool}"]


def _branch_rows(result: Dict) -> List[str]:
    br = result["branches"]
    padding = {p["branch"]: p for p in result["padding"]}
    h, w = result["padding"][0]["bottleneck"]
    rows = [f"| branch | taps on padding at the {h}x{w} bottleneck | mIoU with it off | change [95% interval] | "
            "verdict |", "|---|---|---|---|---|"]
    for b in br["branches"]:
        lo, hi = b["ci95"]
        verdict = "costs mIoU when off" if hi < 0 else "gains mIoU when off" if lo > 0 else "no change detectable"
        share = f"{padding[b['branch']]['padding_share']:.0%}" if b["branch"] in padding else "-"
        rows.append(f"| {b['branch']} | {share} | {b['miou']:.4f} | {b['difference']:+.4f} "
                    f"{_ci(lo, hi, '{:+.4f}')} | {verdict} |")
    names = result["class_names"]
    rows += ["", "Each class's IoU change with the branch off (95% paired interval):", "",
             "| branch | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for b in br["branches"]:
        rows.append(f"| {b['branch']} | " + " | ".join(f"{c['difference']:+.3f} {_ci(*c['ci95'])}" for c in b["classes"])
                    + " |")
    return rows


def explain_markdown(result: Dict, relative: Callable[[str], str]) -> str:
    """The tables and figures of one explained run; ``relative`` maps a file name in ``explain/`` to the
    link the document uses."""
    parts = [f"### Receptive field ({result['num_images']} test images)", "",
             f"The effective receptive field is {LUO}; the radius is that of the smallest disc about the pixel "
             "holding the stated share of that gradient.", "", *_field_rows(result), "",
             f"![receptive field]({relative(result['figures']['receptive_field'])})", ""]
    if result.get("branches"):
        parts += ["### ASPP branches, one off at a time", "",
                  "Each branch's output is zeroed before the projection; the rest keeps its trained weights. "
                  "'All rates' zeroes every dilated branch at once. A branch costs mIoU when off when the whole "
                  "interval is below 0.", "", *_branch_rows(result), "",
                  f"![branches]({relative(result['figures']['branches'])})", ""]
    return "\n".join(parts)


def run_section(folder: Path, relative: Callable[[Path], str]) -> List[str]:
    """The run report's "What ASPP does": the explained run's tables and figures, or the command."""
    result = read_explained(folder)
    if result is None:
        return [TITLE, "", "Not measured yet: `dlstudio-aspp explain RUN`, with this run's folder as RUN, writes the "
                "receptive fields and the branch-by-branch table here (about a minute on a CPU for a Shapes run).", ""]
    return [TITLE, "", explain_markdown(result, lambda name: relative(explain_dir(folder) / name)), ""]


def _radius_rows(explained: Dict) -> List[str]:
    """ASPP on − off in the centre pixel's effective radius, seed by seed, per loss."""
    by = {(r["label"], r["aspp"], r["seed"]): e["receptive_field"]["centre"]["radius_mean"] for r, e in explained}
    rows = ["| loss | per-seed radius on − off (px) | mean | 95% interval |", "|---|---|---|---|"]
    for loss in dict.fromkeys(r["label"] for r, _ in explained):
        seeds = sorted(s for (l_, a, s) in by if l_ == loss and a and (loss, False, s) in by)
        if seeds:
            res = paired_interval([by[(loss, True, s)] - by[(loss, False, s)] for s in seeds])
            diffs = ", ".join(f"{d:+.1f}" for d in res["differences"])
            rows.append(f"| {loss} | {diffs} | {res['mean']:+.1f} | {_ci(res['low'], res['high'], '{:+.1f}')} |")
    return rows if len(rows) > 2 else []


def _grid_branch_rows(explained: Dict) -> List[str]:
    """Per loss and branch: the mIoU change with it off, over the seeds with ASPP on (t interval)."""
    changes = defaultdict(list)
    for r, e in explained:
        for b in (e.get("branches") or {}).get("branches", []):
            changes[(r["label"], b["branch"])].append(b["difference"])
    rows = ["| loss | branch off | per-seed mIoU change | mean | 95% interval over seeds |", "|---|---|---|---|---|"]
    for (loss, branch), diffs in changes.items():
        res = paired_interval(diffs)
        rows.append(f"| {loss} | {branch} | {', '.join(f'{d:+.4f}' for d in diffs)} | {res['mean']:+.4f} | "
                    f"{_ci(res['low'], res['high'], '{:+.4f}')} |")
    return rows if changes else []


def grid_section(root: Path, runs: List[Dict], relative: Callable[[Path], str]) -> List[str]:
    """The grid report's "What ASPP does": the centre pixel's effective radius ASPP on − off, paired by seed,
    and the branch table over seeds; the command when no run was explained."""
    explained = [(r, e) for r in runs if (e := read_explained(r["folder"])) is not None]
    if not explained:
        return [TITLE, "", "Not measured yet: `dlstudio-aspp explain GRID`, with this experiments folder as GRID, "
                "explains every run (receptive fields, ASPP branch by branch) and this section then compares them.", ""]
    parts = [TITLE, "", f"{len(explained)} of {len(runs)} runs explained (`dlstudio-aspp explain`). The effective "
             f"radius is that of the centre pixel: the disc holding 90% of {LUO}.", ""]
    radius = _radius_rows(explained)
    if radius:
        parts += ["### Effective radius, ASPP on − off, paired by seed", "", *radius, ""]
    branches = _grid_branch_rows(explained)
    if branches:
        parts += ["### ASPP branches, one off at a time", "", *branches, ""]
    run, first = next(((r, e) for r, e in explained if e.get("branches")), explained[0])
    folder = explain_dir(run["folder"])
    parts += [f"Figures of `{Path(run['folder']).name}`:", "",
              *[f"![{k}]({relative(folder / v)})" for k, v in first["figures"].items()], ""]
    return parts


def explain_summary(folder: Path, result: dict) -> str:
    """One line per explained run: the centre pixel's effective radius and the branch that matters most."""
    centre = result["receptive_field"]["centre"]
    line = (f"{folder}/explain: centre pixel's field holds 90% within {centre['radius_mean']:.1f} px "
            f"(mean over {result['num_images']} test images)")
    branches = (result.get("branches") or {}).get("branches")
    needed = [b for b in branches or [] if b["ci95"][1] < 0]
    if needed:
        worst = min(needed, key=lambda b: b["difference"])
        line += f"; the branch it needs most: {worst['branch']} ({worst['difference']:+.4f} mIoU when off)"
    elif branches:
        line += "; no ASPP branch is needed on its own (each one off loses no mIoU detectably)"
    return line
