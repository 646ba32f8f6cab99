import math

import numpy as np
import pytest

from dlstudio_aspp.mask_metrics import boundary, mask_scores, mean_scores


def square(n=10, at=(0, 0), side=4):
    m = np.zeros((n, n), bool)
    m[at[0]:at[0] + side, at[1]:at[1] + side] = True
    return m


def test_identical_masks():
    s = mask_scores(square(at=(2, 2)), square(at=(2, 2)))
    assert s == {"iou": 1.0, "boundary_f1": 1.0, "completeness": 1.0, "fp_rate": 0.0, "fn_rate": 0.0}


def test_shifted_square_hand_computed():
    gt, pred = square(at=(2, 2)), square(at=(2, 3))  # 4x4 shifted right by one: overlap 12
    s = mask_scores(pred, gt, tol=0)
    assert s["iou"] == pytest.approx(12 / 20)
    assert s["completeness"] == pytest.approx(12 / 16) and s["fn_rate"] == pytest.approx(4 / 16)
    assert s["fp_rate"] == pytest.approx(4 / 84)
    # boundaries: 12 px each; at tolerance 0 the shared ones are the top/bottom rows' middle
    # pixels (cols 3-5 of rows 2 and 5 -> 6 px) -> precision = recall = 6/12
    assert s["boundary_f1"] == pytest.approx(0.5)
    assert mask_scores(pred, gt, tol=1)["boundary_f1"] == 1.0  # a 1 px shift is within 1 px


def test_square_with_hole():
    gt = square(n=12, at=(2, 2), side=6)
    pred = gt.copy()
    pred[4:6, 4:6] = False  # a 2x2 hole
    s = mask_scores(pred, gt, tol=0)
    assert s["iou"] == pytest.approx(32 / 36) and s["completeness"] == pytest.approx(32 / 36)
    assert s["fp_rate"] == 0.0
    # predicted boundary: 20 outer + 4 around the hole... all outer ones match: precision 20/(20+8), recall 1
    bp = boundary(np.asarray(pred)[None]).sum().item()
    assert bp == 28
    assert s["boundary_f1"] == pytest.approx(2 * (20 / 28) * 1 / (20 / 28 + 1))


def test_empty_masks():
    empty = np.zeros((6, 6), bool)
    s = mask_scores(empty, empty)
    assert math.isnan(s["iou"]) and math.isnan(s["boundary_f1"]) and math.isnan(s["completeness"]) and s["fp_rate"] == 0.0
    s = mask_scores(empty, square(n=6, at=(1, 1), side=3))
    assert s["iou"] == 0.0 and s["boundary_f1"] == 0.0 and s["completeness"] == 0.0 and s["fn_rate"] == 1.0
    s = mask_scores(square(n=6, at=(1, 1), side=3), empty)
    assert s["iou"] == 0.0 and s["boundary_f1"] == 0.0 and s["fp_rate"] == pytest.approx(9 / 36) and math.isnan(s["fn_rate"])


def test_class_stack_is_micro_averaged_and_checked():
    gt = np.stack([square(at=(0, 0)), square(at=(5, 5))])
    pred = np.stack([square(at=(0, 0)), np.zeros((10, 10), bool)])
    assert mask_scores(pred, gt)["iou"] == pytest.approx(16 / 32)
    with pytest.raises(ValueError, match="same shape"):
        mask_scores(pred, gt[:1])
    with pytest.raises(ValueError, match=">= 0"):
        mask_scores(pred, gt, tol=-1)
    assert mean_scores([{"iou": 1.0, "boundary_f1": float("nan"), "completeness": 1, "fp_rate": 0, "fn_rate": 0},
                        {"iou": 0.0, "boundary_f1": 0.5, "completeness": 0, "fp_rate": 0, "fn_rate": 1}])["boundary_f1"] == 0.5
