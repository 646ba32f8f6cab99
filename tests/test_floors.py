"""The floors: every pixel the class, and the best thresholded mean of the training masks."""
import math

import pytest
import torch

from dlstudio_aspp.floors import floors, floors_rows, mean_mask, pooled_iou


def _set(masks):
    """A dataset of {'mask_tensor': (C, H, W)} items from a list of (C, H, W) 0/1 masks (class value 50)."""
    return [{"mask_tensor": m.to(torch.uint8) * 50} for m in masks]


def _block(rows, cols, size=4, channels=1, k=0):
    m = torch.zeros(channels, size, size, dtype=torch.bool)
    m[k, rows, cols] = True
    return m


def test_mean_mask_and_pooled_iou_by_hand():
    train = _set([_block(slice(0, 2), slice(0, 2)), _block(slice(0, 2), slice(0, 4))])
    assert torch.equal(mean_mask(train)[0, 0], torch.tensor([1.0, 1.0, 0.5, 0.5]))
    pred = _block(slice(0, 2), slice(0, 2))[None]                  # (1, 1, 4, 4): the top-left 2x2
    # tp 4 + 4, fp 0, fn 0 + 4 over the two images: 8 / 12
    assert pooled_iou(pred, train)[0, 0].item() == pytest.approx(8 / 12)


def test_floors_choose_the_threshold_on_train_and_score_on_test():
    train = _set([_block(slice(0, 2), slice(0, 2))] * 3 + [_block(slice(0, 4), slice(0, 4))])  # mean 1 top-left, .25 else
    test = _set([_block(slice(0, 2), slice(0, 2)), _block(slice(2, 4), slice(2, 4))])
    f = floors(train, test)
    assert f["all"] == [pytest.approx(8 / 32)]                      # 8 of the 32 test pixels are the class
    assert f["fixed_threshold"][0] >= 0.25                          # the top-left 2x2 fits train best (IoU 16/28)
    assert f["fixed"] == [pytest.approx(4 / 12)]                    # test: tp 4, fp 4, fn 4


def test_an_absent_class_and_the_rows_that_compare_the_model():
    train = test = _set([_block(slice(0, 2), slice(0, 2), channels=2)])
    f = floors(train, test)
    assert f["all"][1] == 0.0 and math.isnan(f["fixed"][1])  # the fixed mask never marks it: 0/0, not scored
    assert f["fixed"][0] == pytest.approx(1.0)
    rows = floors_rows({"floors": {"all": [0.25], "fixed": [0.33], "fixed_threshold": [0.3]}, "class_names": ["person"],
                        "iou": [0.5]})
    assert rows[-1] == "| person | 0.250 | 0.330 (0.30) | 0.500 | +0.170 |"
