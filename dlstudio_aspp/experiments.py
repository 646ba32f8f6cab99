"""The experiment grid: every loss x ASPP on/off x seed (x any other axis), one run folder per cell, resumable.

A grid is a base :class:`~dlstudio_aspp.spec.RunSpec` and its axes: the homework's three
(losses, ASPP settings, seeds) and any other RunSpec field marked as an axis, given two or
more values (``--lr 1e-3,3e-3``, ``--augment light,standard``, ``--rates 2,4,6/3,6,9``); each
cell is the base spec with one value of every axis, run
by :func:`~dlstudio_aspp.runner.train_and_score` in its folder of the
:class:`~dlstudio_aspp.grid.GridFolder`. Finished runs are skipped; a started run
resumes from its checkpoint. A run whose loss becomes NaN or inf is listed with its
error under ``failed`` in ``grid.json`` (and in the report) and the grid goes on; any
other error stops the serial grid (the Ray executor records every failed run).

All runs of a seed start from the same initial weights: the model is built right after
``torch.manual_seed(seed)`` and the ASPP block is created after every stock layer, so the
stock layers are identical whether ASPP is on or off.
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from . import crash
from .errors import NonFiniteLossError, UserError
from .grid import GridFolder
from .recipes import COCO_COST, ByName, Cost
from .spec import SPEC_FIELDS, RunSpec, flag, normalize_loss, show_value

DEFAULT_LOSSES = ["mse", "dice", "dice+mse:20", "dice+mse:200"]
#: The homework's grid axes, always in a grid; any other RunSpec field marked as an axis joins them
#: when it is given two or more values (``GridConfig.extra``).
AXES = ("loss", "aspp", "seed")


@dataclass(frozen=True)
class Preset:
    """A named grid: a recipe, RunSpec fields and the axes' values (``losses``, ``aspp``, ``seeds``; for COCO,
    the side ``--coco-root`` builds, ``size``), what it is for (``about``, in ``experiments --help``) and,
    when measured, its ``cost``."""

    name: str
    about: str
    values: Dict[str, Any]
    cost: Optional[Cost] = None

    def help(self) -> str:
        return self.about + (f"; {self.cost.short()}" if self.cost else "")


PRESET_LIST: List[Preset] = [
    Preset("homework", "the users' protocol, stock head and recipe, 6 epochs, for a GPU",
           dict(recipe="stock", epochs=6, seeds=[0, 1, 2])),
    Preset("homework-dense", "the same budget with the dense head and the modern recipe, bce+dice added to the losses",
           dict(recipe="modern", epochs=6, seeds=[0, 1, 2], losses=["bce+dice"] + DEFAULT_LOSSES)),
    # lr 3e-3: a short one-cycle run learns faster at the higher peak (1e-3 is best for a full epoch).
    Preset("quick", "the homework's four losses, ASPP on and off, 3 seeds, at a CPU's budget: the dense head and "
                    "the modern recipe, 400 iterations, depth 8",
           dict(recipe="modern", max_iters=400, lr=3e-3, depth=8, seeds=[0, 1, 2], losses=DEFAULT_LOSSES,
                test_subset=200, log_every=50),
           cost=Cost(41, "one CPU core", "24 runs of 400 iterations and the report, one thread, beside other work",
                     "2026-12-05", "368dde5", "The quick preset: the homework's four losses on one CPU core")),
    Preset("coco-quick", "a build-coco --data set, the coco recipe (depth 4), one run: run's COCO default",
           dict(recipe="coco", dataset="coco", seeds=[0], aspp=[True], losses=["bce+dice"]), cost=COCO_COST),
    Preset("coco", "the homework's 256x256 (--coco-root builds at 256) and depth 16, 150 epochs, ASPP on and off, "
                   "3 seeds, for a GPU",
           dict(recipe="coco", dataset="coco", epochs=150, depth=16, size=256, seeds=[0, 1, 2], aspp=[True, False],
                losses=["bce+dice"])),
    Preset("smoke", "seconds: for tests and a first look",
           dict(recipe="stock", max_iters=4, depth=4, seeds=[0, 1], test_subset=8, log_every=2)),
]
#: name -> the preset's values (what :meth:`GridConfig.from_preset` starts from), read from :data:`PRESET_LIST`.
PRESETS: Mapping[str, dict] = ByName(lambda: PRESET_LIST, lambda p: dict(p.values))
#: name -> one line, for experiments --help.
PRESET_HELP: Mapping[str, str] = ByName(lambda: PRESET_LIST, Preset.help)


@dataclass(frozen=True)
class GridConfig:
    """A grid: the base spec (every option but the axes) and the axes' values. Frozen: :meth:`validate`
    and :func:`plan_grid` return resolved copies."""

    spec: RunSpec = field(default_factory=RunSpec)
    losses: List[str] = field(default_factory=lambda: list(DEFAULT_LOSSES))
    aspp: List[bool] = field(default_factory=lambda: [True, False])
    seeds: List[int] = field(default_factory=lambda: [0, 1])
    preset: str = "custom"
    #: Other axes: RunSpec field -> its values (two or more), varied after the homework's three.
    extra: Dict[str, List[Any]] = field(default_factory=dict)
    #: The side of the COCO set that --coco-root builds for this grid (None: run's).
    size: Optional[int] = None

    @classmethod
    def from_preset(cls, name: str, *, losses=None, aspp=None, seeds=None, extra=None, **explicit) -> "GridConfig":
        """The preset's grid with ``explicit`` RunSpec fields (and axes) on top; None values are ignored."""
        if name not in PRESETS:
            raise UserError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
        preset = dict(PRESETS[name])
        axes = {k: preset.pop(k) for k in ("losses", "aspp", "seeds") if k in preset}
        size = preset.pop("size", None)
        recipe = explicit.pop("recipe", None) or preset.pop("recipe", None)
        preset.pop("recipe", None)
        values = dict(preset, **{k: v for k, v in explicit.items() if v is not None})
        spec = RunSpec.build(recipe, **values)
        axes.update({k: v for k, v in dict(losses=losses, aspp=aspp, seeds=seeds).items() if v is not None})
        return cls(spec=spec, preset=name, extra=dict(extra or {}), size=size, **axes)

    def validate(self) -> "GridConfig":
        """Check every setting and that no two cells are the same run, before anything is written; return the
        checked grid, its losses in their canonical spelling (checked once: a checked grid returns itself)."""
        if self.__dict__.get("_checked"):
            return self
        if not self.seeds or not self.losses or not self.aspp:
            raise UserError("the grid needs at least one loss, one ASPP setting and one seed")
        checked = dataclasses.replace(self, losses=[normalize_loss(loss) for loss in self.losses])
        checked._check_axes()
        object.__setattr__(checked, "_checked", True)
        return checked

    def with_spec(self, spec: RunSpec) -> "GridConfig":
        """This grid on another base spec, still checked: the axes' checks do not depend on the base, and a
        replaced spec has re-checked the fields that changed."""
        moved = dataclasses.replace(self, spec=spec)
        if self.__dict__.get("_checked"):
            object.__setattr__(moved, "_checked", True)
        return moved

    def _check_axes(self) -> None:
        for name, values in self.extra.items():
            if name in AXES or name not in SPEC_FIELDS or not SPEC_FIELDS[name].metadata["axis"]:
                axes = [n for n, f in SPEC_FIELDS.items() if f.metadata["axis"] and n not in AXES]
                raise UserError(f"{flag(name)} is not a grid axis; the axes besides --loss, --aspp and --seed are "
                                f"{', '.join(flag(n) for n in axes)}")
            if len(values) < 2:
                raise UserError(f"{flag(name)} as a grid axis needs two or more values, got {values}")
        named = [("--loss", self.losses), ("--aspp", self.aspp), ("--seed", self.seeds)]
        for axis, values in named + [(flag(k), v) for k, v in self.extra.items()]:
            dup = sorted({str(v) for v in values if list(values).count(v) > 1})
            if dup:
                raise UserError(f"{axis} lists {', '.join(dup)} more than once; each cell of the grid must be a different run")
        for spec in self.cell_specs():
            spec.validate()

    def cell_specs(self) -> List[RunSpec]:
        extra = [dict(zip(self.extra, values)) for values in itertools.product(*self.extra.values())]
        return [self.spec.replace(loss=loss, aspp=aspp, seed=seed, **other)
                for seed in self.seeds for aspp in self.aspp for loss in self.losses for other in extra]

    def cells(self) -> List[Tuple[str, RunSpec]]:
        """(run name, spec) of every run, in the grid's order (seed, then ASPP on/off, then loss, then the other
        axes); a run's folder is ``<loss>__aspp-<on|off>__seed-<s>``, then ``__<axis>-<value>`` for each other axis."""
        return [(GridFolder.cell_name(s.loss, s.aspp, s.seed) + self.extra_name(s), s) for s in self.cell_specs()]

    def extra_name(self, spec: RunSpec) -> str:
        return "".join(f"__{flag(k)[2:]}-{show_value(k, getattr(spec, k))}" for k in self.extra)

    def axis_names(self) -> Tuple[str, ...]:
        return AXES + tuple(self.extra)

    def to_json(self) -> dict:
        base = {k: v for k, v in self.spec.to_json().items() if k not in self.axis_names()}
        out = {"preset": self.preset, "spec": base, "losses": list(self.losses), "aspp": list(self.aspp),
               "seeds": list(self.seeds), "cells": [name for name, _ in self.cells()]}
        if self.extra:
            out["axes"] = {k: [list(v) if isinstance(v, tuple) else v for v in values] for k, values in self.extra.items()}
        return out


def check_grid_folder(cfg: GridConfig, folder: GridFolder) -> None:
    """Refuse a folder whose started runs came from other settings (the axes may grow)."""
    old = folder.read_settings().get("spec")
    if old is None:
        return
    new = {k: v for k, v in cfg.spec.result_values().items() if k not in cfg.axis_names()}
    old_spec = RunSpec.from_json(old).result_values()
    changed = sorted(k for k in new if old_spec.get(k) != new[k])
    if changed and folder.has_started_runs():
        raise UserError(f"{folder.root} holds runs of a grid with other settings ({', '.join(changed)}); "
                        "use another folder")


@dataclass(frozen=True)
class GridPlan:
    """A grid resolved once: its settings with the data folder and the ASPP rates made concrete, its folder,
    the data (opened once for every run) and whether the data is synthetic."""

    cfg: GridConfig
    folder: GridFolder
    train: Any
    test: Any
    synthetic: bool

    def todo(self) -> List[Tuple[str, RunSpec]]:
        """(name, spec) of the runs not finished yet, in grid order."""
        return [(name, spec) for name, spec in self.cfg.cells() if not self.folder.is_finished(name)]

    def describe(self) -> str:
        """The runs, what each trains (the first run's plan: images, iterations, model) and where they go."""
        from .runner import plan_run

        cfg, cells, todo = self.cfg, self.cfg.cells(), self.todo()
        axes = [f"{len(cfg.losses)} losses ({', '.join(cfg.losses)})", f"ASPP {'/'.join('on' if a else 'off' for a in cfg.aspp)}",
                f"seeds {', '.join(map(str, cfg.seeds))}"] + [f"{flag(k)} {', '.join(show_value(k, v) for v in vs)}"
                                                               for k, vs in cfg.extra.items()]
        lines = [f"{len(cells)} runs: " + " x ".join(axes) + f"; {len(cells) - len(todo)} finished already"]
        if todo:
            name, spec = todo[0]
            lines += [f"first to train, {name}:", plan_run(spec, self.folder.run_folder(name), data=(self.train, self.test),
                                                           load_seconds=0.0).describe()]
        return "\n".join(lines)


def plan_grid(cfg: GridConfig, out) -> GridPlan:
    """Check every setting, the folder and the data, and resolve the grid; nothing is written."""
    from .data.open import dataroot, dataset_shape, is_synthetic, open_datasets

    cfg = cfg.validate()
    folder = GridFolder(out)
    cfg = cfg.with_spec(cfg.spec.replace(data=dataroot(cfg.spec)))
    train, test = open_datasets(cfg.spec)
    # --rates auto made concrete, as each run records it
    cfg = cfg.with_spec(cfg.spec.for_images(dataset_shape(train)[1]))
    check_grid_folder(cfg, folder)
    return GridPlan(cfg, folder, train, test, is_synthetic(cfg.spec))


def prepare_grid(cfg: GridConfig, out) -> GridPlan:
    """:func:`plan_grid`, then :func:`record_grid`; nothing is written before all checks pass, so a typo leaves
    the folder as it was."""
    return record_grid(plan_grid(cfg, out))


def record_grid(plan: GridPlan) -> GridPlan:
    """Write the planned grid's ``grid.json`` (its settings, whether the data is synthetic, its provenance)."""
    if plan.synthetic:
        from .data.sources import SYNTHETIC_NOTE

        print(f"NOTE: {plan.cfg.spec.data} holds SYNTHETIC data: {SYNTHETIC_NOTE}")
    from .provenance import provenance

    plan.folder.write_settings(dict(plan.cfg.to_json(), synthetic=plan.synthetic, provenance=provenance()))
    return plan


def run_grid(cfg: GridConfig, out) -> List[Path]:
    """Run (or finish) every run of the grid under ``out``, one after another; return the run folders.

    A run whose loss becomes NaN or inf is recorded in ``grid.json`` (``failed``) and the
    grid goes on; any other error stops the grid, and the same command resumes it.
    """
    from .runner import train_and_score

    plan = prepare_grid(cfg, out)
    folder, cells = plan.folder, plan.cfg.cells()
    failed: Dict[str, str] = {}
    try:
        for k, (name, spec) in enumerate(cells, 1):
            if folder.is_finished(name):
                print(f"[{k}/{len(cells)}] {name}: done, skipped")
                continue
            print(f"[{k}/{len(cells)}] {name}")
            try:
                train_and_score(spec, folder.run_folder(name), data=(plan.train, plan.test))
                crash.point("grid-between-runs")
            except NonFiniteLossError as exc:
                print(f"[{k}/{len(cells)}] {name} failed ({exc}); recorded as failed, the grid goes on")
                failed[name] = f"{type(exc).__name__}: {exc}"
    finally:
        folder.record_failures(failed)
    return [folder.run_folder(name) for name, _ in cells]


def grid_unfinished(cfg: GridConfig, out) -> List[str]:
    """The runs of the grid with no finished folder (failed, or never run), in grid order."""
    folder = GridFolder(out)
    return [name for name, _ in cfg.cells() if not folder.is_finished(name)]


def grid_outcome(cfg: GridConfig, out) -> str:
    """One line for the end of a grid, from the run folders and ``grid.json``, whichever executor ran it."""
    folder = GridFolder(out)
    cells = cfg.cells()
    finished = len(cells) - len(grid_unfinished(cfg, out))
    failed = sorted(folder.failures())
    return (f"{finished} of {len(cells)} runs finished in {folder.runs_dir}"
            + (f"; failed: {', '.join(failed)}" if failed else ""))

