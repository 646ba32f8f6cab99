"""Segmentation losses, chosen by name or given as a callable.

On the network's raw output (what the homework compares): MSE (stock), Dice, Dice+MSE.
On logits (the modern recipes; targets {0, 1}): BCE-with-logits, soft Dice on
``sigmoid(output)``, and BCE+Dice. A loss on logits has ``on_logits = True``; the run
card reads it to choose the targets and the decision threshold.

Dice follows the steps the DLStudio users are given. For each sample b and channel c::

    num[b, c] = sum_hw pred * target
    den[b, c] = sum_hw pred * pred + sum_hw target * target
    dice[b, c] = (2 * num + smooth) / (den + smooth)     (smooth > 0)
    dice[b, c] = 2 * num / (den + eps)                   (smooth = 0: the homework formula)
    loss = mean_{b, c} (1 - dice)

**Empty channels.** Most PurdueShapes images lack some shapes. With ``smooth=0`` (the
exact homework formula) an empty target channel predicted as empty scores dice 0, so a
perfect prediction has loss > 0 and that channel carries no gradient. The default
``smooth=1.0`` adds 1 to numerator and denominator: empty/empty scores dice 1 (loss 0),
an empty target with a non-zero prediction scores ``1 / (sum pred^2 + 1)`` and pulls the
prediction towards 0, and a non-empty channel is barely changed (its sums are in the
thousands on DLStudio's 0..250 masks); a perfect prediction scores exactly 0. The loss
is never NaN: ``smooth`` (or ``eps`` when ``smooth=0``) keeps the denominator positive.

The squared denominator makes Dice invariant to scaling pred and target together, so it
works on DLStudio's 0/50(k+1) masks as well as on masks normalised to {0, 1}.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Union

import torch
from torch import nn
from torch.nn import functional as F

from .errors import UserError



def _check_shapes(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise UserError(f"expected pred and target of the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.dim() != 4:
        raise UserError(f"expected (B, C, H, W) tensors, got {pred.dim()} dimensions: {tuple(pred.shape)}")


def dice_per_channel(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6, smooth: float = 1.0) -> torch.Tensor:
    """Squared-denominator Dice coefficient per sample and channel, shape (B, C)."""
    _check_shapes(pred, target)
    target = target.to(pred.dtype)
    num = (pred * target).sum(dim=(2, 3))
    den = (pred * pred).sum(dim=(2, 3)) + (target * target).sum(dim=(2, 3))
    if smooth == 0:
        return 2.0 * num / (den + eps)  # the homework formula, exactly
    return (2.0 * num + smooth) / (den + smooth)


def dice_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6, smooth: float = 1.0) -> torch.Tensor:
    """Mean over samples and channels of ``1 - dice``.

    Shape:
        pred (B, C, H, W), target (B, C, H, W) -> scalar.

    Args:
        pred: network output (any real values).
        target: masks, either DLStudio's 0/50(k+1) values or {0, 1}.
        eps: keeps the denominator positive. Default 1e-6.
        smooth: added to numerator and denominator; 0 gives the exact homework
            formula. Default 1.0 (see the module docstring for why).

    Raises:
        ValueError: pred and target differ in shape, or are not 4-D; smooth < 0.

    Example:
        >>> p = torch.rand(2, 5, 8, 8, requires_grad=True)
        >>> dice_loss(p, (torch.rand(2, 5, 8, 8) > .5).float()).backward()
    """
    if smooth < 0:
        raise UserError(f"smooth must be >= 0, got {smooth}")
    return (1.0 - dice_per_channel(pred, target, eps, smooth)).mean()


class DiceLoss(nn.Module):
    """Module form of :func:`dice_loss`. Shape: pred, target (B, C, H, W) -> scalar."""

    def __init__(self, eps: float = 1e-6, smooth: float = 1.0) -> None:
        super().__init__()
        if smooth < 0:
            raise UserError(f"smooth must be >= 0, got {smooth}")
        self.eps, self.smooth = eps, smooth

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return dice_loss(pred, target, self.eps, self.smooth)


class MSELoss(nn.MSELoss):
    """``nn.MSELoss`` that checks shapes instead of broadcasting silently."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_shapes(pred, target)
        return super().forward(pred, target)


class DiceMSELoss(nn.Module):
    """``MSE + dice_scale * Dice``.

    MSE on DLStudio's masks is in the hundreds or thousands at first while Dice is
    bounded by about 1, so without a scale Dice barely moves the total.
    ``dice_scale='auto'`` measures both terms over the first ``auto_warmup`` batches
    and sets ``dice_scale = mean(MSE) / mean(Dice)`` so that both contribute equally at
    the start; the scale is then frozen (``scale_frozen``) and recorded.

    After every call ``last_components`` holds ``{'mse': ..., 'dice': ..., 'dice_scale': ...}``:
    the terms as detached 0-dim tensors (read by the training loop at its log points, so
    no step waits for the device) and the scale as a float. Only the ``auto_warmup``
    calibration batches read the terms at once.

    Shape:
        pred, target (B, C, H, W) -> scalar.

    Raises:
        ValueError: a negative or non-finite ``dice_scale``, or a shape mismatch.
    """

    def __init__(self, dice_scale: Union[float, str] = 1.0, eps: float = 1e-6, smooth: float = 1.0,
                 auto_warmup: int = 20) -> None:
        super().__init__()
        self.auto = dice_scale == "auto"
        if not self.auto:
            if isinstance(dice_scale, str) or not math.isfinite(float(dice_scale)) or float(dice_scale) < 0:
                raise UserError(f"dice_scale must be a number >= 0 or 'auto', got {dice_scale!r}")
        if auto_warmup < 1:
            raise UserError(f"auto_warmup must be >= 1, got {auto_warmup}")
        self.dice_scale = 1.0 if self.auto else float(dice_scale)
        self.mse, self.dice = MSELoss(), DiceLoss(eps, smooth)
        self.auto_warmup = auto_warmup
        self._sums = [0.0, 0.0, 0]
        self.last_components: Dict[str, Union[torch.Tensor, float]] = {}

    @property
    def scale_frozen(self) -> bool:
        return not self.auto or self._sums[2] >= self.auto_warmup

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mse, dice = self.mse(pred, target), self.dice(pred, target)
        if self.auto and self.training and not self.scale_frozen:
            self._sums[0] += float(mse.detach())
            self._sums[1] += float(dice.detach())
            self._sums[2] += 1
            self.dice_scale = self._sums[0] / max(self._sums[1], 1e-12)
        self.last_components = {"mse": mse.detach(), "dice": dice.detach(), "dice_scale": self.dice_scale}
        return mse + self.dice_scale * dice

    def extra_state(self) -> dict:
        """What a checkpoint needs to resume the auto scale exactly."""
        return {"dice_scale": self.dice_scale, "sums": list(self._sums)}

    def load_extra_state(self, state: dict) -> None:
        self.dice_scale = float(state["dice_scale"])
        self._sums = list(state["sums"])

    def extra_repr(self) -> str:
        return f"dice_scale={'auto' if self.auto else self.dice_scale}"


def dice_per_channel_batch(pred: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Squared-denominator Dice per channel with the sums taken over the whole batch, shape (C,)."""
    _check_shapes(pred, target)
    target = target.to(pred.dtype)
    num = (pred * target).sum(dim=(0, 2, 3))
    den = (pred * pred).sum(dim=(0, 2, 3)) + (target * target).sum(dim=(0, 2, 3))
    return (2.0 * num + smooth) / (den + smooth)


class LogitLoss(nn.Module):
    """Losses on logits against {0, 1} targets: ``bce_weight * BCE + dice_weight * soft Dice``.

    Soft Dice is the homework's squared-denominator Dice on ``sigmoid(logits)``, with
    its sums over the whole batch per channel (``smooth=1``): a batch where a shape is
    absent then does not pull that channel to all-zero (per-sample Dice does, through
    every image that lacks the shape), and the channel keeps its gradient.

    After every call ``last_components`` holds ``{'bce': ..., 'dice': ...}`` as detached
    0-dim tensors (no host sync in the loss, so a compiled step stays one graph).

    Shape:
        logits, target (B, C, H, W) -> scalar.
    """

    on_logits = True

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1.0) -> None:
        super().__init__()
        if bce_weight < 0 or dice_weight < 0 or bce_weight + dice_weight == 0:
            raise UserError(f"loss weights must be >= 0 and not both 0, got bce {bce_weight}, dice {dice_weight}")
        self.bce_weight, self.dice_weight, self.smooth = float(bce_weight), float(dice_weight), float(smooth)
        self.last_components: Dict[str, torch.Tensor] = {}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_shapes(logits, target)
        target = target.to(logits.dtype)
        total = logits.new_zeros(())
        parts = {}
        if self.bce_weight:
            bce = F.binary_cross_entropy_with_logits(logits, target)
            total = total + self.bce_weight * bce
            parts["bce"] = bce.detach()
        if self.dice_weight:
            dice = (1.0 - dice_per_channel_batch(torch.sigmoid(logits), target, self.smooth)).mean()
            total = total + self.dice_weight * dice
            parts["dice"] = dice.detach()
        self.last_components = parts
        return total

    def extra_repr(self) -> str:
        return f"bce_weight={self.bce_weight}, dice_weight={self.dice_weight}"


def get_loss(spec: Union[str, Callable, None] = "mse") -> Callable:
    """A loss from its name, or ``spec`` itself when it is a callable.

    Names are those of :data:`dlstudio_aspp.registry.LOSSES`: ``'mse'`` (stock), ``'dice'``,
    ``'dice+mse'`` (scale 1), ``'dice+mse:20'`` (any number >= 0), ``'dice+mse:auto'``; on logits
    ``'bce'``, ``'sigmoid-dice'``, ``'bce+dice'``. ``None`` means ``'mse'``.

    Raises:
        ValueError: an unknown name; the message lists the valid ones.
    """
    if spec is None:
        spec = "mse"
    if callable(spec) and not isinstance(spec, str):
        return spec
    if not isinstance(spec, str):
        raise UserError(f"loss must be a name or a callable (output, target) -> scalar, got {type(spec).__name__}")
    from .registry import build_loss

    return build_loss(spec)
