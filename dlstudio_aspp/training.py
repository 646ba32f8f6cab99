"""The training loop behind ``SemanticSegmentationASPP.run_code_for_training_for_semantic_segmentation``.

:func:`train` takes plain values (a network, a DataLoader, a
:class:`~dlstudio_aspp.spec.RunSpec`, a :class:`~dlstudio_aspp.card.RunCard`) and returns the trained network and its history;
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
import math
import time
import warnings
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from .accel import Compiled, device_batches, device_tensors, quiet_worker
from .augment import augment_batch, transform_for
from . import checkpoint, crash
from .card import RunCard
from .hooks import HistoryRecorder, Hooks, NonFiniteGuard, PerfFile, Progress, Row, StopOnSignal, TensorBoard
from .run_files import RunFiles
from .data.open import data_identity
from .dlstudio_glue import default_num_workers
from .errors import DiskFullError, UserError
from .losses import get_loss
from .optim import clipped_step, make_optimizer, make_scheduler
from .spec import SEED_MIX, RunSpec, loss_title
from .stopping import Interrupted
from .validation import Validator, cpu_weights, split_for_validation


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * SEED_MIX + epoch


def _seeded_order(n: int, seed: int, epoch: int, start: int = 0) -> List[int]:
    """A fixed permutation per (seed, epoch), from position ``start`` on: exact resume mid-epoch."""
    g = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
    return torch.randperm(n, generator=g)[start:].tolist()


#: Iterations between two reads of the losses from the device (also at log points and checkpoints):
#: the NaN/inf check's delay, and the only host syncs of the loop.
FLUSH_EVERY = 50


class _Run:
    """The mutable state of one training run: network, optimizer, schedule, position, history.

    A step leaves its loss and the loss's components on the device (``pending``);
    :meth:`flush` reads them all with one host sync and hands each to the hooks
    (:mod:`dlstudio_aspp.hooks`: the NaN/inf guard, the history, TensorBoard). It runs at log
    points, before every checkpoint and every :data:`FLUSH_EVERY` iterations, so the loop
    never waits for the device per step.
    """

    def __init__(self, net, spec: RunSpec, card: RunCard, device, total: int, loss_fn) -> None:
        self.net, self.spec, self.card, self.device, self.loss_fn = net, spec, card, device, loss_fn
        self.total = total
        self.use_amp = bool(spec.amp) and device.type == "cuda"
        self.optimizer = make_optimizer(net, spec, device)
        self.scheduler = make_scheduler(self.optimizer, spec, total)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.it, self.epoch, self.batch = 0, 0, 0
        self.own_checkpoint = False  # a checkpoint of *this* run exists (written or resumed from)
        self.saved_at = 0  # the iteration of that checkpoint
        self.last_save = -math.inf
        self.device_arrays = None  # PurdueShapes' arrays on a CUDA device, when batches are drawn there
        self.hooks = Hooks([NonFiniteGuard(), HistoryRecorder()])  # train() adds the rest
        self.augment = transform_for(spec.augment_level(), tuple(card.image_size))
        self.validator: Optional[Validator] = None
        self.last_weights: Optional[dict] = None  # the last iteration's, kept when validation chose others
        self.data: Dict[str, Any] = {}  # the training set's identity (data_identity), compared on resume
        self.in_step = False
        self.prior_seconds = 0.0  # training time of the runs this one resumes
        self.started = time.perf_counter()
        self.probe: Optional[Callable[[str], None]] = None  # tests: called at named points inside a step
        self.pending: List[tuple] = []  # (iteration, epoch, batch, lr, stacked device values, names, float parts)
        self.history: Dict[str, Any] = {"iteration": [], "epoch": [], "loss": [], "lr": [], "components": {}, "running": [],
                                        "loss_name": loss_title(spec.loss)}
        self.compiled = Compiled(self._forward_loss, device, "training step", module=net) if spec.compile else None

    def save_checkpoint(self) -> None:
        """Weights, optimizer, schedule, position, RNG, options and history, atomically (after a flush)."""
        self.flush()
        self.history["seconds"] = self.training_seconds()
        try:
            self._write_checkpoint()
        except DiskFullError as exc:
            kept = (f"the last good checkpoint is {self.card.files.checkpoint} (iteration {self.saved_at}); free space, "
                    "then run the same command with --resume" if self.own_checkpoint
                    else "this run wrote no checkpoint yet")
            raise DiskFullError(f"{exc}; {kept}") from None
        self.last_save = _clock()

    def _write_checkpoint(self) -> None:
        checkpoint.save_run(self)
        self.own_checkpoint, self.saved_at = True, self.it
        crash.point("checkpoint-written")
        checkpoint.write_history(self.history, self.card)

    def training_seconds(self) -> float:
        """Seconds of training so far, over every resume of this run."""
        return self.prior_seconds + time.perf_counter() - self.started

    def checkpoint_due(self) -> bool:
        every = self.spec.checkpoint_every
        return bool(every) and self.it % every == 0 and _clock() - self.last_save >= self.spec.checkpoint_seconds

    def resume(self) -> None:
        ck, path, skipped = checkpoint.newest_good([self.card.files.checkpoint, self.card.files.previous_checkpoint])
        for note in skipped:
            print(f"{note}; going on from the checkpoint before it, {path.name}")
        differ = checkpoint.differences(ck, self.spec.result_values(), self.card.model, self.data)
        if differ:
            raise UserError(f"cannot resume {path}: its run had other options ({differ}); use the same options or "
                            "another folder")
        notes = checkpoint.restore_run(self, ck)
        self.prior_seconds = float(self.history.get("seconds") or 0.0)
        if self.card.provenance:  # every command that trained this run, the resumes included
            self.card.provenance["commands"] = checkpoint.commands(ck) + [self.card.provenance.get("command")]
        self.own_checkpoint, self.saved_at = True, self.it
        if self.spec.seed is None:
            warnings.warn("resuming without a seed: the data order after the resume differs from an uninterrupted run")
        print(f"resumed from {path} at iteration {self.it} (epoch {self.epoch + 1}, batch {self.batch})"
              + "".join(f"; {note}" for note in notes if note))

    def _forward_loss(self, im: torch.Tensor, target: torch.Tensor):
        """(loss, its components) of the network on one batch: the part ``--compile`` compiles."""
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
            output = self.net(im)
        loss = self.loss_fn(output.float(), target)
        return loss, dict(getattr(self.loss_fn, "last_components", {}))

    def _forward_backward(self, forward, im: torch.Tensor, target: torch.Tensor):
        """``forward(im, target)`` (eager or compiled) and the backward pass of its loss; returns (loss, components)."""
        loss, parts = forward(im, target)
        if not (torch.is_tensor(loss) and loss.dim() == 0):
            shape = tuple(loss.shape) if torch.is_tensor(loss) else type(loss).__name__
            raise UserError(f"the loss must return a scalar tensor (0-dim, with a gradient), got {shape}; "
                            "reduce it with .mean() and do not call .item()")
        self._at("forward")
        self.scaler.scale(loss).backward()
        return loss, parts

    def _at(self, point: str) -> None:
        if self.probe is not None:
            self.probe(point)

    def step(self, data) -> None:
        """One optimisation step on a batch; its loss stays on the device until :meth:`flush`."""
        self.in_step = True
        self._step(data)
        self.in_step = False

    def _step(self, data) -> None:
        self._at("start")
        if self.augment is not None or self.spec.copy_paste:
            data = augment_batch(data, self.augment, self.spec.seed or 0, self.it, self.spec.copy_paste)
        im = self.card.prepare_input(_on(self.device, data["image"]))
        target = self.card.target(_on(self.device, data["mask_tensor"]))
        self.optimizer.zero_grad()
        if self.compiled is None or not getattr(self.loss_fn, "scale_frozen", True):
            # dice+mse:auto measures its scale eagerly (it reads the terms); the compiled step sees it frozen
            loss, parts = self._forward_backward(self._forward_loss, im, target)
        else:
            loss, parts = self.compiled.run(lambda forward: self._forward_backward(forward, im, target))
            if self.compiled.fell_back is not None:
                self.history.setdefault("compile_fallback", self.compiled.fell_back)
        self._at("backward")
        clipped_step(self.optimizer, self.scaler, self.net.parameters(), self.spec.grad_clip)
        self._at("optimizer")
        lr = self.optimizer.param_groups[0]["lr"]
        if self.scheduler is not None:
            self.scheduler.step()
        names = [k for k, v in parts.items() if torch.is_tensor(v)]
        values = torch.stack([loss.detach().float()] + [parts[k].float() for k in names])  # a copy: safe under CUDA graphs
        floats = {k: v for k, v in parts.items() if not torch.is_tensor(v)}
        self._at("schedule")
        self.it += 1
        self.pending.append((self.it, self.epoch + 1, self.batch + 1, lr, values, names, floats))
        self._at("end")

    def flush(self) -> List[float]:
        """Read the pending steps' losses (one host sync), stop on NaN/inf, add them to the history; return the losses."""
        if not self.pending:
            return []
        rows = torch.stack([p[4] for p in self.pending]).tolist() if len({len(p[5]) for p in self.pending}) == 1 \
            else [p[4].tolist() for p in self.pending]
        pending, self.pending = self.pending, []
        for (it, epoch, batch, lr, _, names, floats), row in zip(pending, rows):
            self.hooks("on_row", self, Row(it, epoch, batch, lr, row[0], list(zip(names, row[1:])) + list(floats.items())))
        losses = [row[0] for row in rows]
        self.hooks("on_flush", self, losses)
        return losses


def _on(device: torch.device, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` on ``device``: itself when it is there already (batches drawn on the device cost no copy)."""
    return tensor if tensor.device == device else tensor.to(device, non_blocking=True)


def _clock() -> float:
    return time.monotonic()


def train_one_epoch(run: _Run, batches) -> bool:
    """Run the batches of one epoch from ``run.batch`` on; True when the run's last iteration is done.

    A stop requested during a step (SIGINT, SIGTERM, SIGHUP) takes effect after that iteration's
    log line and validation, with its checkpoint, so a resumed run repeats none of them and misses none.
    """
    log_every = run.spec.log_every
    for data in batches:
        run.step(data)
        i = run.batch
        run.batch += 1
        run.hooks("on_step", run)
        logs, due = i % log_every == log_every - 1, run.checkpoint_due()
        if logs or due or run.it % FLUSH_EVERY == 0 or run.it >= run.total:
            run.flush()
        if logs:  # stock's running average: the last log_every iterations, all within this epoch
            run.hooks("on_log", run, i, sum(run.history["loss"][-log_every:]) / float(log_every))
        last = run.it >= run.total
        if run.validator is not None and run.validator.due(run.it, end_of_epoch=False) and not last:
            _validate(run)
        run.hooks("before_checkpoint", run)  # a stop request saves the checkpoint and raises here
        if due:
            run.save_checkpoint()
        if last:
            return True
    run.flush()
    return False


def _validate(run: _Run) -> None:
    """Score the held-out images now; the network goes back to training mode."""
    miou = run.validator.run(run.net, run.it)
    run.net.train()
    run.hooks("on_validation", run, miou)


def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _epoch_order(n: int, spec: RunSpec, epoch: int, start_batch: int) -> List[int]:
    """The data order of one epoch from ``start_batch`` on: fixed per (seed, epoch), else drawn from the global RNG."""
    if spec.seed is None:
        return torch.randperm(n)[start_batch * spec.batch_size:].tolist()
    return _seeded_order(n, spec.seed, epoch, start_batch * spec.batch_size)


def _epoch_batches(run: _Run, loader, dataset, epoch: int, start_batch: int):
    """The batches of one epoch from ``start_batch`` on: a fixed order per (seed, epoch), or stock's.

    On CUDA, PurdueShapes' arrays stay on the GPU and batches are drawn there in the same
    order (:func:`~dlstudio_aspp.accel.device_batches`); elsewhere a DataLoader draws them.
    """
    spec = run.spec
    if spec.seed is None and dataset is loader.dataset and start_batch == 0 and not spec.compile:
        return loader  # stock: the caller's loader, its shuffling and RNG use
    order = _epoch_order(len(dataset), spec, epoch, start_batch)
    if run.device_arrays is not None:
        return device_batches(run.device_arrays, order, spec.batch_size, drop_last=spec.compile)
    workers = default_num_workers(spec.workers if spec.workers is not None else loader.num_workers)
    kwargs = dict(batch_size=spec.batch_size, num_workers=workers, drop_last=spec.compile,
                  pin_memory=run.device.type == "cuda", worker_init_fn=quiet_worker if workers else None)
    if spec.seed is None:
        return torch.utils.data.DataLoader(dataset, sampler=order, **kwargs)
    # Its own generator: making the iterator must not draw from the global RNG,
    # or a resumed run's dropout would drift from the uninterrupted one.
    gen = torch.Generator().manual_seed(_epoch_seed(spec.seed, epoch))
    return torch.utils.data.DataLoader(dataset, sampler=order, generator=gen, **kwargs)


def _run_epochs(run: _Run, loader, dataset, epochs: int, per_epoch: int) -> None:
    """Epochs from the run's position to its last iteration; Ctrl-C saves a checkpoint."""
    run.net.train()
    done = run.it >= run.total
    try:
        while not done and run.epoch < epochs:
            run.hooks("on_epoch", run)
            done = train_one_epoch(run, _epoch_batches(run, loader, dataset, run.epoch, run.batch))
            if run.batch >= per_epoch:
                run.epoch, run.batch = run.epoch + 1, 0
                if run.validator is not None and not done and run.validator.due(run.it, end_of_epoch=True):
                    _validate(run)
    except Interrupted as exc:
        print(f"\n{exc}")
        raise
    except KeyboardInterrupt:  # not through StopRequests: save only if no step was cut in half
        if run.it and not run.in_step:
            run.save_checkpoint()
            print(f"\ninterrupted at iteration {run.it}; checkpoint saved to {run.card.files.checkpoint}")
        raise


def _finish_validation(run: _Run) -> None:
    """The last validation, then the best weights become the run's weights (recorded in the history and card);
    the checkpoint keeps the last iteration's as ``last_model`` (to score what the choice gained)."""
    if not run.validator.history or run.validator.history[-1][0] != run.it:
        _validate(run)
    if run.validator.best["iteration"] != run.it:  # the finished checkpoint keeps the last weights beside them
        run.last_weights = cpu_weights(run.net)
    run.net.load_state_dict(run.validator.best["state"])
    run.history["validation"] = run.validator.summary()
    run.card.validation = {k: v for k, v in run.history["validation"].items() if k != "history"}
    print(f"best validation mIoU {run.validator.best['miou']:.3f} at iteration {run.validator.best['iteration']}: "
          "those are the run's weights")


def training_split(dataset, spec: RunSpec):
    """(the images training steps through, the validation images or None): --train-subset, then --val-split."""
    if spec.train_subset is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(spec.train_subset, len(dataset))))
    if spec.val_split is None:
        return dataset, None
    return split_for_validation(dataset, spec.val_split)


def train(net: torch.nn.Module, loader, spec: RunSpec, card: RunCard, device=None, *, loss_fn=None,
          resume: bool = False, perf_file=None, split: Optional[tuple] = None):
    """Train a copy of ``net`` (as stock does) on ``loader``; return ``(trained_net, history)``.

    ``spec`` gives every option (:class:`~dlstudio_aspp.spec.RunSpec`); ``loss_fn``, when
    given, is the built loss (else ``get_loss(spec.loss)``). ``card`` names the run's
    files; the checkpoint and history are written here, the final weights by the caller.
    ``perf_file``: where stock's running averages go (default: stock's
    ``performance_numbers_<epochs>.txt`` in the working directory). ``split``: the training and
    validation images (:func:`training_split` of ``loader.dataset``), when the caller has them.
    """
    spec.validate()
    if loader.batch_size != spec.batch_size:
        raise UserError(f"the loader's batch size is {loader.batch_size} but batch_size is {spec.batch_size}; "
                        "set them alike (DLStudio's batch_size sets both)")
    device = torch.device(device) if device is not None else torch.device("cpu")
    if spec.amp and device.type != "cuda":
        warnings.warn("amp=True needs CUDA; training in float32", RuntimeWarning)
    loss_fn = loss_fn if loss_fn is not None else get_loss(spec.loss)
    if isinstance(loss_fn, torch.nn.Module):
        loss_fn.train()
    if spec.seed is not None:
        _seed_everything(spec.seed)
    dataset, val_set = split or training_split(loader.dataset, spec)
    epochs, total = spec.iterations(len(dataset))
    per_epoch = spec.per_epoch(len(dataset))
    if per_epoch < spec.log_every <= total:  # stock counts the iterations of an epoch, so it never reaches log_every
        warnings.warn(f"no loss lines will be printed: --log-every {spec.log_every} is longer than an epoch "
                      f"({per_epoch} iterations), and stock's line counts the iterations within an epoch; "
                      f"set --log-every {max(1, per_epoch // 2)} (or log_every=...) to see the loss as it trains",
                      UserWarning)
    run = _Run(copy.deepcopy(net).to(device), spec, card, device, total, loss_fn)
    if val_set is not None:
        run.validator = Validator(val_set, card, device, spec.val_every)
    run.device_arrays = device_tensors(dataset, device) if device.type == "cuda" else None
    run.data = data_identity(dataset)
    if resume:
        run.resume()
    perf, stop = PerfFile(perf_file or RunFiles.stock_perf_file(epochs)), StopOnSignal()
    board = [TensorBoard(card)] if spec.tensorboard else []
    run.started = time.perf_counter()
    run.hooks.hooks += board + [Progress(run, epochs, bar=spec.progress), perf, stop]
    try:
        with stop:
            _run_epochs(run, loader, dataset, epochs, per_epoch)
        perf.write(run)
        if run.validator is not None:
            _finish_validation(run)
    finally:
        run.hooks.close()
    run.history["seconds"] = run.training_seconds()
    run.history["epochs"] = epochs
    if hasattr(loss_fn, "extra_state"):
        run.history["dice_scale"] = loss_fn.dice_scale
    print("\nFinished Training\n" if spec.progress else "Finished Training")
    run.save_checkpoint()
    return run.net, run.history
