"""The one path that trains and scores a run: :func:`train_and_score`.

``dlstudio-aspp run``, the serial grid, the Ray grid and
:class:`~dlstudio_aspp.segmentation.SemanticSegmentationASPP` all go through the
functions here: :func:`build_model` (the spec's network, seeded), :func:`train_run` (train,
then save the weights with their card) and :func:`score_run` (the whole test set, the
metrics file and the test grid). :func:`train_and_score` chains them for a run folder
and writes its ``summary.json`` last. Nothing here reads the command line or calls back
into the segmenter.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from . import crash
from .accel import pick_device, quiet_worker
from .atomic import write_json, write_with
from .card import RunCard
from .run_files import RunFiles
from .dlstudio_glue import default_num_workers
from .errors import UserError
from .evaluation import evaluate, save_grid
from .floors import floors as compute_floors
from .losses import get_loss
from .metrics import format_table
from .provenance import provenance
from .spec import RunSpec, show_value
from .training import train, training_split

#: Test images kept with a run (``samples.npz``) for the reports' qualitative grids.
SAMPLE_COUNT = 4


def device_for(spec: RunSpec) -> torch.device:
    return pick_device(spec.cpu)


def build_model(spec: RunSpec, num_classes: int, image_size=(64, 64)):
    """The spec's mUNetASPP for images of ``image_size`` (H, W; it decides ``--rates auto``), its
    initial weights fixed by ``spec.seed`` (0 when unset).

    The ASPP block is created after every stock layer, so runs of one seed start from the
    same stock-layer weights whether ASPP is on or off.
    """
    from .model import mUNetASPP

    torch.manual_seed(spec.seed or 0)
    return mUNetASPP(skip_connections=True, depth=spec.depth, num_classes=num_classes, aspp=spec.aspp,
                     aspp_rates=spec.for_images(image_size).rates, aspp_dropout=spec.aspp_dropout, head=spec.head)


def _output_channels(net) -> Optional[int]:
    head = getattr(net, "conv_out", None)
    if isinstance(head, torch.nn.Sequential):
        head = head[-1]
    return getattr(head, "out_channels", None)


def train_run(spec: RunSpec, card: RunCard, net, loader, device, *, loss_fn=None, resume: bool = False, perf_file=None,
              command: Optional[str] = None, split: Optional[tuple] = None):
    """Train ``net`` on ``loader`` under ``spec``; save the weights and ``card``; return (trained net, history).

    ``command``: what made the run, for the card's provenance (default: this process's command line)."""
    channels = _output_channels(net)
    if channels is not None and channels != len(card.mask_values):
        raise UserError(f"the model has {channels} output channels but the data has {len(card.mask_values)} classes; "
                        f"build it with num_classes={len(card.mask_values)}")
    card.folder.mkdir(parents=True, exist_ok=True)
    from .data.open import input_stats

    card.provenance = provenance(command, device)
    split = split or training_split(loader.dataset, spec)
    card.mean, card.std = input_stats(spec.normalization(), split[0])
    trained, history = train(net, loader, spec, card, device, loss_fn=loss_fn, resume=resume, perf_file=perf_file,
                             split=split)
    card.iterations, card.epochs = len(history["loss"]), history["epochs"]
    if history.get("compile_fallback"):  # --compile was asked, and the step ran eagerly after this failure
        card.provenance["compile_fallback"] = history["compile_fallback"]
    card.seconds["train"] = round(history["seconds"], 2)
    card.save_weights(trained)
    return trained, history


def score_run(card: RunCard, net, dataset, device, *, grid_images: int = SAMPLE_COUNT, progress: bool = True,
              batch_size: int = 32, workers: Optional[int] = None, grid_path=None, compile: bool = False,
              floors: Optional[dict] = None) -> dict:
    """Score ``net`` on every image of ``dataset`` with the card's input scaling and thresholds.

    Writes the metrics file and a test grid of the first ``grid_images`` images (at
    ``grid_path``, default the card's), prints the per-class table and returns the metrics;
    ``metrics['samples']`` holds the grid's (image, mask, output) triples. ``floors``
    (:func:`dlstudio_aspp.floors.floors` of the same test set) is kept in the metrics and printed.
    """
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                         num_workers=default_num_workers(workers), worker_init_fn=quiet_worker,
                                         pin_memory=torch.device(device).type == "cuda")
    t0 = time.perf_counter()
    metrics = evaluate(net.to(device), loader, card, device, keep=grid_images, progress=progress, compile=compile)
    samples = metrics.pop("samples", [])
    write_with(card.files.image_counts_file, lambda f: np.save(f, metrics.pop("image_counts")))
    if samples:
        path = grid_path or card.files.test_grid
        metrics["grid"] = str(save_grid(samples, card.thresholds(), card.class_names, path,
                                        title=f"{card.weights.name}: mIoU {metrics['miou']:.3f}"))
    metrics["model"] = card.model
    if floors is not None:
        metrics["floors"] = floors
    write_json(card.files.metrics_file, metrics)
    if card.files.file.is_file() and card.weights_sha256:  # the card of these weights gains the test time
        card.seconds["test"] = round(time.perf_counter() - t0, 2)
        card.save()
    print(format_table(metrics))
    if floors is not None:
        print("floors (predictors that never look at the image): " + "; ".join(
            f"{n}: every pixel {a:.3f}, fixed mask {f:.3f}" for n, a, f in zip(card.class_names, floors["all"], floors["fixed"])))
    print(f"scored {metrics['num_images']} test images; metrics in {card.files.metrics_file.name}")
    metrics["samples"] = samples
    return metrics


@dataclass
class RunPlan:
    """A run resolved once from its spec, in order: the data (opened), the training split, the budget, the
    concrete ASPP rates, the model (built once, seeded), the loss, the device and the card. ``run`` prints it
    (``--dry-run``: and stops); :func:`execute` trains and scores exactly it."""

    spec: RunSpec
    folder: Path
    train_set: Any
    test_set: Any
    split: tuple  # (training images, validation images or None)
    epochs: int
    iterations: int
    image_size: tuple
    net: torch.nn.Module
    loss_fn: Any
    card: RunCard
    device: torch.device
    resume: bool
    load_seconds: float

    def describe(self) -> str:
        """The model that trains (parameters, GFLOPs), the budget and the settings, in a few lines."""
        from .model import describe

        spec, (h, w) = self.spec, self.image_size
        with torch.random.fork_rng(devices=[]):  # measuring draws random images: the run's generators stay as they are
            model = describe(self.net, self.image_size)
        return (model + f"\n{self.iterations} iterations ({self.epochs} epoch{'s' * (self.epochs > 1)} of "
                f"{len(self.split[0])} images at batch {spec.batch_size}); " + spec.summary_line()
                + f"; augmentation {spec.augment_level()}" + (f", copy-paste {spec.copy_paste:g}" if spec.copy_paste else "")
                + f", input normalisation {spec.normalization()}"
                + (f"; ASPP rates {show_value('rates', spec.rates)} (bottleneck {h // 8}x{w // 8})"
                   + (f", dropout {spec.aspp_dropout:g}" if spec.aspp_dropout else "") if spec.aspp else ""))


def plan_run(spec: RunSpec, folder, *, data=None, resume: Optional[bool] = None, device=None,
             load_seconds: Optional[float] = None) -> RunPlan:
    """Resolve ``spec`` into the :class:`RunPlan` of a run in ``folder``; nothing is written.

    Args:
        spec: every option of the run (validated here, unless it was).
        data: ``(train, test)`` datasets already open (a grid opens them once); default: from the spec.
        resume: continue from the folder's checkpoint; None resumes when there is one (the grid's rule).
        device: default: CUDA when there is one and ``spec.cpu`` is off.
        load_seconds: how long opening ``data`` took, for the card (measured here when it opens the data).
    """
    from .data.open import dataset_shape, open_datasets

    spec.validate()
    t0 = time.perf_counter()
    train_set, test_set = data if data is not None else open_datasets(spec)
    load_seconds = time.perf_counter() - t0 if load_seconds is None else load_seconds
    num_classes, image_size = dataset_shape(train_set)
    spec = spec.for_images(image_size)
    split = training_split(train_set, spec)
    epochs, iterations = spec.iterations(len(split[0]))
    net = build_model(spec, num_classes, image_size)
    loss_fn = get_loss(spec.loss)
    card = RunCard.for_training(RunFiles.at(folder).weights, net, train_set, image_size, spec, loss_fn)
    card.seconds["load"] = round(load_seconds, 2)
    return RunPlan(spec, Path(folder), train_set, test_set, split, epochs, iterations, tuple(image_size), net, loss_fn,
                   card, torch.device(device) if device is not None else device_for(spec),
                   card.files.checkpoint.is_file() if resume is None else resume, load_seconds)


def execute(plan: RunPlan, command: Optional[str] = None) -> dict:
    """Train and score the run ``plan`` describes; return its summary (``summary.json``, written last).

    ``command``: the command that made the run, for the card (default: this process's command line)."""
    spec, card = plan.spec, plan.card
    if spec.compile:  # a fresh compile cache per run: a grid's variants would pile up past dynamo's recompile limit
        torch._dynamo.reset()
    loader = torch.utils.data.DataLoader(plan.train_set, batch_size=spec.batch_size, shuffle=True,
                                         num_workers=default_num_workers(spec.workers), worker_init_fn=quiet_worker)
    t0 = time.perf_counter()
    trained, history = train_run(spec, card, plan.net, loader, plan.device, loss_fn=plan.loss_fn, resume=plan.resume,
                                 perf_file=card.files.perf_file, command=command, split=plan.split)
    metrics = score_run(card, trained, plan.test_set, plan.device, progress=spec.progress, workers=spec.workers,
                        compile=spec.compile, floors=floors_for(plan.train_set, plan.test_set))
    save_samples(metrics.pop("samples"), card)
    if spec.tensorboard:
        log_test_metrics(card, metrics, len(history["loss"]))
    # the run's results only: its options are the card's spec (the one copy), which the grid report reads
    summary = {"iterations": len(history["loss"]),
               "final_running_loss": float(np.mean(history["loss"][-50:])), "train_seconds": time.perf_counter() - t0,
               "miou": metrics["miou"], "mean_dice": metrics["mean_dice"], "miou_ci95": metrics.get("miou_ci95"),
               "magnitudes": magnitudes(history, spec.loss)}
    crash.point("run-weights-saved")  # the weights and metrics are written; summary.json marks the run finished
    write_json(card.files.summary_file, summary)
    return summary


def train_and_score(spec: RunSpec, folder, *, data=None, resume: Optional[bool] = None, device=None,
                    load_seconds: Optional[float] = None, command: Optional[str] = None) -> dict:
    """Train and score one run in ``folder`` (:func:`plan_run`, then :func:`execute`); return its summary."""
    return execute(plan_run(spec, folder, data=data, resume=resume, device=device, load_seconds=load_seconds), command)


def floors_for(train_set, test_set) -> Optional[dict]:
    """The floors (:mod:`dlstudio_aspp.floors`) for a test set whose dataset kind is scored against them
    (COCO); None otherwise (PurdueShapes, whose objects move about the image: no fixed mask is a floor)."""
    from .registry import DATASETS, dataset_kind

    if train_set is None or not DATASETS[dataset_kind(test_set)].floors:
        return None
    return compute_floors(train_set, test_set)


def log_test_metrics(card: RunCard, metrics: dict, step: int) -> None:
    """The test mIoU, mean Dice and each class's IoU into the run's TensorBoard log."""
    from .hooks import open_board

    board = open_board(card)
    try:
        board.add_scalar("test/miou", metrics["miou"], step)
        board.add_scalar("test/mean_dice", metrics["mean_dice"], step)
        for name, iou in zip(metrics["class_names"], metrics["iou"]):
            board.add_scalar(f"test/iou/{name}", iou, step)
    finally:
        board.close()


def save_samples(samples, card: RunCard) -> None:
    """The (image, mask, output) triples of the first test images, for the reports."""
    if not samples:
        return
    write_with(card.files.samples_file, lambda p: np.savez_compressed(
        p, indices=np.arange(len(samples)), images=torch.stack([s[0] for s in samples]).numpy().astype(np.uint8),
        masks=torch.stack([s[1] for s in samples]).numpy(), outputs=torch.stack([s[2] for s in samples]).numpy()))


def magnitudes(history: dict, loss: str, window: int = 20) -> dict:
    """Mean MSE and Dice terms over the first and last ``window`` iterations of a run of ``loss``, and their ratios."""
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
    out["auto_scale"] = loss.endswith("auto")
    return out
