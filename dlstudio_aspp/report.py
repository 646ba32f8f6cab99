"""``dlstudio-aspp report RUN_DIR``: plots, tables and ``report.md`` from the runs on disk.

Every number in the report is read from the run folders written by
:mod:`dlstudio_aspp.experiments`; nothing is typed in by hand.
"""
from __future__ import annotations

import math
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from .atomic import write_text
from .card import RunCard
from .run_files import RunFiles
from .errors import MissingFileError, UserError
from .documents import key_value_table
from .grid_plots import best_worst_lines, by_setting, plot_aspp, plot_best_worst, plot_overlay, plot_qualitative
from .explain_report import grid_section
from .floors import FLOORS_NOTE, floors_rows
from .grid import GridFolder, read_json as _read_json
from .spec import show_value
from .stats import HELPS, HURTS, paired_interval


def load_runs(folder: GridFolder) -> List[dict]:
    """Finished runs of the grid: summary, card, history, metrics, folder and grid order of each, with the
    card's loss, ASPP setting, seed, recipe and head (its spec, the options' one copy).

    ``label`` names what the report draws, tabulates and pairs as one setting: the loss, or in a grid with
    axes besides loss, ASPP and seed (``--lr 1e-3,3e-3``) the loss with its variant, ``'mse (lr 0.003)'``;
    ``variant`` is (loss, ((axis, value), ...)), so that only variants one setting apart are compared."""
    settings = folder.read_settings()
    order, extra = settings.get("cells") or [], list(settings.get("axes") or {})
    runs = []
    for name in folder.finished_names():
        run = folder.read_summary(name)
        card = RunCard.load(folder.run_folder(name))
        run.update({k: card.spec.get(k) for k in ("loss", "aspp", "seed", "recipe", "head")})
        run.update(card=card, history=_read_json(card.files.history_json), metrics=_read_json(card.files.metrics_file),
                   folder=folder.run_folder(name), order=order.index(name) if name in order else len(order))
        setting = tuple((k, show_value(k, card.spec.get(k))) for k in extra)
        run["variant"] = (run["loss"], setting)
        run["label"] = run["loss"] + (f" ({', '.join(f'{k} {v}' for k, v in setting)})" if setting else "")
        runs.append(run)
    if not runs:
        raise MissingFileError(f"no finished runs under {folder.runs_dir}; run `dlstudio-aspp experiments --out "
                               f"{folder.root}` first")
    return runs


def _ms(values) -> str:
    v = [x for x in values if x is not None and not math.isnan(x)]
    if not v:
        return "n/a"
    return f"{np.mean(v):.3f} ± {np.std(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}"


def metrics_table(runs) -> str:
    names = runs[0]["metrics"]["class_names"]
    head = ["loss", "ASPP", "seeds", "mIoU", "mean Dice"] + [f"IoU {n}" for n in names] + [f"Dice {n}" for n in names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (loss, aspp), members in by_setting(runs).items():
        m = [r["metrics"] for r in members]
        cells = [loss, "on" if aspp else "off", str(len(members)), _ms([x["miou"] for x in m]), _ms([x["mean_dice"] for x in m])]
        cells += [_ms([x["iou"][k] for x in m]) for k in range(len(names))]
        cells += [_ms([x["dice"][k] for x in m]) for k in range(len(names))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _interval(r: dict) -> str:
    ci = r.get("miou_ci95") or r["metrics"].get("miou_ci95")
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci and not any(math.isnan(v) for v in ci) else "n/a"


def run_table(runs) -> str:
    """Every run's test mIoU with its 95% bootstrap interval over test images."""
    lines = ["| run | mIoU | 95% bootstrap interval (test images) |", "|---|---|---|"]
    for r in sorted(runs, key=lambda r: r.get("order", 0)):
        lines.append(f"| {r['folder'].name} | {r['miou']:.3f} | {_interval(r)} |")
    return "\n".join(lines)


def _fmt_pair(label: str, res: dict, verdict: str) -> str:
    diffs = ", ".join(f"{d:+.3f}" for d in res["differences"]) or "none"
    ci = "n/a" if math.isnan(res["low"]) else f"[{res['low']:+.3f}, {res['high']:+.3f}]"
    mean = "n/a" if math.isnan(res["mean"]) else f"{res['mean']:+.3f}"
    return f"| {label} | {res['n']} | {diffs} | {mean} | {ci} | {res['over']} | {verdict} |"


def _paired(pairs: List[tuple]) -> dict:
    """A − B over ``pairs`` of (run A, run B), one per seed: the t interval over seeds; with one seed, the paired
    bootstrap over its test images, as ``dlstudio-aspp compare`` computes it (the same verdict)."""
    res = paired_interval([a["miou"] - b["miou"] for a, b in pairs])
    if len(pairs) != 1:
        return dict(res, over=f"{len(pairs)} seeds (t)")
    from .metrics import bootstrap_miou

    files = [r["card"].files.image_counts_file for r in pairs[0]]
    if not all(f.is_file() for f in files):
        return dict(res, over="1 seed (per-image counts not kept)")
    a, b = (np.load(f, allow_pickle=False) for f in files)
    if a.shape != b.shape:
        return dict(res, over="1 seed (scored on other test images)")
    low, high = bootstrap_miou(a, minus=b)
    verdict = HELPS if low > 0 else HURTS if high < 0 else "no difference detectable on these test images"
    return dict(res, low=low, high=high, verdict=verdict, over=f"{a.shape[0]} test images (1 seed, bootstrap)")


def _apart(a, b) -> int:
    """How many settings two variants (loss, ((axis, value), ...)) differ in."""
    return (a[0] != b[0]) + sum(x != y for x, y in zip(a[1], b[1]))


def paired_tables(runs) -> str:
    """ASPP on − off per loss, and each pair of losses, paired by seed (and ASPP setting)."""
    by_key = {(r["label"], r["aspp"], r["seed"]): r for r in runs}
    losses = list(dict.fromkeys(r["label"] for r in sorted(runs, key=lambda r: r.get("order", 0))))
    seeds = sorted({r["seed"] for r in runs})
    pairs = lambda a, b: [(by_key[a + (s,)], by_key[b + (s,)]) for s in seeds  # noqa: E731
                          if a + (s,) in by_key and b + (s,) in by_key]
    head = ["| comparison | pairs | per-seed differences | mean | 95% interval | interval over | verdict |",
            "|---|---|---|---|---|---|---|"]
    aspp_rows = []
    for loss in losses:
        if found := pairs((loss, True), (loss, False)):
            res = _paired(found)
            aspp_rows.append(_fmt_pair(f"{loss}: ASPP on − off", res,
                                       {"helps": "ASPP helps", "hurts": "ASPP hurts"}.get(res["verdict"], res["verdict"])))
    variant = {r["label"]: r["variant"] for r in runs}
    loss_rows = []
    for i, a in enumerate(losses):
        for b in losses[i + 1:]:
            if _apart(variant[a], variant[b]) != 1:
                continue  # variants two or more settings apart: no paired question to ask
            for aspp in (True, False):
                if found := pairs((a, aspp), (b, aspp)):
                    res = _paired(found)
                    verdict = {"helps": f"{a} better", "hurts": f"{b} better"}.get(res["verdict"], res["verdict"])
                    loss_rows.append(_fmt_pair(f"{a} − {b} (ASPP {'on' if aspp else 'off'})", res, verdict))
    parts = []
    if aspp_rows:
        parts += ["### ASPP on − off, per loss", "", *head, *aspp_rows, ""]
    if loss_rows:
        settings = any(v[1] for v in variant.values())
        parts += ["### Between losses and settings" if settings else "### Between losses", "", *head, *loss_rows, ""]
    return "\n".join(parts) if parts else "_No paired runs (each comparison needs both settings for a seed)._"


def scale_table(runs) -> str:
    rows = [r for r in runs if r.get("magnitudes")]
    if not rows:
        return "_No Dice+MSE runs._"
    head = ["run", "scale", "auto", "MSE start", "Dice start", "MSE/Dice start", "Dice share start",
            "MSE end", "Dice end", "MSE/Dice end", "Dice share end"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        m = r["magnitudes"]
        s, e = m["start"], m["end"]
        lines.append("| " + " | ".join([r["folder"].name, f"{m['dice_scale']:.4g}", "yes" if m["auto_scale"] else "no",
                                        f"{s['mse']:.4g}", f"{s['dice']:.3f}", f"{s['mse_over_dice']:.4g}", f"{s['dice_share']:.1%}",
                                        f"{e['mse']:.4g}", f"{e['dice']:.3f}", f"{e['mse_over_dice']:.4g}", f"{e['dice_share']:.1%}"]) + " |")
    return "\n".join(lines)


STOCK_HEAD_NOTE = ("**Note:** runs with the stock output layer (`head='stock'`) can only segment 1 pixel in 4: stock "
                   "mUNet's `conv_out` (stride 2, dilation 2) writes the bias alone into every odd row and column, "
                   "so per-class IoU is capped near 0.25 whatever the loss, ASPP or budget.")


def _rates(runs) -> str:
    """The ASPP rates of the runs with ASPP ('ASPP off in every run' when none has it)."""
    rates = sorted({tuple(r["card"].spec.get("rates") or ()) for r in runs if r["card"].spec.get("aspp")})
    return "ASPP rates " + " and ".join(",".join(map(str, r)) for r in rates) if rates else "ASPP off in every run"


def _header(grid: dict, runs) -> List[str]:
    spec = grid.get("spec", {})
    n_iters = sorted({len(r["history"]["loss"]) for r in runs})
    optimizer = spec.get("optimizer", "sgd") + (f" (momentum {spec['momentum']})" if "momentum" in spec else "")
    line = (f"Dataset: **{spec.get('dataset', '?')}** (`{spec.get('data', '?')}`); preset `{grid.get('preset', '?')}`; "
            f"{len(runs)} finished runs; iterations per run: {', '.join(map(str, n_iters))}; batch "
            f"{spec.get('batch_size')}, {optimizer}, lr {spec.get('lr')}, depth {spec.get('depth')}, {_rates(runs)}; "
            f"test images scored per run: {runs[0]['metrics']['num_images']}; recipe "
            f"`{spec.get('recipe', 'stock')}`, output layer `{spec.get('head', 'stock')}`.")
    synthetic = "**SYNTHETIC data** (made by `dlstudio-aspp make-shapes`, not the real PurdueShapes5MultiObject).\n"
    stock = any(r.get("head", "stock") == "stock" for r in runs)
    return ["# Segmentation experiments", "", (synthetic if grid.get("synthetic") else "") + line, "",
            STOCK_HEAD_NOTE if stock else "", ""]


@dataclass(frozen=True)
class Figure:
    """A figure of the grid report under its own heading: ``draw(runs, figures folder) -> the PNG's path``."""

    title: str
    alt: str
    draw: Callable[[list, Path], Path]


#: The figures after the best- and worst-case curves, in order (docs/extending.md: a report figure).
FIGURES: List[Figure] = [Figure("All losses together", "overlay", plot_overlay)]


def _curves_section(folder: GridFolder, runs) -> List[str]:
    """The best- and worst-seed loss curves of each setting, then :data:`FIGURES`."""
    rel = folder.relative
    curves = ["## Training loss: best and worst seed", "",
              "Best and worst by the final running loss of each seed's training curve:", "", *best_worst_lines(runs), "",
              *[f"![{p.stem}]({rel(p)})" for p in plot_best_worst(runs, folder.figures_dir)], ""]
    for figure in FIGURES:
        curves += [f"## {figure.title}", "", f"![{figure.alt}]({rel(figure.draw(runs, folder.figures_dir))})", ""]
    return curves


def _aspp_section(folder: GridFolder, runs) -> List[str]:
    return [f"![aspp]({folder.relative(plot_aspp(runs, folder.figures_dir))})", ""]


def _qualitative_section(folder: GridFolder, runs) -> List[str]:
    return ["## Qualitative results (fixed test images, lowest seed of each setting)", "",
            f"![qualitative]({folder.relative(plot_qualitative(runs, folder.figures_dir))})", ""]


def _tables(folder: GridFolder, runs) -> List[str]:
    return [
        "## Test metrics (mean ± std over seeds)", "",
        f"Decision rule (from each run's card): {runs[0]['card'].threshold_rule()}; classes absent from prediction "
        "and target are not scored.", "", metrics_table(runs), "",
        *_floors_section(runs),
        "## Comparisons with their uncertainty", "",
        "Runs of the same seed share initial weights and data order, so each comparison is a set of per-seed "
        "differences in test mIoU. The verdict follows the 95% interval of their mean ('interval over': seeds, a t "
        "interval): entirely above or below 0 names a winner; an interval that contains 0 means no difference is "
        "detectable at this budget and seed count. With one seed the interval is the paired bootstrap over the test "
        "images, as `dlstudio-aspp compare` gives it: it says which run segments these images better, not whether "
        "another seed would agree.",
        "", paired_tables(runs), "",
        "Each run's mIoU with a 95% bootstrap interval over test images (the spread from which images were tested, "
        "not from training):", "", run_table(runs), ""]


def _floors_section(runs) -> List[str]:
    """The floors (the same for every run of the grid: one data set) against the lowest seed's run of each setting."""
    firsts = [members[0] for members in by_setting(runs).values() if "floors" in members[0]["metrics"]]
    if not firsts:
        return []
    parts = ["### Against the floors", "", FLOORS_NOTE, ""]
    for r in firsts:
        parts += [f"`{r['folder'].name}`:", "", *floors_rows(r["metrics"]), ""]
    return parts


def _scale_section(folder: GridFolder, runs) -> List[str]:
    why = ("These runs trained against {0, 1} masks, where MSE is at most 1 and falls to a few hundredths while "
           "Dice stays near 0.5 or more, so a large scale leaves the total almost all Dice."
           if runs[0]["card"].binary_targets else
           "Dice is bounded by about 1 while MSE on 0..250 masks is not, so without a scale Dice would be a "
           "rounding error in the total.")
    return ["## Dice scale factor: measured magnitudes of the two terms", "",
            "Mean over the first and last 20 iterations. 'Dice share' is scale·Dice / (MSE + scale·Dice): "
            "how much of the total loss the Dice term makes up. " + why, "", scale_table(runs), ""]


def _failures_section(folder: GridFolder, runs) -> List[str]:
    failed = folder.read_settings().get("failed") or {}
    if not failed:
        return []
    return ["## Failed runs", "", "These runs failed and have no results (the serial grid records runs whose "
            "loss became NaN or inf; the Ray executor any run that failed twice):", "",
            "| run | error |", "|---|---|", *[f"| {k} | {v.replace('|', '/')} |" for k, v in sorted(failed.items())], ""]


def sam_section(sam_dir: Path, relative: Callable[[Path], str]) -> List[str]:
    """The SAM comparison written by ``sam-compare`` into ``sam_dir`` (its tables and figures), or nothing."""
    parts = []
    for table in sorted(Path(sam_dir).glob("sam_*_metrics.md")):
        fig = table.with_name(table.name.replace("_metrics.md", ".png"))
        parts += [table.read_text(), f"![{fig.stem}]({relative(fig)})" if fig.is_file() else "", ""]
    return ["## SAM comparison", "", *parts] if parts else []


def _provenance_section(folder: GridFolder, runs) -> List[str]:
    grid = folder.read_settings()
    return ["## How it was made", "", *key_value_table("provenance", grid.get("provenance") or {"recorded": "no"}),
            "", "Each run's own card (`runs/<name>/saved_model.json`) records its provenance and the time of each phase."]


#: The grid report's sections, in order: name -> (grid folder, its runs) -> Markdown lines. The report
#: joins them; the notebook (:mod:`dlstudio_aspp.notebook`) shows each under its own code cell.
SECTIONS: Dict[str, Callable[[GridFolder, list], List[str]]] = {
    "header": lambda folder, runs: _header(folder.read_settings(), runs),
    "loss curves": _curves_section,
    "test metrics": _tables,
    "aspp": _aspp_section,
    "what aspp does": lambda folder, runs: grid_section(folder.root, runs, folder.relative),
    "qualitative": _qualitative_section,
    "dice scale": _scale_section,
    "failures": _failures_section,
    "sam": lambda folder, runs: sam_section(folder.sam_dir, folder.relative),
    "provenance": _provenance_section,
}


def grid_runs(root) -> Tuple[GridFolder, List[dict]]:
    """(the grid folder, its finished runs) of the experiments folder ``root``, its figures folder made."""
    folder = GridFolder(root)
    if not folder.exists() and RunCard.load_if_present(RunFiles.at(folder.root).weights) is not None:
        raise UserError(f"{folder.root} is a single run's folder; `report` reads an experiments folder "
                        f"(`dlstudio-aspp experiments --out DIR`)")
    runs = load_runs(folder)
    folder.figures_dir.mkdir(exist_ok=True)
    return folder, runs


def section(name: str, root, runs: Optional[list] = None) -> List[str]:
    """One section of the grid report of ``root`` (see :data:`SECTIONS`), its figures written."""
    if name not in SECTIONS:
        raise UserError(f"no report section {name!r}; the sections are {', '.join(SECTIONS)}")
    folder, loaded = grid_runs(root) if runs is None else (GridFolder(root), runs)
    return SECTIONS[name](folder, loaded)


def make_report(root: str | Path) -> Path:
    """Write the figures, tables and ``report.md`` of the grid in ``root``; return the report's path."""
    folder, runs = grid_runs(root)
    parts = [line for fn in SECTIONS.values() for line in fn(folder, runs)]
    write_text(folder.report_file, "\n".join(parts) + "\n")
    return folder.report_file
