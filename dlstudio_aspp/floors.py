"""The IoU a model must beat: two predictors that never look at the image.

* **all**: every pixel is the class. Its IoU is the share of the test pixels that are
  the class.
* **fixed mask**: one mask for every image, the mean of the training masks thresholded
  (the threshold that scores best on the training masks themselves). It captures where
  the class usually is (people stand in the middle of photographs of people).

Both are scored as the model is (:class:`~dlstudio_aspp.metrics.MultiLabelConfusion`,
pooled over the test set), per class. A model below the fixed mask has learnt nothing
that a prior over positions does not give.
"""
from __future__ import annotations

from typing import Dict, List

import torch

from .masks import mask_truth

#: Thresholds tried on the mean training mask.
THRESHOLDS = torch.arange(1, 20) / 20


def _masks(dataset, batch_size: int = 16):
    """(B, C, H, W) bool truth masks of ``dataset``, batch by batch."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    for batch in loader:
        yield mask_truth(batch["mask_tensor"])


def mean_mask(dataset) -> torch.Tensor:
    """(C, H, W): the fraction of ``dataset``'s images in which each pixel is each class."""
    total, n = 0, 0
    for t in _masks(dataset):
        total = total + t.sum(0, dtype=torch.float64)
        n += t.shape[0]
    return (total / max(n, 1)).float()


def pooled_iou(preds: torch.Tensor, dataset) -> torch.Tensor:
    """(P, C) IoU of each of the (P, C, H, W) bool fixed predictions, each used for every image of
    ``dataset``; counts pooled over the set as the model's metrics are (NaN where a class is absent)."""
    counts = torch.zeros(preds.shape[0], preds.shape[1], 3, dtype=torch.float64)  # tp, fp, fn
    for t in _masks(dataset):
        p, t = preds[:, None], t[None]                                          # (P, 1, C, H, W), (1, B, C, H, W)
        counts += torch.stack([(p & t).sum((1, 3, 4)), (p & ~t).sum((1, 3, 4)), (~p & t).sum((1, 3, 4))], -1)
    union = counts.sum(-1)
    return torch.where(union > 0, counts[..., 0] / union.clamp(min=1), torch.nan)


def floors(train_set, test_set) -> Dict[str, List[float]]:
    """Per class on ``test_set``: ``all`` (every pixel the class), ``fixed`` (the thresholded mean of
    ``train_set``'s masks) and ``fixed_threshold`` (chosen on the training masks)."""
    mean = mean_mask(train_set)                                          # (C, H, W)
    candidates = mean[None] > THRESHOLDS.view(-1, 1, 1, 1)               # (T, C, H, W)
    best = torch.nan_to_num(pooled_iou(candidates, train_set), nan=-1).argmax(0)  # (C,) per class
    fixed = candidates[best, torch.arange(mean.shape[0])]                 # (C, H, W)
    test = pooled_iou(torch.stack([torch.ones_like(fixed), fixed]), test_set)
    return {"all": test[0].tolist(), "fixed": test[1].tolist(), "fixed_threshold": THRESHOLDS[best].tolist()}


def floors_rows(metrics: dict) -> List[str]:
    """A markdown table: per class, the two floors, the model's IoU and its margin over the fixed mask."""
    f = metrics["floors"]
    rows = ["| class | every pixel the class | fixed mask (threshold) | this model | model - fixed mask |",
            "|---|---|---|---|---|"]
    for k, name in enumerate(metrics["class_names"]):
        iou = metrics["iou"][k]
        rows.append(f"| {name} | {f['all'][k]:.3f} | {f['fixed'][k]:.3f} ({f['fixed_threshold'][k]:.2f}) | {iou:.3f} | "
                    f"{iou - f['fixed'][k]:+.3f} |")
    return rows


FLOORS_NOTE = ("Floors: what two predictors that never look at the image score on the same test images, pooled as "
               "the model is. 'Every pixel the class' is the class's share of the test pixels; the fixed mask is the "
               "mean of the training masks, thresholded where it fits the training masks best. A model at or below "
               "the fixed mask has learnt no more than where the class usually is.")
