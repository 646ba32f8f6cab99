"""Per-class segmentation metrics for multi-label masks.

**Binarising.** Channel k of the output marks class k where it exceeds threshold k;
the thresholds come from the run card (:meth:`dlstudio_aspp.card.RunCard.thresholds`),
which owns the mask convention. Classes are multi-label:
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
import warnings
from typing import Dict, List, Sequence

import numpy as np
import torch

from .errors import UserError
from .masks import mask_truth


class MultiLabelConfusion:
    """Accumulates a 2x2 confusion matrix per class: ``update`` / ``compute`` / ``reset``."""

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise UserError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        # mat[k] = [[tn, fp], [fn, tp]] as counts.
        self.mat = torch.zeros(self.num_classes, 2, 2, dtype=torch.int64)
        self.per_image: List[torch.Tensor] = []  # (B, C, 3) tp, fp, fn of every image, for bootstrap intervals

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target: (B, C, H, W) bool (target may be any dtype: a dataset mask, read by :func:`mask_truth`)."""
        if pred.dtype != torch.bool:
            raise UserError(f"pred must be a bool tensor of decisions (binarize the output first), got {pred.dtype}")
        if pred.shape != target.shape or pred.shape[1] != self.num_classes:
            raise UserError(f"expected pred and target (B, {self.num_classes}, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}")
        t = mask_truth(target)
        self.per_image.append(torch.stack([(pred & t).sum((2, 3)), (pred & ~t).sum((2, 3)), (~pred & t).sum((2, 3))],
                                          dim=-1).cpu())
        code = t.long() * 2 + pred.long()                           # (B, C, H, W) in 0..3
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
            "miou_ci95": bootstrap_miou(self.image_counts()) if self.per_image else [math.nan, math.nan],
            **bootstrap_per_class(self.image_counts()),
        }

    def image_counts(self) -> np.ndarray:
        """(N, C, 3) int64: tp, fp, fn of each image seen so far."""
        return torch.cat(self.per_image).numpy() if self.per_image else np.zeros((0, self.num_classes, 3), np.int64)


def miou_from_counts(counts: np.ndarray) -> np.ndarray:
    """mIoU of summed (..., N, C, 3) tp/fp/fn counts, classes with no pixel left out (NaN-aware)."""
    tp, fp, fn = (counts.sum(-3)[..., k].astype(np.float64) for k in range(3))
    union = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
        return np.nanmean(iou, axis=-1)


def _same_images(counts: np.ndarray, minus) -> None:
    if minus is not None and minus.shape != counts.shape:
        raise UserError(f"a paired comparison needs the same test images and classes in both runs, got per-image "
                        f"counts of shape {counts.shape} and {minus.shape}")


def bootstrap_miou(counts: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                   minus: np.ndarray | None = None) -> List[float]:
    """Percentile bootstrap interval of the mIoU over test images.

    Images are resampled with replacement ``n_boot`` times; each resample's mIoU is
    computed from its summed counts, as the set's mIoU is. Returns [low, high]. With
    ``minus`` (another run's (N, C, 3) counts on the same images) it is the interval of
    mIoU(counts) - mIoU(minus), both taken on the same resamples: a paired bootstrap.
    """
    _same_images(counts, minus)
    n = counts.shape[0]
    if n == 0:
        return [math.nan, math.nan]
    rng = np.random.default_rng(seed)
    totals = np.empty(n_boot)
    for b in range(0, n_boot, 100):  # 100 resamples at a time keeps memory small
        idx = rng.integers(0, n, size=(min(100, n_boot - b), n))
        totals[b:b + idx.shape[0]] = miou_from_counts(counts[idx]) - (0 if minus is None else miou_from_counts(minus[idx]))
    lo, hi = np.nanpercentile(totals, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return [float(lo), float(hi)]


def class_scores(counts: np.ndarray):
    """(..., N, C, 3) counts -> (IoU, Dice) of each class over the N images, NaN where a class is never seen."""
    tp, fp, fn = (counts.sum(-3)[..., k].astype(np.float64) for k in range(3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(tp + fp + fn > 0, tp / np.maximum(tp + fp + fn, 1), np.nan),
                np.where(tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), np.nan))


def bootstrap_per_class(counts: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                        minus: np.ndarray | None = None) -> Dict:
    """Percentile bootstrap intervals over test images of each class's IoU and Dice:
    ``{'iou_ci95': [[low, high], ...], 'dice_ci95': [...]}`` (NaN for a class never seen); with
    ``minus``, of each class's difference from that run on the same resamples (paired). The
    resamples are :func:`bootstrap_miou`'s at the same ``seed``, so a one-class set's class and
    mean intervals agree."""
    _same_images(counts, minus)
    n, c = counts.shape[0], counts.shape[1] if counts.ndim == 3 else 0
    if n == 0:
        return {"iou_ci95": [[math.nan, math.nan]] * c, "dice_ci95": [[math.nan, math.nan]] * c}
    rng = np.random.default_rng(seed)
    iou, dice = np.empty((n_boot, c)), np.empty((n_boot, c))
    for b in range(0, n_boot, 100):
        idx = rng.integers(0, n, size=(min(100, n_boot - b), n))
        i, d = class_scores(counts[idx])
        if minus is not None:
            i0, d0 = class_scores(minus[idx])
            i, d = i - i0, d - d0
        iou[b:b + idx.shape[0]], dice[b:b + idx.shape[0]] = i, d
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: a class absent from every image
        return {"iou_ci95": np.nanpercentile(iou, q, axis=0).T.tolist(), "dice_ci95": np.nanpercentile(dice, q, axis=0).T.tolist()}


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
