"""ASPP branch by branch: what each branch costs when it is switched off, and how much of it reads padding.

A branch is switched off by zeroing its output before the projection (:func:`without_branches`), as
DeepLab's ablations do: the projection and everything after it keep their trained weights. The change in
test mIoU and in each class's IoU against the intact network gets a paired bootstrap interval over the
test images (:func:`~dlstudio_aspp.metrics.bootstrap_miou` with ``minus``, the resampling of every interval
in the reports).

:func:`padding_share` is the geometry alone: the share of a dilated 3x3 branch's taps, over every output
position of an (h, w) bottleneck, that fall outside the map and so read the zero padding. At an 8x8
bottleneck a rate of 6 reads padding with three taps in four.
"""
from __future__ import annotations

import copy
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .aspp import ASPP, ASPPConv, ASPPPooling
from .metrics import bootstrap_miou, bootstrap_per_class, class_scores, miou_from_counts


def branch_names(aspp: ASPP) -> List[str]:
    """The branches of ``aspp`` in the order of its ``convs``: '1x1', 'rate 2', ..., 'image pool'."""
    names = []
    for branch in aspp.convs:
        if isinstance(branch, ASPPConv):
            names.append(f"rate {branch[0].dilation[0]}")
        elif isinstance(branch, ASPPPooling):
            names.append("image pool")
        else:
            names.append("1x1")
    return names


def padding_share(size: Tuple[int, int], rate: int | None) -> float:
    """Share of a 3x3 conv's taps (dilation = padding = ``rate``) that fall on padding, over every output
    position of a ``size`` = (h, w) map; 0 for ``rate=None`` (a 1x1 conv or the image pool)."""
    if rate is None:
        return 0.0
    inside = 1.0
    for n in size:  # taps at offsets -rate, 0, +rate; an offset o lands inside at n - |o| positions
        inside *= sum(max(0, n - abs(o)) for o in (-rate, 0, rate)) / (3 * n)
    return 1.0 - inside


def branch_rates(aspp: ASPP) -> List[int | None]:
    """Each branch's dilation rate, None for the 1x1 and the image-pool branches."""
    return [b[0].dilation[0] if isinstance(b, ASPPConv) else None for b in aspp.convs]


class ZeroBranch(nn.Module):
    """Stands in for a branch: (B, C_in, h, w) -> zeros (B, channels, h, w)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], self.channels, *x.shape[-2:])


def without_branches(model: nn.Module, off: Sequence[int]) -> nn.Module:
    """A copy of ``model`` (an mUNetASPP with ASPP on) whose ASPP branches ``off`` (indices into
    ``model.aspp.convs``) output zeros; ``model`` is left as it is."""
    net = copy.deepcopy(model)
    aspp = net.aspp
    width = aspp.project[0].in_channels // len(aspp.convs)
    for k in off:
        aspp.convs[k] = ZeroBranch(width)
    return net


def ablate(model: nn.Module, loader, card, device, progress=None) -> Dict:
    """Test metrics of ``model`` intact and with each ASPP branch off, on every image of ``loader``.

    Returns ``{'num_images', 'miou', 'iou', 'branches': [{'branch', 'rate', 'miou', 'difference', 'ci95',
    'classes': [{'class', 'difference', 'ci95'}]}]}``: each difference is (branch off) - (intact), with its
    95% paired bootstrap interval over the images; after the branches one by one, 'all rates' has every
    dilated branch off at once (when there are two or more). ``progress`` (a tqdm bar or None) is advanced once per
    network scored."""
    from .evaluation import evaluate

    def counts(net) -> np.ndarray:
        out = evaluate(net, loader, card, device, progress=False)["image_counts"]
        if progress is not None:
            progress.update(1)
        return out

    intact = counts(model)
    names, rates = branch_names(model.aspp), branch_rates(model.aspp)
    result = {"num_images": int(intact.shape[0]), "miou": float(miou_from_counts(intact)),
              "iou": [float(v) for v in class_scores(intact)[0]], "branches": []}
    dilated = [k for k, r in enumerate(rates) if r is not None]
    cases = [([k], name, rate) for k, (name, rate) in enumerate(zip(names, rates))]
    if len(dilated) > 1:
        cases.append((dilated, "all rates", None))
    for off_idx, name, rate in cases:
        off = counts(without_branches(model, off_idx))
        diff = class_scores(off)[0] - class_scores(intact)[0]
        per_class = bootstrap_per_class(off, minus=intact)["iou_ci95"]
        result["branches"].append({
            "branch": name, "rate": rate, "miou": float(miou_from_counts(off)),
            "difference": float(miou_from_counts(off) - miou_from_counts(intact)),
            "ci95": bootstrap_miou(off, minus=intact),
            "classes": [{"class": c, "difference": float(d), "ci95": ci}
                        for c, d, ci in zip(card.class_names, diff, per_class)]})
    return result
