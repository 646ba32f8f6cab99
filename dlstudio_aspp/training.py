"""The training loop behind ``SemanticSegmentationASPP.run_code_for_training_for_semantic_segmentation``.

:func:`train` takes plain values (a network, a DataLoader, :class:`TrainOptions`, a
:class:`~dlstudio_aspp.card.RunCard`) and returns the trained network and its history;
it never calls back into the segmenter. Saving the final weights is the caller's job.

With the ``'stock'`` recipe it is stock DLStudio's loop: SGD with DLStudio's
``learning_rate`` and ``momentum``, MSE on the 0/50(k+1) masks, the same printed lines,
and the average loss every 500 iterations in ``performance_numbers_<epochs>.txt``. On
top: any loss, recipes (optimizer, schedule, warm-up, clipping, input scaling), a
per-iteration history, a progress bar, seeding, AMP on CUDA, atomic checkpoints with
exact resume, and a stop on NaN/inf.
"""
from __future__ import annotations

import copy
import csv
import io
import math
import time
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Dict, Optional, Union

import numpy as np
import torch

from .atomic import torch_save, write_json, write_text
from .card import RunCard
from .dlstudio_glue import default_num_workers
from .errors import MissingFileError, NonFiniteLossError, UserError
from .losses import get_loss

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")


@dataclass
class TrainOptions:
    """Options of the training loop; the defaults are the ``'stock'`` recipe.

    Attributes:
        loss: a name (see :func:`dlstudio_aspp.losses.get_loss`) or a callable.
        seed: seeds torch, numpy and random, and fixes the data order per epoch, so
            runs (and resumed runs) are exactly reproducible on CPU. None: stock order.
        epochs: number of epochs (None: DLStudio's ``epochs``).
        max_iters: stop after this many iterations in all.
        subset: train on the first ``subset`` images only.
        log_every: iterations per printed line and per ``performance_numbers`` entry (stock: 500).
        progress: show a tqdm progress bar.
        checkpoint_every: iterations between checkpoints (0: only at the end).
        resume: continue from the run's ``.ckpt``; it must exist and have the same options.
        amp: mixed precision (float16 autocast + GradScaler), CUDA only.
        normalize_masks: train a raw-output loss against {0, 1} instead of 0/50(k+1).
        perf_file: where to write the performance numbers (stock: the working directory).
        optimizer: 'sgd' (stock), 'adam' or 'adamw'.
        lr: learning rate (None: DLStudio's ``learning_rate``); the peak for 'onecycle'.
        momentum: SGD momentum (None: DLStudio's ``momentum``).
        weight_decay: L2 (sgd, adam) or decoupled (adamw) weight decay.
        schedule: 'constant' (stock), 'cosine' (to 0) or 'onecycle'.
        warmup: iterations of linear warm-up (the rising part of 'onecycle').
        grad_clip: clip the gradients' global norm to this (None: no clipping).
        input_scale: factor on DLStudio's 0..255 images (1/255 gives [0, 1]).
        recipe: the recipe these options came from (recorded in the run card).
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
    optimizer: str = "sgd"
    lr: Optional[float] = None
    momentum: Optional[float] = None
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup: int = 0
    grad_clip: Optional[float] = None
    input_scale: float = 1.0
    recipe: str = "custom"

    #: Options that do not change the trained weights; everything else must match on resume.
    NOT_RESULT = ("log_every", "progress", "checkpoint_every", "resume", "perf_file", "recipe")

    def validate(self) -> None:
        for name in ("epochs", "max_iters", "subset"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise UserError(f"{name} must be a positive int or None, got {v!r}")
        if not isinstance(self.log_every, int) or self.log_every < 1:
            raise UserError(f"log_every must be an int >= 1, got {self.log_every!r}")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            raise UserError(f"checkpoint_every must be an int >= 0 (0: only at the end), got {self.checkpoint_every!r}")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        for name in ("lr", "momentum", "weight_decay", "input_scale", "grad_clip"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0):
                raise UserError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.lr is not None and self.lr == 0:
            raise UserError("lr must be > 0")
        if self.input_scale == 0:
            raise UserError("input_scale must be > 0 (1 for stock's 0..255 images, 1/255 for [0, 1])")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise UserError(f"warmup must be an int >= 0 (iterations), got {self.warmup!r}")

    def to_json(self) -> Dict[str, Any]:
        d = asdict(self)
        d["loss"] = _loss_spec(self.loss)
        return d

    def result_options(self) -> Dict[str, Any]:
        """The options that change the trained weights (compared on resume)."""
        return {k: v for k, v in self.to_json().items() if k not in self.NOT_RESULT}


#: Named recipes: plain TrainOptions fields, mixed in before the caller's own options.
RECIPES: Dict[str, Dict[str, Any]] = {
    # Stock DLStudio: SGD with DLStudio's lr and momentum, MSE on 0/50(k+1), 0..255 input.
    "stock": dict(),
    # Tuned on the real PurdueShapes5MultiObject data with the dense head (see
    # benchmarks/RESULTS.md): AdamW, one-cycle, BCE + batch soft Dice on logits, [0, 1]
    # input, {0, 1} targets (also for MSE, Dice and Dice+MSE under this recipe).
    "modern": dict(loss="bce+dice", optimizer="adamw", lr=1e-3, weight_decay=1e-4, schedule="onecycle", warmup=None,
                   grad_clip=1.0, input_scale=1 / 255, normalize_masks=True),
}


#: The learning rate when neither the recipe nor the caller sets one and there is no DLStudio
#: instance to read it from (the command line, the grid): the homework's 1e-4.
STOCK_LR = 1e-4


def recipe_options(recipe: str = "stock", **overrides) -> TrainOptions:
    """``TrainOptions`` of a named recipe, with ``overrides`` on top (None values ignored).

    ``lr`` stays None when neither sets it (the segmenter then takes DLStudio's; callers
    without DLStudio use :data:`STOCK_LR`)."""
    if recipe not in RECIPES:
        raise UserError(f"unknown recipe {recipe!r}; valid: {', '.join(RECIPES)}")
    values = {k: v for k, v in RECIPES[recipe].items() if v is not None}
    values.update({k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in fields(TrainOptions)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise TypeError(f"unknown training option(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    return TrainOptions(**dict(values, recipe=recipe))


def output_kind(loss_fn) -> str:
    """'logits' for a loss on logits, else 'raw': how the run card reads the output."""
    return "logits" if getattr(loss_fn, "on_logits", False) else "raw"


def _loss_spec(loss) -> Optional[str]:
    if loss is None or isinstance(loss, str):
        return loss
    return getattr(loss, "__qualname__", type(loss).__qualname__)


def _loss_title(loss) -> str:
    if isinstance(loss, torch.nn.Module) and hasattr(loss, "bce_weight"):
        return {(True, True): "BCE+Dice", (True, False): "BCE", (False, True): "sigmoid Dice"}[(loss.bce_weight > 0, loss.dice_weight > 0)]
    return {"MSELoss": "MSE", "DiceLoss": "Dice", "DiceMSELoss": "Dice+MSE"}.get(type(loss).__name__, type(loss).__name__)


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


def make_optimizer(net: torch.nn.Module, opts: TrainOptions) -> torch.optim.Optimizer:
    if opts.optimizer == "sgd":
        return torch.optim.SGD(net.parameters(), lr=opts.lr, momentum=opts.momentum or 0.0, weight_decay=opts.weight_decay)
    cls = torch.optim.Adam if opts.optimizer == "adam" else torch.optim.AdamW
    return cls(net.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)


def make_scheduler(optimizer, opts: TrainOptions, total: int):
    """The learning-rate schedule over ``total`` iterations; None for stock's constant rate."""
    warm = min(opts.warmup, max(total - 1, 0))
    if opts.schedule == "onecycle" and total >= 4:
        # OneCycleLR needs at least one step up and one down: pct_start in [2/total, 1 - 2/total].
        pct = warm / total if warm else 0.1
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=opts.lr, total_steps=total,
                                                   pct_start=min(max(pct, 2 / total), 1 - 2 / total),
                                                   cycle_momentum=opts.optimizer == "sgd")
    if opts.schedule == "constant" and not warm:
        return None

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if opts.schedule == "cosine":
            t = (step - warm) / max(total - warm, 1)
            return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def history_csv(history: dict) -> str:
    keys = ["iteration", "epoch", "loss", "lr"] + sorted(history["components"])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(keys)
    cols = [history["iteration"], history["epoch"], history["loss"], history["lr"]] + [history["components"][k] for k in keys[4:]]
    w.writerows(zip(*cols))
    return buf.getvalue()


def write_history(history: dict, card: RunCard) -> None:
    write_json(card.history_json, history, indent=None)
    write_text(card.history_csv, history_csv(history))


class _Run:
    """The mutable state of one training run: network, optimizer, schedule, position, history."""

    def __init__(self, net, opts: TrainOptions, card: RunCard, device, total: int, loss_fn) -> None:
        self.net, self.opts, self.card, self.device, self.loss_fn = net, opts, card, device, loss_fn
        self.use_amp = bool(opts.amp) and device.type == "cuda"
        self.optimizer = make_optimizer(net, opts)
        self.scheduler = make_scheduler(self.optimizer, opts, total)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.it, self.epoch, self.batch = 0, 0, 0
        self.own_checkpoint = False  # a checkpoint of *this* run exists (written or resumed from)
        self.history: Dict[str, Any] = {"iteration": [], "epoch": [], "loss": [], "lr": [], "components": {}, "running": [],
                                        "options": opts.to_json(), "loss_name": _loss_title(loss_fn)}

    def save_checkpoint(self) -> None:
        """Weights, optimizer, schedule, position, RNG, options and history, atomically."""
        torch_save({"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                    "scaler": self.scaler.state_dict(), "iteration": self.it, "epoch": self.epoch, "batch": self.batch,
                    "history": self.history, "rng": torch.get_rng_state(), "options": self.opts.result_options(),
                    "card": self.card.to_json(),
                    "loss_state": self.loss_fn.extra_state() if hasattr(self.loss_fn, "extra_state") else None},
                   self.card.checkpoint)
        write_history(self.history, self.card)
        self.own_checkpoint = True

    def resume(self) -> None:
        path = self.card.checkpoint
        if not path.is_file():
            raise MissingFileError(f"cannot resume: there is no checkpoint at {path}; run without resume to start afresh")
        try:
            ck = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as exc:  # truncated or foreign file
            raise UserError(f"cannot resume: {path} is not a readable checkpoint ({type(exc).__name__}); delete it to start afresh") from None
        saved, now = dict(ck.get("options", {})), self.opts.result_options()
        saved_model, now_model = (ck.get("card") or {}).get("model", {}), self.card.model
        saved.update({f"model.{k}": v for k, v in saved_model.items()})
        now.update({f"model.{k}": v for k, v in now_model.items()})
        differ = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        if differ:
            pairs = ", ".join(f"{k}: checkpoint {saved.get(k)!r}, now {now.get(k)!r}" for k in differ)
            raise UserError(f"cannot resume {path}: its run had other options ({pairs}); use the same options or another folder")
        self.net.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        if self.scheduler is not None and ck.get("scheduler"):
            self.scheduler.load_state_dict(ck["scheduler"])
        self.scaler.load_state_dict(ck["scaler"])
        self.history, self.it, self.epoch, self.batch = ck["history"], ck["iteration"], ck["epoch"], ck["batch"]
        torch.set_rng_state(ck["rng"])
        if ck.get("loss_state") and hasattr(self.loss_fn, "load_extra_state"):
            self.loss_fn.load_extra_state(ck["loss_state"])
        self.own_checkpoint = True
        if self.opts.seed is None:
            warnings.warn("resuming without a seed: the data order after the resume differs from an uninterrupted run")
        print(f"resumed from {path} at iteration {self.it} (epoch {self.epoch + 1}, batch {self.batch})")

    def step(self, data) -> float:
        """One optimisation step on a batch; returns the loss value."""
        im = self.card.prepare_input(data["image"].to(self.device))
        target = self.card.target(data["mask_tensor"]).to(self.device)
        self.optimizer.zero_grad()
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
            output = self.net(im)
        loss = self.loss_fn(output.float(), target)
        if not (torch.is_tensor(loss) and loss.dim() == 0):
            shape = tuple(loss.shape) if torch.is_tensor(loss) else type(loss).__name__
            raise UserError(f"the loss must return a scalar tensor (0-dim, with a gradient), got {shape}; "
                            "reduce it with .mean() and do not call .item()")
        value = loss.item()
        if not math.isfinite(value):
            kept = (f"the last good checkpoint is {self.card.checkpoint}" if self.own_checkpoint
                    else "this run wrote no checkpoint yet")
            raise NonFiniteLossError(f"{self.history['loss_name']} loss became {value} at iteration {self.it + 1} "
                                     f"(epoch {self.epoch + 1}, batch {self.batch + 1}); {kept}. "
                                     "Lower the learning rate or check the data.")
        self.scaler.scale(loss).backward()
        if self.opts.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.opts.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lr = self.optimizer.param_groups[0]["lr"]
        if self.scheduler is not None:
            self.scheduler.step()
        self.it += 1
        h = self.history
        h["iteration"].append(self.it)
        h["epoch"].append(self.epoch + 1)
        h["loss"].append(value)
        h["lr"].append(lr)
        for k, v in getattr(self.loss_fn, "last_components", {}).items():
            h["components"].setdefault(k, []).append(v)
        return value


def train_one_epoch(run: _Run, batches, epochs: int, say, bar, perf, start_time: float) -> bool:
    """Run the batches of one epoch from ``run.batch`` on; True when ``max_iters`` was reached."""
    opts = run.opts
    running = 0.0
    for data in batches:
        value = run.step(data)
        i = run.batch
        running += value
        run.batch += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4g}", refresh=False)
        if i % opts.log_every == opts.log_every - 1:
            avg = running / float(opts.log_every)
            elapsed = time.perf_counter() - start_time
            say("[epoch=%d/%d, iter=%4d  elapsed_time=%3d secs]   %s loss: %.3f" % (run.epoch + 1, epochs, i + 1, elapsed,
                                                                                     run.history["loss_name"], avg))
            run.history["running"].append([run.it, avg])
            perf()
            running = 0.0
        if opts.checkpoint_every and run.it % opts.checkpoint_every == 0:
            run.save_checkpoint()
        if opts.max_iters is not None and run.it >= opts.max_iters:
            return True
    return False


def train(net: torch.nn.Module, loader, opts: TrainOptions, card: RunCard, device=None):
    """Train a copy of ``net`` (as stock does) on ``loader``; return ``(trained_net, history)``.

    ``opts`` must be resolved (``epochs``, ``lr`` and ``momentum`` set): the segmenter's
    facade fills them from DLStudio. ``card`` names the run's files; the checkpoint and
    history are written here, the final weights by the caller.
    """
    opts.validate()
    if opts.epochs is None or opts.lr is None:
        raise UserError("train() needs resolved options: set epochs and lr (the segmenter fills them from DLStudio)")
    device = torch.device(device) if device is not None else torch.device("cpu")
    if opts.amp and device.type != "cuda":
        warnings.warn("amp=True needs CUDA; training in float32", RuntimeWarning)
    loss_fn = get_loss(opts.loss)
    if isinstance(loss_fn, torch.nn.Module):
        loss_fn.train()
    if opts.seed is not None:
        import random

        random.seed(opts.seed)
        np.random.seed(opts.seed)
        torch.manual_seed(opts.seed)

    dataset = loader.dataset
    if opts.subset is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(opts.subset, len(dataset))))
    batch_size = loader.batch_size
    workers = default_num_workers(loader.num_workers)
    per_epoch = math.ceil(len(dataset) / batch_size)
    total = opts.epochs * per_epoch if opts.max_iters is None else min(opts.max_iters, opts.epochs * per_epoch)

    def epoch_batches(epoch: int, start_batch: int):
        if opts.seed is None:
            if dataset is loader.dataset and start_batch == 0:
                return loader  # stock: the caller's loader, its shuffling and RNG use
            sampler = torch.utils.data.SubsetRandomSampler(torch.randperm(len(dataset))[start_batch * batch_size:].tolist())
            return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers)
        sampler = _EpochSampler(len(dataset), opts.seed, epoch, start_batch * batch_size)
        # Its own generator: making the iterator must not draw from the global RNG,
        # or a resumed run's dropout would drift from the uninterrupted one.
        gen = torch.Generator().manual_seed(_epoch_seed(opts.seed, epoch))
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, generator=gen)

    run = _Run(copy.deepcopy(net).to(device), opts, card, device, total, loss_fn)
    if opts.resume:
        run.resume()

    perf_path = opts.perf_file or f"performance_numbers_{opts.epochs}.txt"

    def perf() -> None:  # the whole file, atomically: stock's running averages so far
        write_text(perf_path, "".join("%.3f\n" % avg for _, avg in run.history["running"]))

    bar = None
    if opts.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=min(run.it, total), desc=f"train {run.history['loss_name']}", unit="it",
                   mininterval=1.0, dynamic_ncols=True)
    say = bar.write if bar is not None else print
    start_time = time.perf_counter()
    run.net.train()
    done = opts.max_iters is not None and run.it >= opts.max_iters
    try:
        while not done and run.epoch < opts.epochs:
            say("")
            done = train_one_epoch(run, epoch_batches(run.epoch, run.batch), opts.epochs, say, bar, perf, start_time)
            if run.batch >= per_epoch:
                run.epoch, run.batch = run.epoch + 1, 0
    except KeyboardInterrupt:
        if run.it:
            run.save_checkpoint()
            print(f"\ninterrupted at iteration {run.it}; checkpoint saved to {card.checkpoint}")
        raise
    finally:
        if bar is not None:
            bar.close()
    perf()
    run.history["seconds"] = time.perf_counter() - start_time
    if hasattr(loss_fn, "extra_state"):
        run.history["dice_scale"] = loss_fn.dice_scale
    print("\nFinished Training\n")
    run.save_checkpoint()
    return run.net, run.history
