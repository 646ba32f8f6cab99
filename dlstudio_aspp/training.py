"""The training loop behind ``SemanticSegmentationASPP.run_code_for_training_for_semantic_segmentation``.

With no options it is stock DLStudio's loop: SGD with DLStudio's ``learning_rate`` and
``momentum``, MSE, the same printed lines, ``performance_numbers_<epochs>.txt`` with the
average loss every 500 iterations, and the weights saved at ``path_saved_model``. On top:
any loss, a per-iteration history (JSON and CSV next to the model), a progress bar,
seeding, AMP on CUDA, atomic checkpoints with exact resume, a stop on NaN/inf, and
short-run options.
"""
from __future__ import annotations

import copy
import csv
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import numpy as np
import torch

from .dlstudio_glue import default_num_workers
from .losses import get_loss


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; training stopped and the last good checkpoint was kept."""


@dataclass
class TrainOptions:
    """Options of the training override; the defaults reproduce stock DLStudio.

    Attributes:
        loss: a name ('mse', 'dice', 'dice+mse:20', 'dice+mse:auto') or a callable.
        seed: seeds torch, numpy and random, and fixes the data order per epoch, so
            runs (and resumed runs) are exactly reproducible on CPU. None: stock order.
        epochs: overrides DLStudio's ``epochs``.
        max_iters: stop after this many iterations in all.
        subset: train on the first ``subset`` images only.
        log_every: iterations per printed line and per ``performance_numbers`` entry (stock: 500).
        progress: show a tqdm progress bar.
        checkpoint_every: iterations between checkpoints (0: none).
        resume: continue from ``<path_saved_model>.ckpt`` when it exists.
        amp: mixed precision (float16 autocast + GradScaler), CUDA only.
        normalize_masks: train against {0, 1} masks instead of DLStudio's 0/50(k+1).
        perf_file: where to write the performance numbers (stock: the working directory).
    """

    loss: Union[str, Callable, None] = "mse"
    seed: Optional[int] = None
    epochs: Optional[int] = None
    max_iters: Optional[int] = None
    subset: Optional[int] = None
    log_every: int = 500
    progress: bool = True
    checkpoint_every: int = 500
    resume: bool = False
    amp: bool = False
    normalize_masks: bool = False
    perf_file: Optional[str] = None

    def validate(self) -> None:
        for name in ("epochs", "max_iters", "subset"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive int or None, got {v!r}")
        if self.log_every < 1 or self.checkpoint_every < 0:
            raise ValueError(f"log_every must be >= 1 and checkpoint_every >= 0, got {self.log_every}, {self.checkpoint_every}")

    def to_json(self) -> Dict[str, Any]:
        d = asdict(self)
        d["loss"] = d["loss"] if isinstance(d["loss"], (str, type(None))) else repr(d["loss"])
        return d


def _sorted_labels(dataset) -> list:
    """(name, mask value) pairs sorted by value, from ``label_map`` (of a Subset's dataset too)."""
    label_map = getattr(dataset, "label_map", None) or getattr(getattr(dataset, "dataset", None), "label_map", None)
    return sorted((label_map or {}).items(), key=lambda kv: kv[1])


def mask_values(dataset) -> list:
    """Channel k's mask value; DLStudio's 50*(k+1) when the dataset has no ``label_map``."""
    return [int(v) for _, v in _sorted_labels(dataset)] or [50 * (k + 1) for k in range(5)]


def class_names(dataset) -> list:
    return [k for k, _ in _sorted_labels(dataset)]


def prepare_target(mask: torch.Tensor, normalize: bool) -> torch.Tensor:
    """(B, C, H, W) uint8 masks -> float targets: stock values, or {0, 1} when ``normalize``."""
    return (mask > 0).float() if normalize else mask.float()


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


class _EpochSampler(torch.utils.data.Sampler):
    """A fixed permutation per (seed, epoch), starting at ``start``: exact resume mid-epoch."""

    def __init__(self, n: int, seed: int, epoch: int, start: int = 0) -> None:
        g = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
        self.order = torch.randperm(n, generator=g)[start:].tolist()

    def __iter__(self):
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_history(history: dict, stem: Path) -> None:
    tmp = stem.with_name(stem.name + ".history.json.tmp")
    tmp.write_text(json.dumps(history))
    os.replace(tmp, stem.with_name(stem.name + ".history.json"))
    keys = ["iteration", "epoch", "loss"] + sorted(history["components"])
    tmp = stem.with_name(stem.name + ".history.csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(keys)
        cols = [history["iteration"], history["epoch"], history["loss"]] + [history["components"][k] for k in keys[3:]]
        w.writerows(zip(*cols))
    os.replace(tmp, stem.with_name(stem.name + ".history.csv"))


def _loss_title(loss) -> str:
    return {"MSELoss": "MSE", "DiceLoss": "Dice", "DiceMSELoss": "Dice+MSE"}.get(type(loss).__name__, type(loss).__name__)


def train(segmenter, net: torch.nn.Module, opts: TrainOptions):
    """Train a copy of ``net`` (as stock does); return ``(trained_net, history)``."""
    opts.validate()
    dls = segmenter.dl_studio
    device = getattr(dls, "device", torch.device("cpu"))
    use_amp = bool(opts.amp) and device.type == "cuda"
    if opts.amp and not use_amp:
        warnings.warn("amp=True needs CUDA; training in float32 on CPU", RuntimeWarning)
    epochs = opts.epochs or dls.epochs
    loss_fn = get_loss(opts.loss)
    if isinstance(loss_fn, torch.nn.Module):
        loss_fn.train()
    if opts.seed is not None:
        import random

        random.seed(opts.seed)
        np.random.seed(opts.seed)
        torch.manual_seed(opts.seed)

    loader = segmenter.train_dataloader
    dataset = loader.dataset
    if opts.subset is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(opts.subset, len(dataset))))
    workers = default_num_workers(loader.num_workers)

    def epoch_loader(epoch: int, start_batch: int):
        if opts.seed is None:
            if dataset is loader.dataset and start_batch == 0:
                return loader
            return torch.utils.data.DataLoader(dataset, batch_size=dls.batch_size, shuffle=True, num_workers=workers)
        sampler = _EpochSampler(len(dataset), opts.seed, epoch, start_batch * dls.batch_size)
        # Its own generator: making the iterator must not draw from the global RNG,
        # or a resumed run's dropout would drift from the uninterrupted one.
        gen = torch.Generator().manual_seed(_epoch_seed(opts.seed, epoch))
        return torch.utils.data.DataLoader(dataset, batch_size=dls.batch_size, sampler=sampler, num_workers=workers,
                                           generator=gen)

    net = copy.deepcopy(net).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=dls.learning_rate, momentum=dls.momentum)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    model_path = Path(dls.path_saved_model)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    ckpt_path = model_path.with_name(model_path.name + ".ckpt")
    history: Dict[str, Any] = {"iteration": [], "epoch": [], "loss": [], "components": {}, "running": [],
                               "options": opts.to_json(), "loss_name": _loss_title(loss_fn)}
    start_epoch, start_batch, it = 0, 0, 0
    if opts.resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location=device, weights_only=True)
        net.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        history, it, start_epoch, start_batch = ck["history"], ck["iteration"], ck["epoch"], ck["batch"]
        torch.set_rng_state(ck["rng"])
        if ck.get("loss_state") and hasattr(loss_fn, "load_extra_state"):
            loss_fn.load_extra_state(ck["loss_state"])
        if opts.seed is None:
            warnings.warn("resuming without a seed: the data order after the resume differs from an uninterrupted run")
        print(f"resumed from {ckpt_path} at iteration {it} (epoch {start_epoch + 1}, batch {start_batch})")

    def checkpoint(epoch: int, next_batch: int) -> None:
        _atomic_save({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                      "iteration": it, "epoch": epoch, "batch": next_batch, "history": history,
                      "rng": torch.get_rng_state(),
                      "loss_state": loss_fn.extra_state() if hasattr(loss_fn, "extra_state") else None}, ckpt_path)
        _write_history(history, model_path)

    perf_path = Path(opts.perf_file or f"performance_numbers_{epochs}.txt")
    perf_mode = "a" if opts.resume and it > 0 and perf_path.exists() else "w"
    total = epochs * len(epoch_loader(0, 0)) if opts.max_iters is None else min(opts.max_iters, epochs * len(epoch_loader(0, 0)))
    bar = None
    if opts.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=min(it, total), desc=f"train {history['loss_name']}", unit="it",
                   mininterval=1.0, dynamic_ncols=True)
    say = bar.write if bar is not None else print
    title = history["loss_name"]
    start_time = time.perf_counter()
    done = opts.max_iters is not None and it >= opts.max_iters
    position = (start_epoch, start_batch)  # where the next iteration starts
    net.train()
    with open(perf_path, perf_mode) as perf:
        for epoch in range(start_epoch, epochs):
            if done:
                break
            say("")
            running = 0.0
            first = start_batch if epoch == start_epoch else 0
            for i, data in enumerate(epoch_loader(epoch, first), start=first):
                im = data["image"].to(device)
                target = prepare_target(data["mask_tensor"], opts.normalize_masks).to(device)
                optimizer.zero_grad()
                with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                    output = net(im)
                loss = loss_fn(output.float(), target)
                value = loss.item()
                if not np.isfinite(value):
                    kept = f"the last good checkpoint is {ckpt_path}" if ckpt_path.is_file() else "no checkpoint was written yet"
                    raise NonFiniteLossError(f"{title} loss became {value} at iteration {it + 1} "
                                             f"(epoch {epoch + 1}, batch {i + 1}); {kept}. Lower the learning rate or check the data.")
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                it += 1
                running += value
                history["iteration"].append(it)
                history["epoch"].append(epoch + 1)
                history["loss"].append(value)
                for k, v in getattr(loss_fn, "last_components", {}).items():
                    history["components"].setdefault(k, []).append(v)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{value:.4g}", refresh=False)
                if i % opts.log_every == opts.log_every - 1:
                    avg = running / float(opts.log_every)
                    elapsed = time.perf_counter() - start_time
                    say("[epoch=%d/%d, iter=%4d  elapsed_time=%3d secs]   %s loss: %.3f" % (epoch + 1, epochs, i + 1, elapsed, title, avg))
                    perf.write("%.3f\n" % avg)
                    perf.flush()
                    history["running"].append([it, avg])
                    running = 0.0
                position = (epoch, i + 1)
                if opts.checkpoint_every and it % opts.checkpoint_every == 0:
                    checkpoint(*position)
                if opts.max_iters is not None and it >= opts.max_iters:
                    done = True
                    break
            else:
                position = (epoch + 1, 0)
    if bar is not None:
        bar.close()
    history["seconds"] = time.perf_counter() - start_time
    if hasattr(loss_fn, "extra_state"):
        history["dice_scale"] = loss_fn.dice_scale
    print("\nFinished Training\n")
    segmenter.save_model(net)
    _write_history(history, model_path)
    if opts.checkpoint_every:
        checkpoint(*position)
    return net, history
