"""Per-class segmentation metrics for multi-label masks.

**Binarising.** Channel k of the output marks class k where it exceeds half of that
class's mask value: ``value_k / 2`` with DLStudio's 0/50(k+1) masks (the midpoint of
stock's display bands), 0.5 with masks normalised to {0, 1}. Classes are multi-label:
a pixel can be in several (PurdueShapes objects overlap), so each class is scored as its
own binary problem with a 2x2 confusion matrix (a bincount of ``2*target + pred``),
accumulated over the whole test set.

**Absent classes.** A class with no pixel in either prediction or target over the whole
set has IoU 0/0 and Dice 0/0. We report it as NaN ("not scored") and leave it out of
mIoU and mean Dice, rather than counting it as 0 (a failure that did not happen) or 1
(a success that was not tested). ``present`` says which classes were scored.
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence

import torch


def thresholds_for(mask_values: Sequence[float], normalized: bool) -> torch.Tensor:
    """Per-class thresholds (C,): 0.5 for {0,1} masks, else half of each mask value."""
    return torch.full((len(mask_values),), 0.5) if normalized else torch.tensor([v / 2.0 for v in mask_values])


def binarize(output: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) scores -> (B, C, H, W) bool: channel k above ``thresholds[k]``."""
    if output.dim() != 4 or output.shape[1] != thresholds.numel():
        raise ValueError(f"expected output (B, {thresholds.numel()}, H, W), got {tuple(output.shape)}")
    return output > thresholds.to(output.device, output.dtype).view(1, -1, 1, 1)


class MultiLabelConfusion:
    """Accumulates a 2x2 confusion matrix per class: ``update`` / ``compute`` / ``reset``."""

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        # mat[k] = [[tn, fp], [fn, tp]] as counts.
        self.mat = torch.zeros(self.num_classes, 2, 2, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target: (B, C, H, W) bool (target may be any dtype; > 0 is positive)."""
        if pred.shape != target.shape or pred.shape[1] != self.num_classes:
            raise ValueError(f"expected pred and target (B, {self.num_classes}, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}")
        code = (target > 0).long() * 2 + pred.long()              # (B, C, H, W) in 0..3
        code = code.transpose(0, 1).reshape(self.num_classes, -1)  # (C, N)
        offs = torch.arange(self.num_classes, device=code.device).view(-1, 1) * 4
        counts = torch.bincount((code + offs).flatten(), minlength=4 * self.num_classes)
        self.mat += counts.view(self.num_classes, 2, 2).cpu()

    def compute(self, class_names: Sequence[str] | None = None) -> Dict:
        m = self.mat.double()
        tn, fp, fn, tp = m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1]
        union = tp + fp + fn
        present = union > 0
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        iou = torch.where(present, tp / union.clamp(min=1), nan)
        dice = torch.where(present, 2 * tp / (2 * tp + fp + fn).clamp(min=1), nan)
        acc = (tp + tn) / m.sum(dim=(1, 2)).clamp(min=1)
        names = list(class_names) if class_names else [str(k) for k in range(self.num_classes)]
        return {
            "class_names": names,
            "iou": _floats(iou), "dice": _floats(dice), "pixel_accuracy": _floats(acc),
            "present": present.tolist(),
            "miou": _nanmean(iou), "mean_dice": _nanmean(dice), "mean_pixel_accuracy": float(acc.mean()),
            "confusion": self.mat.tolist(),
        }


def _floats(t: torch.Tensor) -> List[float]:
    return [float(v) for v in t]


def _nanmean(t: torch.Tensor) -> float:
    ok = ~torch.isnan(t)
    return float(t[ok].mean()) if ok.any() else math.nan


def format_table(metrics: Dict) -> str:
    """A small plain-text table of per-class IoU / Dice and the means."""
    lines = [f"{'class':<12} {'IoU':>7} {'Dice':>7} {'PixAcc':>7}"]
    for name, i, d, a in zip(metrics["class_names"], metrics["iou"], metrics["dice"], metrics["pixel_accuracy"]):
        lines.append(f"{name:<12} {i:>7.3f} {d:>7.3f} {a:>7.3f}")
    lines.append(f"{'mean':<12} {metrics['miou']:>7.3f} {metrics['mean_dice']:>7.3f} {metrics['mean_pixel_accuracy']:>7.3f}")
    return "\n".join(lines)
