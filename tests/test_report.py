import pytest

from dlstudio_aspp.grid_plots import best_and_worst, best_worst_lines, running_mean
from dlstudio_aspp.report import make_report


def test_report_needs_runs(tmp_path):
    with pytest.raises(FileNotFoundError, match="experiments"):
        make_report(tmp_path)


def test_running_mean():
    assert running_mean([1, 3, 5, 7], 2).tolist() == [1, 2, 4, 6]
    assert running_mean([4.0], 50).tolist() == [4.0]


def _run(seed, losses, loss="mse", aspp=True):
    return {"seed": seed, "loss": loss, "label": loss, "aspp": aspp, "history": {"loss": losses}}


def test_best_and_worst_are_the_lowest_and_highest_final_running_loss():
    """Seed 2 ends lowest, seed 0 highest, though seed 0 starts lowest; a longer run is cut to the common length."""
    members = [_run(0, [0.1, 0.9, 0.9, 0.9]), _run(1, [0.5, 0.5, 0.5, 0.5, 5.0]), _run(2, [0.9, 0.2, 0.2, 0.2])]
    curves, best, worst = best_and_worst(members, window=2)
    assert curves.shape == (3, 4) and (best, worst) == (2, 0)
    assert curves[:, -1].tolist() == pytest.approx([0.9, 0.5, 0.2])
    lines = best_worst_lines(members + [_run(5, [1.0] * 4, aspp=False), _run(6, [2.0] * 4, aspp=False)])
    assert lines == ["- mse, ASPP on: best seed 2 (0.2), worst seed 0 (0.9)",
                     "- mse, ASPP off: best seed 5 (1), worst seed 6 (2)"]


def test_the_qualitative_figure_carries_the_class_colour_legend(tmp_path, synthetic_shapes):
    import numpy as np
    from PIL import Image

    from conftest import SYN_FILES
    from dlstudio_aspp.evaluation import class_colours
    from dlstudio_aspp.experiments import GridConfig, run_grid
    from dlstudio_aspp.report import make_report

    cfg = GridConfig.from_preset("smoke", data=synthetic_shapes, train_file=SYN_FILES[0], test_file=SYN_FILES[1], losses=["mse"],
                                 aspp=[True], seeds=[0], max_iters=1, progress=False, cpu=True)
    run_grid(cfg, tmp_path)
    make_report(tmp_path)
    figure = np.asarray(Image.open(tmp_path / "figures" / "qualitative.png").convert("RGB")).astype(int)
    bottom = figure[-int(figure.shape[0] * 0.08):]  # under the panels: the legend's swatches
    for colour in class_colours(5):
        assert (np.abs(bottom - np.array(colour)).max(-1) <= 3).any(), colour
