"""What makes a training step fast without changing its result.

- :class:`Compiled`: ``torch.compile`` of a function (CUDA graphs with
  ``mode="reduce-overhead"`` on CUDA, inductor's default mode on CPU), with a fallback
  to the eager function and one warning when compiling fails, never a crash.
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
from typing import Callable, Iterator, Optional, Sequence

import torch


def pick_device(cpu: bool = False) -> torch.device:
    """The one device rule: CUDA when this machine has it and ``cpu`` (``--cpu``) is off, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() and not cpu else "cpu")


def compile_mode(device: torch.device) -> Optional[str]:
    """``torch.compile``'s mode for ``device``: CUDA graphs on CUDA, the default elsewhere."""
    return "reduce-overhead" if device.type == "cuda" else None


class Compiled:
    """``fn`` compiled on its first call; if that fails, ``fn`` itself from then on (one warning).

    ``what`` names the function in the warning ("the training step", "evaluation").
    """

    def __init__(self, fn: Callable, device: torch.device, what: str) -> None:
        self.eager, self.what = fn, what
        mode = compile_mode(device)
        self.fn = torch.compile(fn, mode=mode, dynamic=False) if mode else torch.compile(fn, dynamic=False)
        self.fell_back = False
        self._tried = False

    def __call__(self, *args, **kwargs):
        if self._tried:
            return self.fn(*args, **kwargs)
        self._tried = True
        try:
            return self.fn(*args, **kwargs)
        except Exception as exc:  # any compiler failure: run eagerly, say so once
            warnings.warn(f"--compile: compiling {self.what} failed ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); running it eagerly",
                          RuntimeWarning, stacklevel=2)
            self.fn, self.fell_back = self.eager, True
            return self.fn(*args, **kwargs)


def device_tensors(dataset, device: torch.device):
    """(images (N, 3, H, W) uint8, masks (N, C, H, W) uint8) of a PurdueShapes dataset on ``device``
    (through any nesting of ``Subset``\ s), or None when the dataset does not keep its arrays in memory
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
    order = torch.as_tensor(list(order), dtype=torch.long)
    stop = len(order) - (len(order) % batch_size if drop_last else 0)
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size].to(images.device)
        yield {"image": images.index_select(0, idx).float(), "mask_tensor": masks.index_select(0, idx)}


def quiet_worker(_worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: leave Ctrl-C and SIGTERM to the main process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
