"""Per-image mask quality against ground truth: IoU, boundary F1, completeness, FP/FN rates.

All functions take boolean masks of shape (H, W) or (C, H, W); a (C, H, W) stack is
scored by adding up its pixel and boundary counts over the channels (micro average),
which is how a class-matched SAM mask set is compared with mUNet's per-class masks.

- **IoU** = TP / (TP + FP + FN).
- **Completeness** (recall) = TP / (TP + FN): how much of the object was captured.
- **FP rate** = FP / (FP + TN): the share of background pixels wrongly marked.
- **FN rate** = FN / (TP + FN) = 1 - completeness: the share of object pixels missed.
- **Boundary F1** at tolerance ``tol`` pixels (edge accuracy): a boundary pixel is a mask
  pixel with a 4-neighbour outside the mask. Precision is the share of predicted boundary
  pixels lying within Chebyshev distance ``tol`` of a ground-truth boundary pixel, recall
  the converse, F1 their harmonic mean.

A score whose denominator is 0 (e.g. IoU with both masks empty) is NaN, "not scored",
and left out of means.
"""
from __future__ import annotations

import math
from typing import Dict

import torch
import torch.nn.functional as F

from .errors import UserError

DEFAULT_TOL = 2


def _stack(m) -> torch.Tensor:
    t = torch.as_tensor(m).bool()
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3:
        raise UserError(f"expected a (H, W) or (C, H, W) mask, got shape {tuple(t.shape)}")
    return t


def boundary(mask: torch.Tensor) -> torch.Tensor:
    """(C, H, W) bool -> boundary pixels: in the mask with a 4-neighbour outside it (image edge counts as outside)."""
    mask = _stack(mask)
    m = mask.float()[:, None]
    padded = F.pad(m, (1, 1, 1, 1), value=0.0)
    up, down = padded[..., :-2, 1:-1], padded[..., 2:, 1:-1]
    left, right = padded[..., 1:-1, :-2], padded[..., 1:-1, 2:]
    interior = (up > 0) & (down > 0) & (left > 0) & (right > 0)
    return (mask[:, None] & ~interior)[:, 0]


def _dilate(mask: torch.Tensor, tol: int) -> torch.Tensor:
    if tol <= 0:
        return mask
    return F.max_pool2d(mask.float()[:, None], 2 * tol + 1, stride=1, padding=tol)[:, 0] > 0


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def mask_scores(pred, target, tol: int = DEFAULT_TOL) -> Dict[str, float]:
    """IoU, boundary F1 (at ``tol`` px), completeness, FP and FN rates of ``pred`` against ``target``."""
    if tol < 0:
        raise UserError(f"boundary tolerance must be >= 0 pixels, got {tol}")
    p, t = _stack(pred), _stack(target)
    if p.shape != t.shape:
        raise UserError(f"expected pred and target of the same shape, got {tuple(p.shape)} and {tuple(t.shape)}")
    tp = float((p & t).sum())
    fp = float((p & ~t).sum())
    fn = float((~p & t).sum())
    tn = float((~p & ~t).sum())
    bp, bt = boundary(p), boundary(t)
    b_prec = _ratio(float((bp & _dilate(bt, tol)).sum()), float(bp.sum()))
    b_rec = _ratio(float((bt & _dilate(bp, tol)).sum()), float(bt.sum()))
    if bp.sum() == 0 and bt.sum() == 0:
        bf1 = math.nan
    elif bp.sum() == 0 or bt.sum() == 0:
        bf1 = 0.0
    else:
        bf1 = 0.0 if b_prec + b_rec == 0 else 2 * b_prec * b_rec / (b_prec + b_rec)
    return {"iou": _ratio(tp, tp + fp + fn), "boundary_f1": bf1, "completeness": _ratio(tp, tp + fn),
            "fp_rate": _ratio(fp, fp + tn), "fn_rate": _ratio(fn, tp + fn)}


def mean_scores(rows) -> Dict[str, float]:
    """Mean of each score over rows, NaNs left out."""
    keys = ["iou", "boundary_f1", "completeness", "fp_rate", "fn_rate"]
    out = {}
    for k in keys:
        vals = [r[k] for r in rows if r.get(k) is not None and not math.isnan(r[k])]
        out[k] = sum(vals) / len(vals) if vals else math.nan
    return out
