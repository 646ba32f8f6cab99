import pytest

from dlstudio_aspp.report import best_and_worst, best_worst_lines, make_report, running_mean


def test_report_needs_runs(tmp_path):
    with pytest.raises(FileNotFoundError, match="experiments"):
        make_report(tmp_path)


def test_running_mean():
    assert running_mean([1, 3, 5, 7], 2).tolist() == [1, 2, 4, 6]
    assert running_mean([4.0], 50).tolist() == [4.0]


def _run(seed, losses, loss="mse", aspp=True):
    return {"seed": seed, "loss": loss, "aspp": aspp, "history": {"loss": losses}}


def test_best_and_worst_are_the_lowest_and_highest_final_running_loss():
    """Seed 2 ends lowest, seed 0 highest, though seed 0 starts lowest; a longer run is cut to the common length."""
    members = [_run(0, [0.1, 0.9, 0.9, 0.9]), _run(1, [0.5, 0.5, 0.5, 0.5, 5.0]), _run(2, [0.9, 0.2, 0.2, 0.2])]
    curves, best, worst = best_and_worst(members, window=2)
    assert curves.shape == (3, 4) and (best, worst) == (2, 0)
    assert curves[:, -1].tolist() == pytest.approx([0.9, 0.5, 0.2])
    lines = best_worst_lines(members + [_run(5, [1.0] * 4, aspp=False), _run(6, [2.0] * 4, aspp=False)])
    assert lines == ["- mse, ASPP on: best seed 2 (0.2), worst seed 0 (0.9)",
                     "- mse, ASPP off: best seed 5 (1), worst seed 6 (2)"]
