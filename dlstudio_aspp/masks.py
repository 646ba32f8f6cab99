"""The mask convention, at the bottom of the package: what a dataset mask holds and when a pixel
is a class. It imports nothing of the package but its errors, so any module may use it.

**Mask rule.** A dataset mask pixel is positive where it is above 0 (:func:`mask_truth`);
every module that compares masks calls that function.

**Label values.** Datasets hand out DLStudio's masks: channel k holds 0 or
``mask_values[k]`` (:func:`mask_values_for`: 50, 100, ... 250 for PurdueShapes' five
classes). The run card (:class:`~dlstudio_aspp.card.RunCard`) turns them into the
training target and, through its thresholds, :func:`binarize` turns an output back into
decisions.
"""
from __future__ import annotations

from typing import List

from .errors import UserError


def mask_truth(mask):
    """(..., H, W) dataset masks (0 or the class's value) -> bool: the one rule for "this pixel is the class"."""
    return mask > 0


def mask_values_for(num_classes: int) -> List[int]:
    """Channel k's mask value, ``250 * (k + 1) / C`` rounded: DLStudio's 50..250 for 5 classes."""
    if num_classes < 1:
        raise UserError(f"need at least one class, got {num_classes}")
    return [int(round(250 * (k + 1) / num_classes)) for k in range(num_classes)]


def binarize(output, thresholds):
    """(B, C, H, W) scores -> (B, C, H, W) bool: channel k above ``thresholds[k]`` (a (C,) tensor)."""
    if output.dim() != 4 or output.shape[1] != thresholds.numel():
        raise UserError(f"expected output (B, {thresholds.numel()}, H, W), got {tuple(output.shape)}")
    return output > thresholds.to(output.device, output.dtype).view(1, -1, 1, 1)
