"""What makes a training step fast without changing its result.

- :class:`Compiled`: ``torch.compile`` of a function (CUDA graphs with
  ``mode="reduce-overhead"`` on CUDA, inductor's default mode on CPU), with a fallback
  to the eager function and one warning when compiling, the compiled backward pass or
  recording a CUDA graph fails, never a crash.
- :func:`device_batches`: PurdueShapes' uint8 arrays kept on the device and batches
  drawn there in a given order, bypassing DataLoader workers (the same batches as the
  CPU path).
- :func:`pick_device`: CUDA when there is one and ``--cpu`` is off, for every command.
- :func:`quiet_worker`: DataLoader workers ignore Ctrl-C and SIGTERM, so stopping a run
  prints the checkpoint message and not a worker's traceback; the main process shuts
  them down.
"""
from __future__ import annotations

import signal
import warnings
from typing import Any, Callable, Iterator, Optional, Sequence

import torch

from . import checkpoint
from .errors import UserError


def pick_device(cpu: bool = False) -> torch.device:
    """The one device rule: CUDA when this machine has it and ``cpu`` (``--cpu``) is off, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() and not cpu else "cpu")


def compile_mode(device: torch.device) -> Optional[str]:
    """``torch.compile``'s mode for ``device``: CUDA graphs on CUDA, the default elsewhere."""
    return "reduce-overhead" if device.type == "cuda" else None


#: Calls of a compiled function that run with the network's state saved first: the call that compiles
#: the forward pass (and, through its backward, the lazily compiled backward), the one on which CUDA
#: graphs are recorded, and the first replay. A failure there is undone before the eager rerun.
GUARDED_CALLS = 3


class Compiled:
    """``fn`` under ``torch.compile``, which no compile or CUDA-graph failure can end.

    :meth:`run` calls ``body(f)`` with ``f`` the compiled function (``body`` may go on to the
    backward pass, where the backward graph is compiled lazily). If that raises anything but a
    :class:`UserError`, ``body`` runs again with the eager ``fn``, which is used from then on,
    and one warning names the cause; ``fell_back`` holds it. For the first
    :data:`GUARDED_CALLS` calls, the buffers of ``module`` (BatchNorm's running statistics) and
    the random generators are put back, and its gradients cleared, before the eager rerun, so
    the step's result is the eager step's. ``what`` names the function in the warning.
    """

    def __init__(self, fn: Callable, device: torch.device, what: str, module: Optional[torch.nn.Module] = None) -> None:
        self.eager, self.what, self.module, self.device = fn, what, module, device
        mode = compile_mode(device)
        self.fn = torch.compile(fn, mode=mode, dynamic=False) if mode else torch.compile(fn, dynamic=False)
        self.fell_back: Optional[str] = None
        self.calls = 0

    def __call__(self, *args, **kwargs):
        return self.run(lambda f: f(*args, **kwargs))

    def run(self, body: Callable[[Callable], Any]):
        if self.fell_back is not None:
            return body(self.eager)
        saved = self._snapshot() if self.calls < GUARDED_CALLS else None
        self.calls += 1
        try:
            return body(self.fn)
        except UserError:
            raise
        except Exception as exc:  # any compile or graph failure: undo, run eagerly, say so once
            if saved is not None:
                self._restore(saved)
            if self.module is not None:
                self.module.zero_grad(set_to_none=True)
            out = body(self.eager)  # an error here is the step's own, not the compiler's
            text = str(exc).strip().splitlines()
            self.fell_back = f"{type(exc).__name__}: {text[0][:200] if text else ''}"
            warnings.warn(f"--compile: the compiled {self.what} failed ({self.fell_back}); "
                          f"running it eagerly for the rest of the run", RuntimeWarning, stacklevel=2)
            return out

    def _snapshot(self) -> dict:
        buffers = {k: b.clone() for k, b in self.module.named_buffers()} if self.module is not None else {}
        return {"buffers": buffers, **checkpoint.rng_state(self.device)}

    def _restore(self, saved: dict) -> None:
        with torch.no_grad():
            for k, b in self.module.named_buffers() if self.module is not None else ():
                b.copy_(saved["buffers"][k])
        checkpoint.restore_rng(saved, self.device)  # the same device: both generators, no note


def device_tensors(dataset, device: torch.device):
    """(images (N, 3, H, W) uint8, masks (N, C, H, W) uint8) of a PurdueShapes dataset on ``device``
    (through any nesting of ``Subset`` objects), or None when the dataset does not keep its arrays in memory
    (COCO reads PNGs)."""
    base, indices = dataset, None
    while isinstance(base, torch.utils.data.Subset):
        idx = torch.as_tensor(list(base.indices), dtype=torch.long)
        indices = idx if indices is None else idx[indices]
        base = base.dataset
    images, masks = getattr(base, "images", None), getattr(base, "masks", None)
    if not (torch.is_tensor(images) and torch.is_tensor(masks)):
        return None
    if indices is not None:
        images, masks = images[indices], masks[indices]
    return images.to(device), masks.to(device)


def device_batches(arrays, order: Sequence[int], batch_size: int, drop_last: bool = False) -> Iterator[dict]:
    """Batches ``{'image': (B, 3, H, W) float 0..255, 'mask_tensor': (B, C, H, W) uint8}`` drawn on the
    arrays' device in ``order`` (the sampler's order), as the DataLoader would collate them."""
    images, masks = arrays
    order = torch.as_tensor(list(order), dtype=torch.long, device=images.device)  # one copy per epoch, none per batch
    stop = len(order) - (len(order) % batch_size if drop_last else 0)
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        yield {"image": images.index_select(0, idx).float(), "mask_tensor": masks.index_select(0, idx)}


def quiet_worker(_worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: leave Ctrl-C and SIGTERM to the main process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
