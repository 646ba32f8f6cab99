"""docs/extending.md, followed recipe by recipe with a toy entry, through `run` and `experiments`."""
import json

import pytest
import torch
from torch import nn

from dlstudio_aspp import cli, registry
from dlstudio_aspp.card import RunCard


@pytest.fixture
def registered():
    """Register (registry, name, entry) triples for one test; they leave the registries after it."""
    added = []

    def add(reg, name, entry):
        reg.register(name, entry)
        added.append((reg, name))

    yield add
    for reg, name in added:
        reg.unregister(name)


class ToyL1(nn.Module):
    """A loss of the recipe: (output, target) (B, C, H, W) -> a 0-dim tensor, its part in last_components."""

    def forward(self, output, target):
        loss = (output - target).abs().mean()
        self.last_components = {"l1": loss.detach()}
        return loss


@pytest.mark.slow
def test_a_loss(registered, syn, tmp_path, capsys):
    registered(registry.LOSSES, "toy-l1", registry.Loss("Toy L1", ToyL1))
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    assert "toy-l1" in capsys.readouterr().out
    assert cli.main(["run", *syn, "--loss", "toy-l1", "--max-iters", "2", "--cpu", "--out", str(tmp_path / "run")]) == 0
    card = json.loads((tmp_path / "run" / "saved_model.json").read_text())
    history = json.loads((tmp_path / "run" / "saved_model.history.json").read_text())
    assert card["spec"]["loss"] == "toy-l1" and history["loss_name"] == "Toy L1" and len(history["components"]["l1"]) == 2
    grid = tmp_path / "grid"
    assert cli.main(["experiments", str(grid), "--preset", "smoke", *syn, "--loss", "toy-l1,mse", "--seed", "0",
                     "--aspp", "on", "--max-iters", "2", "--cpu"]) == 0
    assert (grid / "runs" / "toy-l1__aspp-on__seed-0" / "summary.json").is_file()
    assert "toy-l1" in (grid / "report.md").read_text()


def toy_head(in_channels: int, num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(in_channels, num_classes, 1))


def test_a_head(registered, syn, tmp_path):
    registered(registry.HEADS, "toy", registry.Head("nearest upsampling, then a 1x1 conv", toy_head))
    assert cli.main(["run", *syn, "--head", "toy", "--max-iters", "1", "--cpu", "--out", str(tmp_path / "run")]) == 0
    card = RunCard.load(tmp_path / "run")
    assert card.model["head"] == "toy"
    net = card.load_model()  # the card rebuilds the network with the registered head and loads its weights
    assert isinstance(net.conv_out[1], nn.Conv2d) and net(torch.rand(1, 3, 64, 64)).shape == (1, 5, 64, 64)


def test_an_augmentation_level(registered, syn, tmp_path):
    registered(registry.AUGMENTS, "toy", registry.Augment("flips only", crop=(1.0, 1.0)))
    assert cli.main(["run", *syn, "--augment", "toy", "--max-iters", "1", "--cpu", "--out", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "saved_model.json").read_text())["augment"] == "toy"
    with pytest.raises(SystemExit):  # argparse: not one of the registered levels
        cli.main(["run", *syn, "--augment", "toyy", "--out", str(tmp_path / "x")])


def test_a_dataset(registered, syn, tmp_path):
    from dlstudio_aspp.data.shapes import PurdueShapes5MultiObjectDataset

    class ToyShapes(PurdueShapes5MultiObjectDataset):
        pass

    def open_toy(spec, split, root, image_size=None):
        file = spec.train_file if split == "train" else spec.test_file
        return ToyShapes(train_or_test=split, dataset_file=file, root=root, image_size=image_size)

    registered(registry.DATASETS, "toy-shapes", registry.Dataset(
        "PurdueShapes files, light augmentation", ToyShapes, open_toy, "data.open:shapes_root", auto_augment="light",
        auto_normalize="none", run_recipe="modern", files=True, after_run="toy set: {iterations} iterations"))
    assert cli.main(["run", "--dataset", "toy-shapes", *syn, "--max-iters", "1", "--cpu",
                     "--out", str(tmp_path / "run")]) == 0
    card = json.loads((tmp_path / "run" / "saved_model.json").read_text())
    assert card["spec"]["dataset"] == "toy-shapes" and card["augment"] == "light" and card["spec"]["recipe"] == "modern"
    from dlstudio_aspp.data.open import open_datasets
    from dlstudio_aspp.spec import RunSpec

    train, _ = open_datasets(RunSpec.from_json(card["spec"]))
    assert registry.dataset_kind(torch.utils.data.Subset(train, [0])) == "toy-shapes"  # the most derived class


@pytest.mark.slow
def test_a_report_figure(syn, tmp_path, monkeypatch):
    from dlstudio_aspp import report

    def draw(runs, out):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        ax.bar([r["seed"] for r in runs], [r["miou"] for r in runs])
        fig.savefig(out / "toy.png")
        plt.close(fig)
        return out / "toy.png"

    monkeypatch.setattr(report, "FIGURES", report.FIGURES + [report.Figure("mIoU by seed", "toy", draw)])
    grid = tmp_path / "grid"
    assert cli.main(["experiments", str(grid), "--preset", "smoke", *syn, "--loss", "mse", "--max-iters", "1",
                     "--cpu"]) == 0
    text = (grid / "report.md").read_text()
    assert "## mIoU by seed\n\n![toy](figures/toy.png)" in text and (grid / "figures" / "toy.png").is_file()


def test_a_recipe_is_one_record(syn, tmp_path, monkeypatch, capsys):
    from dlstudio_aspp import recipes
    from dlstudio_aspp.recipes import RECIPES, Recipe

    toy = Recipe("fast", "the modern recipe at half the learning rate", dict(RECIPES["modern"], lr=5e-4),
                 why={"lr": "half the modern recipe's (benchmarks/RESULTS.md, “My comparison”)"})
    monkeypatch.setattr(recipes, "RECIPE_LIST", [*recipes.RECIPE_LIST, toy])
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    assert "stock | modern | coco | fast" in " ".join(capsys.readouterr().out.split())
    out = tmp_path / "run"
    assert cli.main(["run", *syn, "--recipe", "fast", "--max-iters", "1", "--cpu", "--out", str(out)]) == 0
    card = json.loads((out / "saved_model.json").read_text())
    assert card["spec"]["lr"] == 5e-4 and card["why"] == {"lr": toy.why["lr"]}


def test_a_preset_is_one_record(syn, tmp_path, monkeypatch, capsys):
    from dlstudio_aspp import experiments
    from dlstudio_aspp.experiments import PRESETS, Preset

    toy = Preset("two-seeds", "the smoke grid with one loss and two seeds", dict(PRESETS["smoke"], losses=["mse"],
                                                                                aspp=[True], seeds=[0, 1]))
    monkeypatch.setattr(experiments, "PRESET_LIST", [*experiments.PRESET_LIST, toy])
    with pytest.raises(SystemExit):
        cli.main(["experiments", "--help"])
    assert "two-seeds (the smoke grid with one loss and two seeds)" in " ".join(capsys.readouterr().out.split())
    grid = tmp_path / "grid"
    assert cli.main(["experiments", str(grid), "--preset", "two-seeds", *syn, "--max-iters", "1", "--cpu",
                     "--no-report"]) == 0
    assert sorted(p.name for p in (grid / "runs").iterdir()) == ["mse__aspp-on__seed-0", "mse__aspp-on__seed-1"]
