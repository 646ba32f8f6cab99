import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from dlstudio_aspp import cli
from dlstudio_aspp.experiments import GridConfig, grid_outcome, run_grid
from dlstudio_aspp.grid import GridFolder
from dlstudio_aspp.runner import magnitudes

run_name = GridFolder.cell_name
from dlstudio_aspp.model import mUNetASPP
from dlstudio_aspp.report import make_report


def grid(synthetic_shapes, **kw):
    args = dict(data=synthetic_shapes, train_file="PurdueShapes5MultiObject-24-train.gz",
                test_file="PurdueShapes5MultiObject-8-test.gz", losses=["mse", "dice+mse:auto"], seeds=[0, 1], max_iters=3,
                log_every=1, progress=False, cpu=True)
    return GridConfig.from_preset("smoke", **dict(args, **kw))


def test_same_initial_weights_with_aspp_on_and_off():
    torch.manual_seed(3)
    on = mUNetASPP(depth=4).state_dict()
    torch.manual_seed(3)
    off = mUNetASPP(depth=4, aspp=False).state_dict()
    assert all(torch.equal(on[k], off[k]) for k in off)


@pytest.mark.slow
def test_grid_runs_resumes_and_reports(synthetic_shapes, tmp_path, capsys):
    cfg = grid(synthetic_shapes)
    folders = run_grid(cfg, tmp_path)
    assert len(folders) == 8 and all((f / "summary.json").is_file() for f in folders)
    assert {f.name for f in folders} >= {run_name("dice+mse:auto", True, 1), run_name("mse", False, 0)}
    s = json.loads((tmp_path / "runs" / run_name("dice+mse:auto", True, 0) / "summary.json").read_text())
    assert s["magnitudes"]["auto_scale"] and s["magnitudes"]["dice_scale"] > 1
    assert not set(s) & {"loss", "aspp", "seed", "recipe", "head"}  # the options are the card's, stored once
    assert set(s["magnitudes"]["start"]) >= {"mse", "dice", "mse_over_dice"}
    capsys.readouterr()
    # finished runs are skipped; a removed summary is redone from its checkpoint
    (folders[0] / "summary.json").unlink()
    run_grid(cfg, tmp_path)
    out = capsys.readouterr().out
    assert out.count("done, skipped") == 7 and "resumed from" in out
    report = make_report(tmp_path)
    text = report.read_text()
    for part in ("**SYNTHETIC data**", "loss_best_worst_mse.png", "loss_overlay.png", "aspp_on_vs_off.png", "qualitative.png",
                 "| mse | on | 2 |", "| dice+mse:auto | off | 2 |", "MSE/Dice start"):
        assert part in text
    import matplotlib.pyplot as plt

    q = plt.imread(tmp_path / "figures" / "qualitative.png")
    assert q.shape[0] > 4 * 100 and q.std() > 0.01
    # the table's numbers come from the runs on disk
    vals = [json.loads((tmp_path / "runs" / run_name("mse", True, s) / "saved_model.metrics.json").read_text())["miou"]
            for s in (0, 1)]
    assert f"| mse | on | 2 | {np.mean(vals):.3f} ± {np.std(vals):.3f} |" in text
    # the paired comparison: per-seed differences of the runs on disk, by hand
    miou = {(a, s): json.loads((tmp_path / "runs" / run_name("mse", a, s) / "saved_model.metrics.json").read_text())["miou"]
            for a in (True, False) for s in (0, 1)}
    diffs = [miou[(True, s)] - miou[(False, s)] for s in (0, 1)]
    assert f"| mse: ASPP on − off | 2 | {diffs[0]:+.3f}, {diffs[1]:+.3f} | {np.mean(diffs):+.3f} |" in text
    assert "### Between losses" in text and "95% bootstrap interval (test images)" in text
    assert "stock output layer" in text  # the smoke preset uses the stock layer: the report says what that means


def test_grid_refuses_changed_settings(synthetic_shapes, tmp_path):
    (tmp_path / "grid.json").write_text(json.dumps({"spec": {"depth": 99}}))
    (tmp_path / "runs" / "mse__aspp-on__seed-0").mkdir(parents=True)
    (tmp_path / "runs" / "mse__aspp-on__seed-0" / "saved_model.ckpt").write_bytes(b"started")
    with pytest.raises(ValueError, match="other settings .*depth"):
        run_grid(grid(synthetic_shapes), tmp_path)


def test_bad_preset_and_loss():
    with pytest.raises(ValueError, match="valid: homework, homework-dense, quick, coco-quick, coco, smoke"):
        GridConfig.from_preset("fast")
    with pytest.raises(ValueError, match="unknown loss"):
        GridConfig(losses=["l1"]).validate()
    with pytest.raises(ValueError, match="--loss lists mse more than once"):
        GridConfig(losses=["mse", "MSE"]).validate()
    with pytest.raises(ValueError, match="--seed lists 0 more than once"):
        GridConfig(seeds=[0, 0]).validate()


def test_magnitudes():
    h = {"components": {"mse": [100.0] * 30, "dice": [0.5] * 30, "dice_scale": [20.0] * 30}}
    m = magnitudes(h, "dice+mse:20")
    assert m["start"]["mse_over_dice"] == 200 and m["start"]["dice_share"] == pytest.approx(10 / 110)
    assert not m["auto_scale"] and magnitudes({"components": {}}, "mse") == {}
    assert magnitudes(h, "dice+mse:auto")["auto_scale"]


def test_grid_and_report_on_a_built_coco_set(coco_tiny_3, tmp_path):
    """The grid on real COCO photographs (coco_tiny: person, dining table, bowl), scored on its test split."""
    from conftest import TINY_CLASSES

    cfg = GridConfig.from_preset("smoke", dataset="coco", data=coco_tiny_3, losses=["dice"], seeds=[0], max_iters=1,
                                 batch_size=2, progress=False, cpu=True)
    folders = run_grid(cfg, tmp_path / "grid")
    assert len(folders) == 2
    m = json.loads((folders[0] / "saved_model.metrics.json").read_text())
    test_images = len(json.loads((Path(coco_tiny_3) / "index.json").read_text())["splits"]["test"])
    assert m["class_names"] == TINY_CLASSES and test_images >= 15 and m["num_images"] == cfg.spec.test_subset == 8
    text = make_report(tmp_path / "grid").read_text()
    assert "Dataset: **coco**" in text and "| dice | on | 1 |" in text


def test_typo_leaves_no_grid_behind(synthetic_shapes, tmp_path):
    """Bug: grid.json was written before --data, --rates and --depth were checked, locking the folder."""
    out = tmp_path / "g"
    for bad in (dict(data=str(tmp_path / "nowhere")), dict(rates=[0]), dict(depth=2), dict(head="wide")):
        with pytest.raises(ValueError):
            run_grid(grid(synthetic_shapes, **bad), out)
        assert not (out / "grid.json").exists()
    run_grid(grid(synthetic_shapes, seeds=[0], aspp=[True], losses=["mse"]), out)  # the corrected command runs
    assert (out / "grid.json").is_file()


@pytest.mark.slow
def test_a_diverging_run_is_recorded_and_the_grid_goes_on(synthetic_shapes, tmp_path, monkeypatch, capsys):
    """Bug: the serial grid stopped at the first run whose loss became NaN."""
    from dlstudio_aspp.errors import NonFiniteLossError

    from dlstudio_aspp import runner

    real = runner.train_and_score
    bad = run_name("mse", True, 0)

    def train_and_score(spec, folder, **kw):
        if folder.name == bad:
            raise NonFiniteLossError("mse loss became nan at iteration 2")
        return real(spec, folder, **kw)

    monkeypatch.setattr(runner, "train_and_score", train_and_score)
    cfg = grid(synthetic_shapes, losses=["mse"], seeds=[0])
    folders = run_grid(cfg, tmp_path)
    assert [(f / "summary.json").is_file() for f in folders] == [False, True]
    assert "recorded as failed" in capsys.readouterr().out
    failed = json.loads((tmp_path / "grid.json").read_text())["failed"]
    assert failed == {bad: "NonFiniteLossError: mse loss became nan at iteration 2"}
    assert grid_outcome(cfg, tmp_path) == f"1 of 2 runs finished in {tmp_path}/runs; failed: {bad}"
    assert "## Failed runs" in make_report(tmp_path).read_text()
    # once the run finishes, it leaves the failed list
    monkeypatch.setattr(runner, "train_and_score", real)
    run_grid(cfg, tmp_path)
    assert json.loads((tmp_path / "grid.json").read_text())["failed"] == {}
    assert "## Failed runs" not in make_report(tmp_path).read_text()


def test_homework_dense_holds_the_recipe_loss_and_the_homework_losses():
    """The measured homework-budget run (`run --max-iters 15000`: modern recipe, its own loss) has a cell's settings."""
    from dlstudio_aspp.commands import run_spec_defaults
    from dlstudio_aspp.spec import RECIPES

    dense, stock = GridConfig.from_preset("homework-dense"), GridConfig.from_preset("homework")
    assert dense.losses == [RECIPES["modern"]["loss"], *stock.losses]
    assert (dense.spec.epochs, dense.spec.batch_size, dense.spec.depth, dense.seeds) == \
        (stock.spec.epochs, stock.spec.batch_size, stock.spec.depth, stock.seeds)
    cell = dense.cell_specs()[0].result_values()
    run = run_spec_defaults().replace(epochs=6).result_values()
    assert cell == run


def test_grid_json_records_the_spec_and_the_cells(synthetic_shapes, tmp_path):
    cfg = grid(synthetic_shapes, losses=["mse"], seeds=[0], aspp=[True], optimizer="adam")
    run_grid(cfg, tmp_path)
    saved = json.loads((tmp_path / "grid.json").read_text())
    assert saved["spec"]["optimizer"] == "adam" and "momentum" not in saved["spec"]  # unused under Adam: not recorded
    assert saved["cells"] == ["mse__aspp-on__seed-0"] and saved["preset"] == "smoke"
    assert saved["spec"]["rates"] == [2, 4, 6]  # --rates auto, made concrete for 64x64: grids of earlier versions match
    assert {"command", "torch", "torchvision", "DLStudio", "numpy", "cuda", "device", "threads"} <= set(saved["provenance"])
    card = json.loads((tmp_path / "runs" / "mse__aspp-on__seed-0" / "saved_model.json").read_text())
    assert card["spec"]["optimizer"] == "adam" and card["iterations"] == 3


def test_coco_quick_is_runs_coco_default_and_coco_is_sized_for_a_gpu():
    """`experiments --preset coco-quick` makes the run `run --dataset coco` makes; the coco preset trains longer."""
    from dlstudio_aspp.commands import run_spec, run_spec_defaults

    quick, full = GridConfig.from_preset("coco-quick").validate(), GridConfig.from_preset("coco").validate()
    assert quick.cell_specs()[0].result_values() == run_spec_defaults("coco").result_values()
    assert run_spec({"dataset": "coco"}).recipe == "coco" and run_spec({"dataset": "coco", "recipe": "modern"}).val_split is None
    assert quick.spec.iterations(10_000)[1] == quick.spec.iterations(200)[1]  # the recipe's budget: iterations
    assert full.spec.iterations(200)[0] == 150 and full.aspp == [True, False] and len(full.seeds) == 3
    assert (full.spec.depth, full.size, quick.size) == (16, 256, None)  # the homework's network and size on a GPU


@pytest.mark.slow
def test_any_axis_field_is_a_grid_axis(syn, tmp_path, capsys):
    """`experiments --lr 0.001,0.01` varies the learning rate: one folder per value after the homework's name, a report
    that pairs the two rates seed by seed, a re-run that skips them all; one value is a plain option."""
    out = tmp_path / "g"
    argv = ["experiments", str(out), "--preset", "smoke", *syn, "--loss", "mse", "--aspp", "on", "--seed", "0,1",
            "--lr", "0.001,0.01", "--max-iters", "2", "--cpu"]
    assert cli.main(argv) == 0
    names = sorted(p.name for p in (out / "runs").iterdir())
    assert names == [f"mse__aspp-on__seed-{s}__lr-{lr}" for s in (0, 1) for lr in ("0.001", "0.01")]
    for name in names:
        card = json.loads((out / "runs" / name / "saved_model.json").read_text())
        assert card["spec"]["lr"] == float(name.rsplit("-", 1)[1])
    grid = json.loads((out / "grid.json").read_text())
    assert grid["axes"] == {"lr": [0.001, 0.01]} and "lr" not in grid["spec"]
    text = (out / "report.md").read_text()
    assert "### Between losses and settings" in text
    assert re.search(r"\| mse \(lr 0\.001\) − mse \(lr 0\.01\) \(ASPP on\) \| 2 \| [+-]\d\.\d{3}, [+-]\d\.\d{3} \|", text)
    assert "loss_best_worst_mse_lr_0.001.png" in text and (out / "figures" / "loss_best_worst_mse_lr_0.001.png").is_file()
    assert all((out / f"report.{kind}").is_file() for kind in ("md", "html", "pdf", "ipynb"))  # the notebook too
    capsys.readouterr()
    assert cli.main(argv) == 0 and capsys.readouterr().out.count("done, skipped") == 4  # resumes like any grid
    assert cli.main(["experiments", str(tmp_path / "one"), "--preset", "smoke", *syn, "--loss", "mse", "--aspp", "on",
                     "--seed", "0", "--lr", "0.002", "--max-iters", "1", "--cpu", "--no-report"]) == 0
    assert [p.name for p in (tmp_path / "one" / "runs").iterdir()] == ["mse__aspp-on__seed-0"]  # one value: no axis
    assert json.loads((tmp_path / "one" / "grid.json").read_text())["spec"]["lr"] == 0.002
    assert cli.main(["experiments", str(tmp_path / "r"), "--preset", "smoke", *syn, "--rates", "2,4,6/1,2,3",
                     "--loss", "mse", "--aspp", "on", "--seed", "0", "--max-iters", "1", "--cpu", "--no-report"]) == 0
    assert sorted(p.name for p in (tmp_path / "r" / "runs").iterdir()) == [
        "mse__aspp-on__seed-0__rates-1,2,3", "mse__aspp-on__seed-0__rates-2,4,6"]


def test_every_preset_is_described_in_the_help(capsys):
    from dlstudio_aspp.experiments import PRESET_HELP, PRESETS

    assert list(PRESET_HELP) == list(PRESETS)
    with pytest.raises(SystemExit):
        cli.main(["experiments", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(f"{name} (" in text for name in PRESETS)


@pytest.mark.slow
def test_the_installed_script_exits_0_2_or_1(syn, tmp_path):
    """The exit code a batch script or a scheduler sees: 0 when every run finished, 2 with one line for a user
    error, 1 when a run of the grid failed (its name on the last line)."""
    import shutil
    import subprocess

    script = shutil.which("dlstudio-aspp")
    assert script, "the dlstudio-aspp script is not installed (pip install -e .)"
    grid = [script, "experiments", "--preset", "smoke", *syn, "--loss", "mse", "--aspp", "on", "--seed", "0",
            "--max-iters", "3", "--no-report"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ok = subprocess.run([*grid, "--out", str(tmp_path / "ok")], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr[-1000:]
    bad = subprocess.run([script, "experiments", "--out", str(tmp_path / "x"), "--loss", "nope"], capture_output=True,
                         text=True, env=env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("error: ")
    diverged = subprocess.run([*grid, "--out", str(tmp_path / "nan"), "--lr", "1e30"], capture_output=True, text=True,
                              env=env)
    assert diverged.returncode == 1
    last = diverged.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 of 1 runs did not finish: mse__aspp-on__seed-0")
