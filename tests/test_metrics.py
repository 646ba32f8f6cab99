import math

import numpy as np

import pytest
import torch

from dlstudio_aspp.card import RunCard
from dlstudio_aspp.masks import binarize
from dlstudio_aspp.metrics import MultiLabelConfusion, format_table


def masks(*grids):
    return torch.tensor(grids, dtype=torch.bool).unsqueeze(0)  # (1, C, H, W)


def test_hand_built_iou_and_dice():
    # class 0: pred 2 px, target 3 px, overlap 2 -> IoU 2/3, Dice 4/5
    # class 1: perfect; class 2: absent from both -> NaN, out of the means
    pred = masks([[1, 1], [0, 0]], [[0, 1], [0, 0]], [[0, 0], [0, 0]])
    tgt = masks([[1, 1], [1, 0]], [[0, 1], [0, 0]], [[0, 0], [0, 0]])
    c = MultiLabelConfusion(3)
    c.update(pred, tgt)
    m = c.compute(["a", "b", "c"])
    assert m["iou"][0] == pytest.approx(2 / 3) and m["dice"][0] == pytest.approx(4 / 5)
    assert m["iou"][1] == 1.0 and m["dice"][1] == 1.0
    assert math.isnan(m["iou"][2]) and m["present"] == [True, True, False]
    assert m["miou"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["pixel_accuracy"][0] == pytest.approx(3 / 4)
    assert "mean" in format_table(m)


def test_disjoint_scores_zero_and_accumulates():
    c = MultiLabelConfusion(1)
    c.update(masks([[1, 0], [0, 0]]), masks([[0, 0], [0, 1]]))
    assert c.compute()["iou"] == [0.0]
    c.update(masks([[1, 0], [0, 0]]), masks([[1, 0], [0, 0]]))
    assert c.compute()["iou"] == [pytest.approx(1 / 3)]  # tp 1, fp 1, fn 1 over both batches
    c.reset()
    assert math.isnan(c.compute()["miou"])


def test_binarize_thresholds():
    thr = RunCard("w", mask_values=[50, 100]).thresholds()
    assert thr.tolist() == [25.0, 50.0]
    out = torch.tensor([[[[26.0]], [[49.0]]]])
    assert binarize(out, thr).flatten().tolist() == [True, False]
    assert RunCard("w", mask_values=[50, 100], normalize_masks=True).thresholds().tolist() == [0.5, 0.5]
    assert RunCard("w", mask_values=[50, 100], output="logits").thresholds().tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        binarize(torch.zeros(1, 3, 2, 2), thr)


def test_multilabel_overlap_counts_for_both_classes():
    pred = masks([[1]], [[1]])
    c = MultiLabelConfusion(2)
    c.update(pred, pred)
    assert c.compute()["iou"] == [1.0, 1.0]


def test_shape_errors():
    with pytest.raises(ValueError, match="expected pred and target"):
        MultiLabelConfusion(2).update(torch.zeros(1, 2, 2, 2, dtype=torch.bool), torch.zeros(1, 3, 2, 2))


def test_update_refuses_raw_scores():
    """Bug: a raw score of 5.0 was counted as a prediction of another class."""
    c = MultiLabelConfusion(2)
    with pytest.raises(ValueError, match="bool tensor"):
        c.update(torch.full((1, 2, 2, 2), 5.0), torch.zeros(1, 2, 2, 2))


def test_bootstrap_by_hand():
    from dlstudio_aspp.metrics import bootstrap_miou, miou_from_counts

    counts = np.array([[[3, 1, 0]], [[1, 0, 1]]])  # two images, one class: tp, fp, fn
    assert miou_from_counts(counts) == pytest.approx(4 / 6)
    lo, hi = bootstrap_miou(counts, n_boot=400)
    # resamples are {img0, img0} 3/4, {img1, img1} 1/2, mixed 4/6
    assert lo == pytest.approx(0.5) and hi == pytest.approx(0.75)


def test_a_one_class_sets_class_and_mean_intervals_agree():
    """Bug: a report of one class gave its IoU one interval and the mean (the same number) another,
    because the per-class bootstrap drew other resamples; `compare` did the same for a difference."""
    from dlstudio_aspp.metrics import bootstrap_miou, bootstrap_per_class

    rng = np.random.default_rng(3)
    a, b = (rng.integers(0, 50, size=(40, 1, 3)) for _ in range(2))  # 40 images, one class
    assert bootstrap_per_class(a)["iou_ci95"][0] == pytest.approx(bootstrap_miou(a))
    assert bootstrap_per_class(a, minus=b)["iou_ci95"][0] == pytest.approx(bootstrap_miou(a, minus=b))
