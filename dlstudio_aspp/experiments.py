"""The experiment grid: every loss x ASPP on/off x seed, one folder per run, resumable.

Layout of ``OUT``::

    OUT/grid.json                       the settings of the grid
    OUT/runs/<loss>__aspp-<on|off>__seed-<s>/
        saved_model, saved_model.json, saved_model.history.json/.csv, saved_model.ckpt,
        saved_model.metrics.json, saved_model.test_grid.png,
        samples.npz                     fixed test images, masks and outputs (for the report)
        summary.json                    written last: the run is done

All runs of a seed start from the same initial weights: the model is built right after
``torch.manual_seed(seed)`` and the ASPP block is created after every stock layer, so the
stock layers are identical whether ASPP is on or off.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np

from .losses import loss_label

PRESETS = {
    # The users' protocol, on the full data. Meant for a GPU.
    "homework": dict(epochs=6, max_iters=None, batch_size=4, lr=1e-4, momentum=0.9, depth=16, seeds=[0, 1, 2],
                     train_subset=None, test_subset=None, log_every=500),
    # About 20 minutes on 2 CPU cores. lr is 10x the homework's so that 150 iterations
    # move every loss visibly (at 1e-4 Dice alone falls by ~0.01 in that budget).
    "quick": dict(epochs=1, max_iters=150, batch_size=4, lr=1e-3, momentum=0.9, depth=8, seeds=[0, 1],
                  train_subset=None, test_subset=200, log_every=50),
    # Seconds: for tests and a first look.
    "smoke": dict(epochs=1, max_iters=4, batch_size=4, lr=1e-4, momentum=0.9, depth=4, seeds=[0, 1],
                  train_subset=None, test_subset=8, log_every=2),
}
DEFAULT_LOSSES = ["mse", "dice", "dice+mse:20", "dice+mse:200"]
SAMPLE_COUNT = 4  # the first test images, kept for the report's qualitative grid


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
    epochs: int = 1
    max_iters: Optional[int] = None
    batch_size: int = 4
    lr: float = 1e-4
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
            raise ValueError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
        values = dict(PRESETS[name], preset=name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def validate(self) -> None:
        from .losses import get_loss

        if self.dataset not in ("shapes", "coco"):
            raise ValueError(f"dataset must be 'shapes' or 'coco', got {self.dataset!r}")
        for spec in self.losses:
            get_loss(spec)
        if not self.seeds or not self.losses or not self.aspp:
            raise ValueError("the grid needs at least one loss, one ASPP setting and one seed")


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


def _datasets(cfg: GridConfig, dls, seg):
    if cfg.dataset == "coco":
        from .data.coco import COCOSegmentationDataset

        train = COCOSegmentationDataset(dl_studio=dls, segmenter=seg, train_or_test="train", root=cfg.data)
        test = COCOSegmentationDataset(dl_studio=dls, segmenter=seg, train_or_test="test", root=cfg.data)
    else:
        train = seg.PurdueShapes5MultiObjectDataset(dl_studio=dls, segmenter=seg, train_or_test="train", dataset_file=cfg.train_file)
        test = seg.PurdueShapes5MultiObjectDataset(dl_studio=dls, segmenter=seg, train_or_test="test", dataset_file=cfg.test_file)
    return train, test


def run_grid(cfg: GridConfig, out: str | Path) -> List[Path]:
    """Run (or finish) every run of the grid under ``out``; return the run folders."""
    import torch

    from .dlstudio_glue import load_dlstudio
    from .segmentation import SemanticSegmentationASPP

    cfg.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    grid_file = out / "grid.json"
    if grid_file.is_file():
        old = json.loads(grid_file.read_text())
        changed = {k for k in ("dataset", "data", "train_file", "test_file", "epochs", "max_iters", "batch_size", "lr",
                               "momentum", "depth", "train_subset", "test_subset", "normalize_masks", "rates")
                   if old.get(k) != asdict(cfg).get(k)}
        if changed:
            raise ValueError(f"{out} holds a grid with other settings ({', '.join(sorted(changed))}); use another folder")
    from .data.sources import SYNTHETIC_NOTE, is_synthetic

    synthetic = cfg.dataset == "shapes" and is_synthetic(cfg.data)
    if synthetic:
        print(f"NOTE: {cfg.data} holds SYNTHETIC data: {SYNTHETIC_NOTE}")
    grid_file.write_text(json.dumps(dict(asdict(cfg), synthetic=synthetic), indent=2))

    DLStudio = load_dlstudio()
    data = cfg.data if cfg.data.endswith("/") else cfg.data + "/"
    probe = DLStudio(dataroot=data, image_size=[64, 64], path_saved_model=str(out / "probe"), momentum=cfg.momentum,
                     learning_rate=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size, use_gpu=not cfg.cpu)
    if cfg.dataset == "coco":
        from .data.coco import read_index

        probe.image_size = [read_index(data)["settings"]["size"]] * 2
    seg0 = SemanticSegmentationASPP(dl_studio=probe, max_num_objects=5)
    train, test = _datasets(cfg, probe, seg0)
    num_classes = int(train[0]["mask_tensor"].shape[0])
    if cfg.train_subset:
        train = torch.utils.data.Subset(train, range(min(cfg.train_subset, len(train))))
    if cfg.test_subset:
        test = torch.utils.data.Subset(test, range(min(cfg.test_subset, len(test))))

    runs = [(loss, aspp, seed) for seed in cfg.seeds for aspp in cfg.aspp for loss in cfg.losses]
    folders = []
    for k, (loss, aspp, seed) in enumerate(runs, 1):
        name = run_name(loss, aspp, seed)
        folder = out / "runs" / name
        folders.append(folder)
        if (folder / "summary.json").is_file():
            print(f"[{k}/{len(runs)}] {name}: done, skipped")
            continue
        print(f"[{k}/{len(runs)}] {name}")
        folder.mkdir(parents=True, exist_ok=True)
        dls = DLStudio(dataroot=data, image_size=list(probe.image_size), path_saved_model=str(folder / "saved_model"),
                       momentum=cfg.momentum, learning_rate=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size,
                       use_gpu=not cfg.cpu)
        seg = SemanticSegmentationASPP(dl_studio=dls, max_num_objects=5)
        seg.load_PurdueShapes5MultiObject_dataset(train, test)
        torch.manual_seed(seed)
        model = seg.mUNetASPP(skip_connections=True, depth=cfg.depth, num_classes=num_classes, aspp=aspp,
                              aspp_rates=cfg.rates)
        t0 = time.perf_counter()
        resume = (folder / "saved_model.ckpt").is_file()
        history = seg.run_code_for_training_for_semantic_segmentation(
            model, loss=loss, seed=seed, max_iters=cfg.max_iters, log_every=cfg.log_every, progress=cfg.progress,
            resume=resume, amp=cfg.amp, normalize_masks=cfg.normalize_masks, perf_file=str(folder / "performance_numbers.txt"))
        metrics = seg.run_code_for_testing_semantic_segmentation(model, progress=cfg.progress, grid_images=SAMPLE_COUNT)
        _save_samples(seg.samples, folder)
        summary = {"loss": loss, "aspp": aspp, "seed": seed, "order": k, "final_running_loss": _final_running(history),
                   "iterations": len(history["loss"]), "train_seconds": time.perf_counter() - t0,
                   "miou": metrics["miou"], "mean_dice": metrics["mean_dice"], "magnitudes": magnitudes(history)}
        tmp = folder / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2))
        tmp.replace(folder / "summary.json")
    return folders


def _final_running(history: dict, window: int = 50) -> float:
    return float(np.mean(history["loss"][-window:]))


def _save_samples(samples, folder: Path) -> None:
    """The evaluation's (image, mask, output) triples of the first test images, for the report."""
    import torch

    np.savez_compressed(folder / "samples.npz", indices=np.arange(len(samples)),
                        images=torch.stack([s[0] for s in samples]).numpy().astype(np.uint8),
                        masks=torch.stack([s[1] for s in samples]).numpy(),
                        outputs=torch.stack([s[2] for s in samples]).numpy())
