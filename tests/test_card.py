import json
from pathlib import Path

import pytest
import torch

from conftest import make_segmenter
from dlstudio_aspp.card import RunCard
from dlstudio_aspp.data.wrappers import dataset_labels
from dlstudio_aspp.masks import mask_values_for
from dlstudio_aspp.model import mUNetASPP

FILES = ("PurdueShapes5MultiObject-24-train.gz", "PurdueShapes5MultiObject-8-test.gz")


def test_mask_convention_in_one_place():
    assert mask_values_for(5) == [50, 100, 150, 200, 250] and mask_values_for(3) == [83, 167, 250]
    mask = torch.tensor([[[[0, 50]], [[100, 0]]]], dtype=torch.uint8)
    stock = RunCard("w", mask_values=[50, 100])
    assert stock.target(mask).tolist() == [[[[0.0, 50.0]], [[100.0, 0.0]]]]
    assert stock.thresholds().tolist() == [25.0, 50.0]
    for card in (RunCard("w", mask_values=[50, 100], normalize_masks=True), RunCard("w", mask_values=[50, 100], output="logits")):
        assert card.target(mask).tolist() == [[[[0.0, 1.0]], [[1.0, 0.0]]]]
    assert RunCard("w", input_scale=1 / 255).prepare_input(torch.full((1, 3, 8, 8), 255.0)).max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="output must be one of raw, logits"):
        RunCard("w", output="probs")


def test_layout_and_round_trip(tmp_path):
    card = RunCard(tmp_path / "saved_model", model=mUNetASPP(depth=4, head="dense").config, class_names=list("abcde"),
                   output="logits", input_scale=0.5, spec={"recipe": "modern", "loss": "bce+dice"}, iterations=3)
    assert card.files.checkpoint.name == "saved_model.ckpt" and card.files.metrics_file.name == "saved_model.metrics.json"
    card.save_weights(card.build_model())
    back = RunCard.load(tmp_path)
    assert back == card and back.load_model().head == "dense"
    assert json.loads(card.files.file.read_text())["thresholds"] == [0.0] * 5
    assert back.recipe == "modern" and back.iterations == 3


def test_the_card_says_why_for_each_recipe_value_kept(tmp_path):
    from dlstudio_aspp.spec import RECIPE_WHY, RunSpec

    spec = RunSpec.build("coco", lr=3e-3).to_json()
    card = RunCard(tmp_path / "saved_model", model=mUNetASPP(depth=4, head="dense").config, spec=spec)
    why = json.loads(json.dumps(card.to_json()))["why"]
    assert why["max_iters"] == RECIPE_WHY["coco"]["max_iters"] and "lr" not in why  # --lr 3e-3 is the user's
    assert set(why) == set(RECIPE_WHY["coco"]) - {"lr", "val_every"}  # --val-every matters only with a split
    on = RunCard(tmp_path / "v", spec=RunSpec.build("coco", val_split=0.1).to_json()).why()
    assert "val_every" in on and "val_split" not in on  # the split is the user's; the recipe's interval is kept
    assert RunCard(tmp_path / "w", spec={"recipe": "modern"}).why() == {}


def test_a_version_2_card_still_loads(tmp_path):
    card = RunCard(tmp_path / "saved_model", model=mUNetASPP(depth=4).config)
    data = card.to_json()
    data.pop("spec")
    data.update(version=2, recipe="modern", train={"loss": "bce+dice", "subset": None})
    card.files.file.write_text(json.dumps(data))
    assert RunCard.load(tmp_path).spec == {"loss": "bce+dice", "subset": None, "recipe": "modern"}


def test_labels_from_a_subset(synthetic_shapes, tmp_path):
    seg = make_segmenter(synthetic_shapes, tmp_path, *FILES)
    sub = torch.utils.data.Subset(seg.train_dataloader.dataset, range(3))
    assert dataset_labels(sub) == (["rectangle", "triangle", "disk", "oval", "star"], [50, 100, 150, 200, 250])


def test_corrupt_card_and_mismatched_weights_name_the_problem(synthetic_shapes, tmp_path):
    seg = make_segmenter(synthetic_shapes, tmp_path, *FILES)
    seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), max_iters=1, progress=False)
    card = RunCard.load(tmp_path)
    torch.save(mUNetASPP(depth=8).state_dict(), tmp_path / "saved_model")
    with pytest.raises(ValueError, match="do not fit the model in saved_model.json: .*depth or skip_connections differ"):
        card.load_model()
    torch.save(mUNetASPP(depth=4, aspp=False).state_dict(), tmp_path / "saved_model")
    with pytest.raises(ValueError, match="'aspp.* is missing .*ASPP on/off"):
        card.load_model()
    torch.save(mUNetASPP(depth=4, head="dense").state_dict(), tmp_path / "saved_model")
    with pytest.raises(ValueError, match="conv_out.weight' has shape .*output layer"):
        card.load_model()
    (tmp_path / "saved_model.json").write_text("{broken")
    with pytest.raises(ValueError, match=r"saved_model\.json is not valid JSON"):
        RunCard.load(tmp_path)


def test_num_classes_must_match_the_data(synthetic_shapes, tmp_path):
    seg = make_segmenter(synthetic_shapes, tmp_path, *FILES)
    with pytest.raises(ValueError, match="model has 3 output channels but the data has 5 classes; .*num_classes=5"):
        seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4, num_classes=3), progress=False)


def test_a_card_whose_weights_were_replaced_is_refused(tmp_path):
    """Bug: with a failure between the weights' and the card's renames, the old card loaded the new weights."""
    import torch

    card = RunCard(tmp_path / "saved_model", model=mUNetASPP(depth=4).config)
    net = card.build_model()
    card.save_weights(net)
    assert RunCard.load(tmp_path).weights_sha256 == card.weights_sha256
    with torch.no_grad():
        next(net.parameters()).add_(1.0)
    torch.save(net.state_dict(), card.weights)  # new weights, the old card beside them
    with pytest.raises(ValueError, match="is not the weights file saved_model.json describes"):
        RunCard.load(tmp_path)


def test_saving_new_weights_removes_what_described_the_old_ones(tmp_path):
    card = RunCard(tmp_path / "saved_model", model=mUNetASPP(depth=4).config)
    for stale in (card.files.metrics_file, card.files.test_grid, card.files.summary_file, card.files.samples_file):
        stale.write_text("old")
    card.save_weights(card.build_model())
    assert not any(p.exists() for p in (card.files.metrics_file, card.files.test_grid, card.files.summary_file, card.files.samples_file))


def test_the_card_records_provenance_and_phase_times(synthetic_shapes, tmp_path):
    import torch

    from dlstudio_aspp.runner import train_and_score
    from dlstudio_aspp.spec import RunSpec

    spec = RunSpec.build("modern", data=synthetic_shapes, train_file=FILES[0], test_file=FILES[1], depth=4, seed=0,
                         max_iters=2, progress=False, cpu=True)
    train_and_score(spec, tmp_path / "run")
    card = json.loads((tmp_path / "run" / "saved_model.json").read_text())
    prov = card["provenance"]
    assert prov["torch"] == torch.__version__ and prov["dlstudio_aspp"] == "0.1.0" and prov["threads"] >= 1
    import subprocess
    from importlib.metadata import version

    import numpy

    assert prov["torchvision"] == version("torchvision") and prov["DLStudio"] == version("DLStudio")
    assert prov["numpy"] == numpy.__version__ and prov["threads"] == torch.get_num_threads()
    assert prov["device"].startswith("CPU") and prov["cuda"] is None and prov["cudnn"] is None  # spec.cpu
    from dlstudio_aspp.provenance import command_line

    assert prov["command"] == command_line()  # this process's command line (pytest's, or an xdist worker's)
    head = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout: the commit the package ran from
        assert prov["git_commit"].split()[0] == head.stdout.strip()
    assert set(card["seconds"]) == {"load", "train", "test"} and card["seconds"]["train"] > 0
    assert RunCard.load(tmp_path / "run").seconds == card["seconds"]  # re-saved card still matches its weights
