import json

import pytest
import torch

from conftest import make_segmenter
from dlstudio_aspp.model import mUNetASPP

FILES = ("PurdueShapes5MultiObject-24-train.gz", "PurdueShapes5MultiObject-8-test.gz")


class Oracle(torch.nn.Module):
    """Returns the ground-truth mask of the image it is given: a perfect 'model'."""

    def __init__(self, dataset):
        super().__init__()
        self.lookup = {d["image"].sum().item(): d["mask_tensor"].float() for d in dataset}
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.stack([self.lookup[im.sum().item()] for im in x]) + self.w


def test_perfect_model_scores_one(synthetic_shapes, tmp_path):
    seg = make_segmenter(synthetic_shapes, tmp_path, *FILES)
    m = seg.run_code_for_testing_semantic_segmentation(Oracle(seg.test_dataloader.dataset), load_saved=False, progress=False)
    present = [k for k, p in enumerate(m["present"]) if p]
    assert m["miou"] == 1.0 and all(m["iou"][k] == 1.0 for k in present)
    assert m["num_images"] == 8


def test_end_to_end_after_tiny_training(synthetic_shapes, tmp_path):
    seg = make_segmenter(synthetic_shapes, tmp_path, *FILES)
    torch.manual_seed(0)
    net = mUNetASPP(depth=4)
    seg.run_code_for_training_for_semantic_segmentation(net, max_iters=3, seed=0, progress=False)
    m = seg.run_code_for_testing_semantic_segmentation(net, progress=False)
    saved = json.loads((tmp_path / "saved_model.metrics.json").read_text())
    assert saved["miou"] == m["miou"] and 0 <= m["miou"] <= 1
    assert saved["binarize"]["thresholds"] == [25.0, 50.0, 75.0, 100.0, 125.0]
    # the metrics match a direct recount with the documented rule
    net.load_state_dict(torch.load(tmp_path / "saved_model", weights_only=True))
    net.eval()
    tp = torch.zeros(5)
    union = torch.zeros(5)
    with torch.no_grad():
        for d in seg.test_dataloader:
            pred = net(d["image"]) > torch.tensor([25.0, 50, 75, 100, 125]).view(1, 5, 1, 1)
            tgt = d["mask_tensor"] > 0
            tp += (pred & tgt).sum(dim=(0, 2, 3))
            union += (pred | tgt).sum(dim=(0, 2, 3))
    for k in range(5):
        if union[k] > 0:
            assert abs(m["iou"][k] - (tp[k] / union[k]).item()) < 1e-6
    import matplotlib.pyplot as plt

    img = plt.imread(m["grid"])
    assert img.shape[0] > 200 and img.std() > 0.01  # drawn, not blank


def test_normalized_convention_is_used(synthetic_shapes, tmp_path):
    seg = make_segmenter(synthetic_shapes, tmp_path, *FILES)
    seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), max_iters=1, normalize_masks=True, progress=False)
    m = seg.run_code_for_testing_semantic_segmentation(mUNetASPP(depth=4), progress=False)
    assert m["binarize"]["normalized"] is True and m["binarize"]["thresholds"] == [0.5] * 5


def test_evaluation_leaves_the_model_trainable(synthetic_shapes, tmp_path):
    """Bug: evaluate() turned the caller's parameters into inference tensors; backward then failed."""
    seg = make_segmenter(synthetic_shapes, tmp_path, *FILES)
    torch.manual_seed(0)
    net = mUNetASPP(depth=4)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    seg.run_code_for_testing_semantic_segmentation(net, load_saved=False, progress=False)
    assert net.training and not any(p.is_inference() for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    net(torch.rand(2, 3, 64, 64)).mean().backward()  # raised "Inference tensors cannot be saved for backward"
    assert net.conv_in.weight.grad is not None


def test_bootstrap_interval_contains_the_miou(synthetic_shapes, tmp_path):
    seg = make_segmenter(synthetic_shapes, tmp_path, *FILES)
    torch.manual_seed(0)
    m = seg.run_code_for_testing_semantic_segmentation(mUNetASPP(depth=4), load_saved=False, progress=False)
    lo, hi = m["miou_ci95"]
    assert lo <= m["miou"] <= hi


@pytest.mark.slow
def test_compare_pairs_two_runs_like_the_grid_report(synthetic_shapes, tmp_path, capsys):
    """A one-seed grid, ASPP on and off: `compare` prints the same A − B as the report's comparison, with a paired
    bootstrap interval over the test images that contains it, and per class."""
    import json
    import re

    import numpy as np

    from conftest import SYN_FILES
    from dlstudio_aspp import cli
    from dlstudio_aspp.card import RunCard
    from dlstudio_aspp.compare import compare_runs
    from dlstudio_aspp.experiments import GridConfig, run_grid
    from dlstudio_aspp.report import make_report

    cfg = GridConfig.from_preset("smoke", data=synthetic_shapes, train_file=SYN_FILES[0], test_file=SYN_FILES[1],
                                 losses=["mse"], seeds=[0], max_iters=4, progress=False, cpu=True)
    on, off = run_grid(cfg, tmp_path / "g")
    report = make_report(tmp_path / "g").read_text()
    reported = re.search(r"\| mse: ASPP on − off \| 1 \| ([+-]\d\.\d{3}) \|", report).group(1)
    assert cli.main(["compare", str(on), str(off), "--cpu", "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "c.json").read_text())
    assert f"= {reported}, 95% paired bootstrap interval" in out and f"{result['difference']:+.3f}" == reported
    assert result["ci95"][0] <= result["difference"] <= result["ci95"][1] and result["num_images"] == 8
    assert [c["class"] for c in result["classes"]] == RunCard.load(on).class_names
    assert out.count("\n| ") == 1 + 5  # the header row and one row per class
    assert compare_runs(on, on)["ci95"] == [0.0, 0.0]  # a run against itself: every resample agrees
    RunCard.load(off).files.image_counts_file.unlink()  # an older run: scored again from its card, the same counts
    assert compare_runs(on, off)["ci95"] == result["ci95"]
    other = tmp_path / "other"
    assert cli.main(["run", "--data", synthetic_shapes, "--train-file", SYN_FILES[0], "--test-file", SYN_FILES[1],
                     "--test-subset", "4", "--max-iters", "1", "--depth", "4", "--cpu", "--no-progress", "--out",
                     str(other)]) == 0
    assert cli.main(["compare", str(on), str(other)]) == 2
    assert "scored on 8 test images and" in capsys.readouterr().err
    assert np.load(RunCard.load(other).files.image_counts_file).shape == (4, 5, 3)
