import math

import pytest

from dlstudio_aspp.stats import HELPS, HURTS, NONE, paired_interval


def test_interval_by_hand():
    # d = 0.1, 0.2, 0.3: mean 0.2, sd 0.1, t(0.975, 2) = 4.303, half-width 4.303 * 0.1 / sqrt(3) = 0.24844
    res = paired_interval([0.1, 0.2, 0.3])
    assert res["mean"] == pytest.approx(0.2)
    assert res["low"] == pytest.approx(0.2 - 0.248434, abs=1e-5) and res["high"] == pytest.approx(0.448434, abs=1e-5)
    assert res["verdict"] == NONE


def test_verdicts_follow_the_interval():
    assert paired_interval([0.10, 0.11, 0.12, 0.09])["verdict"] == HELPS
    assert paired_interval([-0.10, -0.11, -0.12, -0.09])["verdict"] == HURTS
    one = paired_interval([0.5])
    assert one["verdict"] == NONE and math.isnan(one["low"])
    assert paired_interval([0.05, 0.05])["verdict"] == HELPS  # no spread: an interval of width 0 above 0
