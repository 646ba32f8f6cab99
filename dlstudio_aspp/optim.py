"""The optimizer and the learning-rate schedule of a run, from its :class:`RunSpec`."""
from __future__ import annotations

import math

import torch

from .spec import RunSpec


def make_optimizer(net: torch.nn.Module, spec: RunSpec, device=None) -> torch.optim.Optimizer:
    """The spec's optimizer over ``net``'s parameters; fused on CUDA (one kernel for all parameters, and
    ``GradScaler.step`` then needs no host sync to look for inf), torch's default elsewhere."""
    fused = {"fused": True} if device is not None and torch.device(device).type == "cuda" else {}
    if spec.optimizer == "sgd":
        return torch.optim.SGD(net.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay,
                               **fused)
    cls = torch.optim.Adam if spec.optimizer == "adam" else torch.optim.AdamW
    return cls(net.parameters(), lr=spec.lr, weight_decay=spec.weight_decay, **fused)


def make_scheduler(optimizer, spec: RunSpec, total: int):
    """The learning-rate schedule over ``total`` iterations; None for stock's constant rate."""
    warm = min(spec.warmup, max(total - 1, 0))
    if spec.schedule == "onecycle" and total >= 4:
        # OneCycleLR needs at least one step up and one down: pct_start in [2/total, 1 - 2/total].
        pct = warm / total if warm else 0.1
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=spec.lr, total_steps=total,
                                                   pct_start=min(max(pct, 2 / total), 1 - 2 / total),
                                                   cycle_momentum=spec.optimizer == "sgd")
    if spec.schedule == "constant" and not warm:
        return None

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if spec.schedule == "cosine":
            t = (step - warm) / max(total - warm, 1)
            return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def clipped_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, params, max_norm) -> None:
    """The optimizer step of a backward pass made through ``scaler``: the gradients are unscaled
    first, so ``max_norm`` (None: no clipping) bounds their true global norm, not the scaled one."""
    if max_norm is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    scaler.step(optimizer)
    scaler.update()
