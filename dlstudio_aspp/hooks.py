"""What the training loop hands on: small hooks, called at fixed points of :mod:`dlstudio_aspp.training`.

The loop keeps the step, the flushes and the checkpoints; everything else is a hook:
recording the history (:class:`HistoryRecorder`), the non-finite-loss guard
(:class:`NonFiniteGuard`), TensorBoard (:class:`TensorBoard`), stock's printed lines and
the progress bar (:class:`Progress`), stock's ``performance_numbers`` file
(:class:`PerfFile`) and stop requests (:class:`StopOnSignal`).

A hook defines any of these methods; :class:`Hooks` calls them in the hooks' order:

- ``on_step(run)``: after every optimisation step;
- ``on_row(run, row)``: for every loss read back from the device (a :class:`Row`, in order);
- ``on_flush(run, losses)``: after a read-back, with its losses;
- ``on_log(run, i, avg)``: at stock's log points (``i``: the iteration within the epoch);
- ``on_validation(run, miou)``: after the held-out images were scored;
- ``before_checkpoint(run)``: at the end of an iteration, after its log line and validation, before its
  checkpoint;
- ``on_epoch(run)``: before each epoch; ``close()``: when training ends, however it ends.
"""
from __future__ import annotations

import functools
import math
import signal
import time
from typing import Any, Callable, List, NamedTuple, Sequence, Tuple

from .atomic import write_text
from .errors import NonFiniteLossError, UserError
from .stopping import Interrupted, StopRequests


class Row(NamedTuple):
    """One iteration's losses, read back from the device."""

    iteration: int
    epoch: int
    batch: int
    lr: float
    loss: float
    parts: List[Tuple[str, float]]  # the loss's components, (name, value)


class Hooks:
    """The hooks of one training run, called in order."""

    def __init__(self, hooks: Sequence[Any]) -> None:
        self.hooks = list(hooks)

    def __call__(self, event: str, *args) -> None:
        for hook in self.hooks:
            method = getattr(hook, event, None)
            if method is not None:
                method(*args)

    def close(self) -> None:
        self("close")


class NonFiniteGuard:
    """Stops the run on a NaN or inf loss, naming the iteration and the last good checkpoint."""

    def on_row(self, run, row: Row) -> None:
        if math.isfinite(row.loss):
            return
        kept = (f"the last good checkpoint is {run.card.files.checkpoint}" if run.own_checkpoint
                else "this run wrote no checkpoint yet")
        raise NonFiniteLossError(f"{run.history['loss_name']} loss became {row.loss} at iteration {row.iteration} "
                                 f"(epoch {row.epoch}, batch {row.batch}); {kept}. Lower the learning rate or check the data.")


class HistoryRecorder:
    """Appends every iteration's loss, learning rate and components, and stock's running averages, to
    ``run.history`` (which the checkpoint carries)."""

    def on_row(self, run, row: Row) -> None:
        h = run.history
        h["iteration"].append(row.iteration)
        h["epoch"].append(row.epoch)
        h["loss"].append(row.loss)
        h["lr"].append(row.lr)
        for k, v in row.parts:
            h["components"].setdefault(k, []).append(v)

    def on_log(self, run, i: int, avg: float) -> None:
        run.history["running"].append([run.it, avg])


def open_board(card):
    """A TensorBoard ``SummaryWriter`` in the run's folder (imported only when asked for)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard "
                        "(or pip install -e \".[tensorboard]\")") from None
    return SummaryWriter(log_dir=str(card.files.tensorboard_dir))


class TensorBoard:
    """The training losses, learning rate and validation mIoU in the run's TensorBoard log."""

    def __init__(self, card) -> None:
        self.board = open_board(card)

    def on_row(self, run, row: Row) -> None:
        for k, v in [("loss", row.loss), ("lr", row.lr)] + row.parts:
            self.board.add_scalar(f"train/{k}", v, row.iteration)

    def on_validation(self, run, miou: float) -> None:
        self.board.add_scalar("val/miou", miou, run.it)

    def close(self) -> None:
        self.board.close()


class Progress:
    """Stock's printed lines (one per log point, a blank line before each epoch; the time since ``run.started``)
    and, with ``bar``, a tqdm progress bar that they are written above."""

    def __init__(self, run, epochs: int, bar: bool) -> None:
        self.epochs = epochs
        self.bar = None
        if bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=run.total, initial=min(run.it, run.total), desc=f"train {run.history['loss_name']}",
                            unit="it", mininterval=1.0, dynamic_ncols=True)
        # a log file shows each line at once
        self.say: Callable[[str], None] = self.bar.write if self.bar is not None else functools.partial(print, flush=True)

    def on_epoch(self, run) -> None:
        if self.bar is not None:
            self.say("")  # stock's blank line before each epoch; not in a log file (--no-progress)

    def on_step(self, run) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def on_flush(self, run, losses: List[float]) -> None:
        if self.bar is not None and losses:
            self.bar.set_postfix(loss=f"{losses[-1]:.4g}", refresh=False)

    def on_log(self, run, i: int, avg: float) -> None:
        elapsed = time.perf_counter() - run.started
        self.say("[epoch=%d/%d, iter=%4d  elapsed_time=%3d secs]   %s loss: %.3f" % (run.epoch + 1, self.epochs, i + 1,
                                                                                 elapsed, run.history["loss_name"], avg))

    def on_validation(self, run, miou: float) -> None:
        best = run.validator.best
        self.say(f"[validation at iteration {run.it}] mIoU {miou:.3f} (best {best['miou']:.3f} at iteration "
                 f"{best['iteration']})")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class PerfFile:
    """Stock's ``performance_numbers_<epochs>.txt``: the running averages so far, the whole file rewritten
    atomically at each log point and at the end."""

    def __init__(self, path) -> None:
        self.path = path

    def write(self, run) -> None:
        write_text(self.path, "".join("%.3f\n" % avg for _, avg in run.history["running"]))

    def on_log(self, run, i: int, avg: float) -> None:
        self.write(run)


class StopOnSignal:
    """SIGINT, SIGTERM and SIGHUP set a flag (:class:`~dlstudio_aspp.stopping.StopRequests`, installed while
    the hook is entered); at the end of that iteration the run saves a checkpoint and stops."""

    def __init__(self) -> None:
        self.requests = StopRequests()

    def __enter__(self) -> "StopOnSignal":
        self.requests.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.requests.__exit__(*exc)

    def before_checkpoint(self, run) -> None:
        if self.requests.requested is None:
            return
        run.save_checkpoint()
        name = signal.Signals(self.requests.requested).name
        raise Interrupted(f"{name}: stopped at iteration {run.it}; checkpoint saved to {run.card.files.checkpoint}")
