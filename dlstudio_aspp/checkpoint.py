"""Reading and writing a run's resumable checkpoint, and the weights file, the same on any device.

Every tensor written is on the CPU, whatever device trained the run: ``torch.load`` without
``map_location`` then reads ``saved_model`` and ``<stem>.ckpt`` on a machine with no GPU, as
stock DLStudio's scripts do. Reading always maps onto the CPU; the loop moves what it needs
(``load_state_dict`` copies weights onto the network's device, and an optimizer's state
follows its parameters). The random number generators are saved per kind: the CPU
generator always, and the training device's CUDA generator when a GPU trained the run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from .atomic import torch_save
from .errors import UserError


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
