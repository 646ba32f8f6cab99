"""Reading and writing a run's resumable checkpoint, and the weights file, the same on any device.

Every tensor written is on the CPU, whatever device trained the run: ``torch.load`` without
``map_location`` then reads ``saved_model`` and ``<stem>.ckpt`` on a machine with no GPU, as
stock DLStudio's scripts do. Reading always maps onto the CPU; the loop moves what it needs
(``load_state_dict`` copies weights onto the network's device, and an optimizer's state
follows its parameters). The random number generators are saved per kind: the CPU
generator always, and the training device's CUDA generator when a GPU trained the run.

A resumable checkpoint carries the sha256 of its own contents (every tensor's bytes, every value),
so a file cut short or with a flipped bit is known for what it is, and the checkpoint it replaces
is kept beside it (``<stem>.ckpt.prev``, a hard link: no copy) until the new one is durable:
``--resume`` goes on from the newest good one (:func:`newest_good`). The disk holds at most one
checkpoint more than before.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import torch

from . import crash
from .atomic import keep_as, torch_save
from .errors import MissingFileError, UserError

DIGEST = "sha256"  # the checkpoint's key holding the digest of the rest of it


def on_cpu(obj: Any) -> Any:
    """``obj`` with every tensor inside it (dicts, lists, tuples) detached and on the CPU; the rest as is."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu")
    if isinstance(obj, dict):
        return {k: on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(on_cpu(v) for v in obj)
    return obj


def save(obj: Any, path) -> Path:
    """``obj`` (a checkpoint dict or a ``state_dict``) with CPU tensors only, written atomically to ``path``."""
    return torch_save(on_cpu(obj), path)


def load(path, what: str = "checkpoint") -> Any:
    """What :func:`save` wrote to ``path``, every tensor on the CPU; a damaged file is one :class:`UserError`.

    ``what`` names the file in the message ("checkpoint", "weights file")."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file raises many kinds
        raise UserError(f"{path} is not a readable {what} ({type(exc).__name__}: cut short, or not written by "
                        "dlstudio-aspp); restore it from a copy, or delete it and train again") from None


def _feed(h, obj: Any) -> None:
    """Add ``obj`` to the hash ``h``: tensors by dtype, shape and bytes; containers in a fixed order."""
    if torch.is_tensor(obj):
        t = obj.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(b"{")
        for k in sorted(obj, key=repr):
            _feed(h, k), _feed(h, obj[k])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[")
        for v in obj:
            _feed(h, v)
        h.update(b"]")
    else:
        h.update(repr(obj).encode())


def digest(ck: dict) -> str:
    """The sha256 of a checkpoint's contents (its own digest left out)."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in ck.items() if k != DIGEST})
    return h.hexdigest()


def save_checkpoint(ck: dict, path, previous) -> Path:
    """Write the resumable checkpoint ``ck`` (CPU tensors, its digest inside) to ``path`` atomically; the one it
    replaces is kept as ``previous`` until then."""
    path, previous = Path(path), Path(previous)
    ck = on_cpu(ck)
    ck[DIGEST] = digest(ck)
    if path.is_file():
        keep_as(path, previous)
        crash.point("checkpoint-previous-kept")
    return torch_save(ck, path)


def load_checkpoint(path) -> dict:
    """The checkpoint at ``path``, its digest checked; a damaged file is one :class:`UserError`."""
    ck = load(path)
    if not isinstance(ck, dict) or "model" not in ck:
        raise UserError(f"{path} is not a readable checkpoint (no weights in it)")
    if DIGEST in ck and ck.pop(DIGEST) != digest(ck):  # checkpoints written before digests have none
        raise UserError(f"{path} is damaged: its contents do not match the sha256 written with them (a flipped "
                        "bit, or a copy cut off)")
    return ck


def newest_good(paths: Sequence[Path]) -> Tuple[dict, Path, List[str]]:
    """(checkpoint, its path, one note per newer file skipped) for the first of ``paths`` that reads and
    checks out. Raises :class:`MissingFileError` when none exists, :class:`UserError` naming each when
    none is good."""
    existing = [Path(p) for p in paths if Path(p).is_file()]
    if not existing:
        raise MissingFileError(f"cannot resume: there is no checkpoint at {Path(paths[0])}; run without resume to "
                               "start afresh")
    problems: List[str] = []
    for path in existing:
        try:
            return load_checkpoint(path), path, [f"skipped {p}" for p in problems]
        except UserError as exc:
            problems.append(str(exc))
    raise UserError(f"cannot resume: no good checkpoint in {existing[0].parent}: " + "; ".join(problems)
                    + "; run without --resume to start afresh (or --overwrite)")


def rng_state(device: torch.device) -> dict:
    """The generators a resumed run needs: the CPU's, and ``device``'s CUDA generator when it is one."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {"rng": torch.get_rng_state(), "cuda_rng": cuda}


def restore_rng(ck: dict, device: torch.device) -> Optional[str]:
    """Set the generators from a checkpoint (as :func:`rng_state` wrote them); return a note when one
    could not be carried over (a run trained on a GPU resumed on a CPU, or the other way round)."""
    torch.set_rng_state(ck["rng"])
    cuda = ck.get("cuda_rng")
    if device.type == "cuda" and cuda is not None:
        torch.cuda.set_rng_state(cuda, device)
        return None
    if device.type == "cuda" or cuda is not None:
        written, here = ("a GPU", "the CPU") if cuda is not None else ("the CPU", "a GPU")
        return f"the checkpoint was written on {written} and this run trains on {here}: only the CPU's random numbers carry over"
    return None


def restore_scaler(scaler: "torch.amp.GradScaler", saved: Optional[dict]) -> Optional[str]:
    """Load AMP's loss scaler; return a note when the checkpoint's AMP setting differs from this run's.

    A checkpoint without a scaler state (AMP was off: a CPU run) resumed with AMP starts the loss
    scale afresh, as any AMP run starts; one with it resumed without AMP trains on in float32."""
    saved = saved or {}
    if scaler.is_enabled() and not saved:
        return "the checkpoint was written without mixed precision: AMP's loss scale starts afresh"
    if not scaler.is_enabled() and saved:
        return "the checkpoint was written with mixed precision on a GPU: training goes on in float32"
    scaler.load_state_dict(saved)
    return None
