"""A validation split held out of training; the best weights by validation mIoU are the run's weights."""
import json

import pytest
import torch

from conftest import SYN_FILES, make_segmenter
from dlstudio_aspp import validation
from dlstudio_aspp.model import mUNetASPP
from dlstudio_aspp.validation import split_for_validation


def test_the_split_is_fixed_and_disjoint():
    data = list(range(50))
    train, val = split_for_validation(data, 0.2)
    again_train, again_val = split_for_validation(data, 0.2)
    assert len(val) == 10 and len(train) == 40 and set(train.indices).isdisjoint(val.indices)
    assert val.indices == again_val.indices  # the same held-out images for every run


def test_validation_never_overlaps_the_test_split(coco_tiny_3):
    """On real COCO photographs: the held-out images come from train2017 only."""
    from dlstudio_aspp.data.coco import COCOSegmentationDataset

    train = COCOSegmentationDataset(train_or_test="train", root=coco_tiny_3)
    test = COCOSegmentationDataset(train_or_test="test", root=coco_tiny_3)
    _, val = split_for_validation(train, 0.5)
    val_ids = {train.entries[i]["coco_id"] for i in val.indices}
    assert val_ids and val_ids.isdisjoint({e["coco_id"] for e in test.entries})


def test_the_best_weights_are_the_ones_saved_and_scored(synthetic_shapes, tmp_path, monkeypatch):
    scores = iter([0.2, 0.7, 0.4, 0.3])  # the best validation is the second
    states = []
    real = validation.Validator.run

    def run(self, net, iteration):
        states.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        with pytest.MonkeyPatch.context() as inner:  # the validation's score, for this call only
            inner.setattr("dlstudio_aspp.evaluation.evaluate", lambda *a, **k: {"miou": next(scores)})
            return real(self, net, iteration)

    monkeypatch.setattr(validation.Validator, "run", run)
    seg = make_segmenter(synthetic_shapes, tmp_path, *SYN_FILES)
    torch.manual_seed(0)
    h = seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), seed=0, max_iters=4, val_split=0.25,
                                                            val_every=1, progress=False)
    monkeypatch.undo()
    assert [it for it, _ in h["validation"]["history"]] == [1, 2, 3, 4]
    saved = torch.load(tmp_path / "saved_model", weights_only=True)
    assert all(torch.equal(saved[k], states[1][k]) for k in saved)
    last = torch.load(tmp_path / "saved_model.ckpt", weights_only=False)["last_model"]  # kept beside the best
    assert set(last) == set(saved) and all(torch.equal(last[k], states[3][k]) for k in last)
    assert not all(torch.equal(last[k], saved[k]) for k in last)
    card = json.loads((tmp_path / "saved_model.json").read_text())
    assert card["validation"]["best_iteration"] == 2 and card["validation"]["images"] == 6
    metrics = seg.run_code_for_testing_semantic_segmentation(mUNetASPP(depth=4), progress=False)
    assert metrics["num_images"] == 8  # the test split, scored once with the best weights


def test_dataset_statistics_leave_the_validation_images_out(synthetic_shapes, tmp_path):
    from dlstudio_aspp.data.open import input_stats

    seg = make_segmenter(synthetic_shapes, tmp_path, *SYN_FILES)
    seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), seed=0, max_iters=1, val_split=0.25,
                                                        normalize="dataset", progress=False)
    card = json.loads((tmp_path / "saved_model.json").read_text())
    train, _ = split_for_validation(seg.train_dataloader.dataset, 0.25)
    assert card["mean"] == input_stats("dataset", train)[0] != input_stats("dataset", seg.train_dataloader.dataset)[0]


def test_a_validation_split_of_few_images_warns():
    """Bug: --val-split 0.1 on 13 images chose the best weights on 1 image without a word."""
    with pytest.warns(UserWarning, match=r"--val-split 0.1 holds out 1 of 13 training images: .* on 1 image,"):
        split_for_validation(list(range(13)), 0.1)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        split_for_validation(list(range(200)), 0.1)  # 20 images: no warning


@pytest.mark.slow
def test_the_last_weights_tool_copies_a_run_with_its_last_weights(syn, tmp_path, monkeypatch, capsys):
    """tools/last_weights.py: the copy's weights are the checkpoint's last_model and its old scores are gone, so
    `compare` scores it afresh; the run itself is unchanged; a run with no last_model is one line."""
    import importlib.util
    from pathlib import Path

    from dlstudio_aspp import cli
    from dlstudio_aspp.card import RunCard

    spec = importlib.util.spec_from_file_location("last_weights", Path(__file__).parents[1] / "tools" / "last_weights.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    scores = iter([0.9, 0.1, 0.1, 0.1])  # validation keeps iteration 1 of 4
    real = validation.Validator.run

    def run(self, net, iteration):
        with pytest.MonkeyPatch.context() as inner:
            inner.setattr("dlstudio_aspp.evaluation.evaluate", lambda *a, **k: {"miou": next(scores)})
            return real(self, net, iteration)

    monkeypatch.setattr(validation.Validator, "run", run)
    out = tmp_path / "run"
    assert cli.main(["run", *syn, "--out", str(out), "--max-iters", "4", "--val-split", "0.25", "--val-every", "1"]) == 0
    monkeypatch.undo()
    last = torch.load(out / "saved_model.ckpt", weights_only=True)["last_model"]
    kept = torch.load(out / "saved_model", weights_only=True)
    assert not all(torch.equal(kept[k], last[k]) for k in kept)
    tool.main([str(out), str(tmp_path / "last")])
    copy = RunCard.load(tmp_path / "last")
    assert all(torch.equal(v, last[k]) for k, v in copy.load_model().state_dict().items())
    assert not copy.files.metrics_file.exists() and RunCard.load(out).files.metrics_file.exists()
    assert cli.main(["compare", str(tmp_path / "last"), str(out)]) == 0
    with pytest.raises(SystemExit, match="exists; name a new folder"):
        tool.save_last(out, tmp_path / "last")
    plain = tmp_path / "plain"  # no validation split: its weights are the last ones
    assert cli.main(["run", *syn, "--out", str(plain), "--max-iters", "2"]) == 0
    with pytest.raises(SystemExit, match="holds no last_model"):
        tool.save_last(plain, tmp_path / "again")
