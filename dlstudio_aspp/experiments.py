"""The experiment grid: every loss x ASPP on/off x seed, one folder per run, resumable.

Layout of ``OUT``::

    OUT/grid.json                       the settings of the grid
    OUT/runs/<loss>__aspp-<on|off>__seed-<s>/
        saved_model, saved_model.json, saved_model.history.json/.csv, saved_model.ckpt,
        saved_model.metrics.json, saved_model.test_grid.png,
        samples.npz                     fixed test images, masks and outputs (for the report)
        summary.json                    written last: the run is done

A run that fails is listed with its error under ``failed`` in ``grid.json`` (and in the
report); the rest of the grid goes on.

All runs of a seed start from the same initial weights: the model is built right after
``torch.manual_seed(seed)`` and the ASPP block is created after every stock layer, so the
stock layers are identical whether ASPP is on or off.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .atomic import write_json
from .errors import NonFiniteLossError, UserError
from .losses import loss_label

QUICK_ITERS = 400

PRESETS = {
    # The users' protocol, on the full data: stock head and recipe. Meant for a GPU.
    "homework": dict(recipe="stock", head="stock", epochs=6, max_iters=None, batch_size=4, lr=1e-4, momentum=0.9,
                     depth=16, seeds=[0, 1, 2], train_subset=None, test_subset=None, log_every=500),
    # The same budget with the dense output layer and the modern recipe: its own loss, then the homework's.
    "homework-dense": dict(recipe="modern", head="dense", epochs=6, max_iters=None, batch_size=4, lr=None, momentum=0.9,
                           depth=16, seeds=[0, 1, 2], train_subset=None, test_subset=None, log_every=500,
                           losses=["bce+dice", "mse", "dice", "dice+mse:20", "dice+mse:200"]),
    # At most 20 minutes on 2 CPU cores, on models that segment: dense head, modern recipe.
    # lr 3e-3: a short one-cycle run learns faster at the higher peak (1e-3 is best for a full epoch).
    "quick": dict(recipe="modern", head="dense", epochs=1, max_iters=QUICK_ITERS, batch_size=4, lr=3e-3, momentum=0.9,
                  depth=8, seeds=[0, 1, 2], losses=["bce+dice", "dice+mse:20"], train_subset=None, test_subset=200,
                  log_every=50),
    # Seconds: for tests and a first look.
    "smoke": dict(recipe="stock", head="stock", epochs=1, max_iters=4, batch_size=4, lr=1e-4, momentum=0.9, depth=4,
                  seeds=[0, 1], train_subset=None, test_subset=8, log_every=2),
}
DEFAULT_LOSSES = ["mse", "dice", "dice+mse:20", "dice+mse:200"]
SAMPLE_COUNT = 4  # the first test images, kept for the report's qualitative grid
#: Settings that change a run's result: a grid folder refuses a re-run that changes them.
RESULT_SETTINGS = ("dataset", "data", "train_file", "test_file", "recipe", "head", "epochs", "max_iters", "batch_size",
                   "lr", "momentum", "depth", "train_subset", "test_subset", "normalize_masks", "rates")


@dataclass
class GridConfig:
    """Everything an experiment grid needs; every field can be set from the command line."""

    dataset: str = "shapes"            # 'shapes' or 'coco'
    data: str = "./data/PurdueShapes5MultiObject/"
    train_file: str = "PurdueShapes5MultiObject-10000-train.gz"
    test_file: str = "PurdueShapes5MultiObject-1000-test.gz"
    losses: List[str] = field(default_factory=lambda: list(DEFAULT_LOSSES))
    aspp: List[bool] = field(default_factory=lambda: [True, False])
    rates: List[int] = field(default_factory=lambda: [2, 4, 6])
    seeds: List[int] = field(default_factory=lambda: [0, 1])
    recipe: str = "stock"
    head: str = "stock"
    epochs: int = 1
    max_iters: Optional[int] = None
    batch_size: int = 4
    lr: Optional[float] = None         # None: the recipe's (stock: DLStudio's 1e-4)
    momentum: float = 0.9
    depth: int = 16
    train_subset: Optional[int] = None
    test_subset: Optional[int] = None
    log_every: int = 500
    normalize_masks: bool = False
    amp: bool = False
    cpu: bool = False
    progress: bool = True
    preset: str = "custom"

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "GridConfig":
        if name not in PRESETS:
            raise UserError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
        values = dict(PRESETS[name], preset=name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def validate(self) -> None:
        """Check every setting (losses, recipe, head, rates, sizes) before anything is written."""
        from .aspp import ASPP
        from .losses import get_loss
        from .model import HEADS

        if self.dataset not in ("shapes", "coco"):
            raise UserError(f"dataset must be 'shapes' or 'coco', got {self.dataset!r}")
        if not self.seeds or not self.losses or not self.aspp:
            raise UserError("the grid needs at least one loss, one ASPP setting and one seed")
        for spec in self.losses:
            get_loss(spec)
        if self.head not in HEADS:
            raise UserError(f"unknown head {self.head!r}; valid: {', '.join(HEADS)}")
        self.train_options(self.losses[0], self.seeds[0]).validate()  # also refuses an unknown recipe
        ASPP.check_rates(self.rates)
        for name in ("epochs", "batch_size", "depth", "max_iters", "train_subset", "test_subset", "log_every"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise UserError(f"{name} must be an int >= 1, got {v!r}")
        if self.depth < 4:
            raise UserError(f"depth must be >= 4 (stock uses 16), got {self.depth}")

    def train_options(self, loss: str, seed: int, resume: bool = False, perf_file: Optional[str] = None):
        """The :class:`TrainOptions` of one run of the grid."""
        from .training import STOCK_LR, recipe_options

        opts = recipe_options(self.recipe, loss=loss, seed=seed, max_iters=self.max_iters, log_every=self.log_every,
                              progress=self.progress, resume=resume, amp=self.amp, lr=self.lr, momentum=self.momentum,
                              normalize_masks=self.normalize_masks or None, epochs=self.epochs, perf_file=perf_file)
        opts.lr = opts.lr if opts.lr is not None else STOCK_LR
        return opts


def run_name(loss: str, aspp: bool, seed: int) -> str:
    return f"{loss_label(loss)}__aspp-{'on' if aspp else 'off'}__seed-{seed}"


def magnitudes(history: dict, window: int = 20) -> dict:
    """Mean MSE and Dice terms over the first and last ``window`` iterations, and their ratios."""
    comp = history.get("components", {})
    if "mse" not in comp or "dice" not in comp:
        return {}
    out = {}
    for where, sl in (("start", slice(0, window)), ("end", slice(-window, None))):
        mse, dice = float(np.mean(comp["mse"][sl])), float(np.mean(comp["dice"][sl]))
        scale = float(comp["dice_scale"][sl][-1])
        out[where] = {"mse": mse, "dice": dice, "scaled_dice": scale * dice, "mse_over_dice": mse / max(dice, 1e-12),
                      "dice_share": scale * dice / max(mse + scale * dice, 1e-12)}
    out["dice_scale"] = float(comp["dice_scale"][-1])
    out["auto_scale"] = history.get("options", {}).get("loss", "").endswith("auto")
    return out


def _datasets(cfg: GridConfig):
    """Train and test sets of the grid (subsets applied) and the image size."""
    import torch

    data = cfg.data if cfg.data.endswith("/") else cfg.data + "/"
    if not Path(data).is_dir():
        raise UserError(f"--data {cfg.data} is not a folder; give the folder that holds the data")
    if cfg.dataset == "coco":
        from .data.coco import COCOSegmentationDataset

        train = COCOSegmentationDataset(train_or_test="train", root=data)
        test = COCOSegmentationDataset(train_or_test="test", root=data)
    else:
        from .data.shapes import PurdueShapes5MultiObjectDataset

        train = PurdueShapes5MultiObjectDataset(train_or_test="train", dataset_file=cfg.train_file, root=data)
        test = PurdueShapes5MultiObjectDataset(train_or_test="test", dataset_file=cfg.test_file, root=data)
    image_size = list(train.image_size)
    if cfg.train_subset:
        train = torch.utils.data.Subset(train, range(min(cfg.train_subset, len(train))))
    if cfg.test_subset:
        test = torch.utils.data.Subset(test, range(min(cfg.test_subset, len(test))))
    return train, test, image_size


def check_grid_folder(cfg: GridConfig, out: Path) -> None:
    """Refuse a folder whose finished or started runs came from other settings."""
    grid_file = out / "grid.json"
    if not grid_file.is_file():
        return
    try:
        old = json.loads(grid_file.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{grid_file} is not valid JSON ({exc}); delete it (the runs stay) or use another folder") from None
    changed = sorted(k for k in RESULT_SETTINGS if old.get(k) != asdict(cfg).get(k))
    started = any((out / "runs").glob("*/saved_model.*"))
    if changed and started:
        raise UserError(f"{out} holds runs of a grid with other settings ({', '.join(changed)}); use another folder")


def run_one(cfg: GridConfig, out: Path, loss: str, aspp: bool, seed: int, order: int, train, test, image_size) -> dict:
    """Train and score one run of the grid in ``out/runs/<name>``; return its summary (also written last)."""
    import torch

    from .segmentation import SemanticSegmentationASPP
    from .dlstudio_glue import make_dlstudio

    folder = out / "runs" / run_name(loss, aspp, seed)
    folder.mkdir(parents=True, exist_ok=True)
    opts = cfg.train_options(loss, seed, resume=(folder / "saved_model.ckpt").is_file(),
                             perf_file=str(folder / "performance_numbers.txt"))
    dls = make_dlstudio(cfg.data, folder, lr=opts.lr, momentum=cfg.momentum, epochs=cfg.epochs,
                        batch_size=cfg.batch_size, cpu=cfg.cpu, image_size=image_size)
    seg = SemanticSegmentationASPP(dl_studio=dls, max_num_objects=5)
    seg.load_PurdueShapes5MultiObject_dataset(train, test)
    num_classes = int(train[0]["mask_tensor"].shape[0])
    torch.manual_seed(seed)
    model = seg.mUNetASPP(skip_connections=True, depth=cfg.depth, num_classes=num_classes, aspp=aspp,
                          aspp_rates=cfg.rates, head=cfg.head)
    t0 = time.perf_counter()
    options = {k: v for k, v in opts.to_json().items() if k != "recipe"}
    history = seg.run_code_for_training_for_semantic_segmentation(model, recipe=cfg.recipe, **options)
    metrics = seg.run_code_for_testing_semantic_segmentation(model, progress=cfg.progress, grid_images=SAMPLE_COUNT)
    card = seg.card
    _save_samples(seg.samples, folder)
    summary = {"loss": loss, "aspp": aspp, "seed": seed, "order": order, "final_running_loss": _final_running(history),
               "iterations": len(history["loss"]), "train_seconds": time.perf_counter() - t0,
               "miou": metrics["miou"], "mean_dice": metrics["mean_dice"], "miou_ci95": metrics.get("miou_ci95"),
               "magnitudes": magnitudes(history), "recipe": card.recipe, "head": card.model.get("head", "stock")}
    write_json(folder / "summary.json", summary)
    return summary


def prepare_grid(cfg: GridConfig, out: Path):
    """Check every setting, the folder and the data, then write ``grid.json``; return (train, test, image_size).

    Nothing is written before all checks pass, so a typo leaves the folder as it was.
    """
    cfg.validate()
    check_grid_folder(cfg, out)
    train, test, image_size = _datasets(cfg)
    from .data.sources import SYNTHETIC_NOTE, is_synthetic

    synthetic = cfg.dataset == "shapes" and is_synthetic(cfg.data)
    if synthetic:
        print(f"NOTE: {cfg.data} holds SYNTHETIC data: {SYNTHETIC_NOTE}")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "grid.json", dict(asdict(cfg), synthetic=synthetic))
    return train, test, image_size


def run_grid(cfg: GridConfig, out: str | Path) -> List[Path]:
    """Run (or finish) every run of the grid under ``out``, one after another; return the run folders.

    A run whose loss becomes NaN or inf is recorded in ``grid.json`` (``failed``) and the
    grid goes on; any other error stops the grid, and the same command resumes it.
    """
    out = Path(out)
    train, test, image_size = prepare_grid(cfg, out)
    runs = grid_runs(cfg)
    folders = []
    failed: Dict[str, str] = {}
    try:
        for k, (loss, aspp, seed) in enumerate(runs, 1):
            name = run_name(loss, aspp, seed)
            folder = out / "runs" / name
            folders.append(folder)
            if (folder / "summary.json").is_file():
                print(f"[{k}/{len(runs)}] {name}: done, skipped")
                continue
            print(f"[{k}/{len(runs)}] {name}")
            try:
                run_one(cfg, out, loss, aspp, seed, k, train, test, image_size)
            except NonFiniteLossError as exc:
                print(f"[{k}/{len(runs)}] {name} failed ({exc}); recorded as failed, the grid goes on")
                failed[name] = f"{type(exc).__name__}: {exc}"
    finally:
        record_failures(out, failed)
    return folders


def record_failures(out: Path, failed: Dict[str, str]) -> None:
    """Write the runs that failed into ``grid.json`` (``failed``); a run that has since finished leaves it."""
    grid_file = out / "grid.json"
    data = json.loads(grid_file.read_text())
    old = {k: v for k, v in data.get("failed", {}).items()
           if not (out / "runs" / k / "summary.json").is_file() and k not in failed}
    data["failed"] = dict(old, **failed)
    write_json(grid_file, data)


def grid_outcome(cfg: GridConfig, out: str | Path) -> str:
    """One line for the end of a grid, from the run folders and ``grid.json``, whichever executor ran it."""
    out = Path(out)
    finished = sum((out / "runs" / run_name(*spec) / "summary.json").is_file() for spec in grid_runs(cfg))
    failed = sorted(json.loads((out / "grid.json").read_text()).get("failed", {}))
    return f"{finished} of {len(grid_runs(cfg))} runs finished in {out}/runs" + (f"; failed: {', '.join(failed)}" if failed else "")


def grid_runs(cfg: GridConfig) -> list:
    """(loss, aspp, seed) of every run, in the grid's order."""
    return [(loss, aspp, seed) for seed in cfg.seeds for aspp in cfg.aspp for loss in cfg.losses]


def _final_running(history: dict, window: int = 50) -> float:
    return float(np.mean(history["loss"][-window:]))


def _save_samples(samples, folder: Path) -> None:
    """The evaluation's (image, mask, output) triples of the first test images, for the report."""
    import torch

    from .atomic import write_with

    write_with(folder / "samples.npz", lambda p: np.savez_compressed(
        p, indices=np.arange(len(samples)), images=torch.stack([s[0] for s in samples]).numpy().astype(np.uint8),
        masks=torch.stack([s[1] for s in samples]).numpy(), outputs=torch.stack([s[2] for s in samples]).numpy()))
