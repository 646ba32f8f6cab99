import dataclasses
import json
from pathlib import Path
import subprocess
import sys
import warnings

import pytest

from dlstudio_aspp import cli


def test_help_does_not_import_torch():
    code = "import sys; from dlstudio_aspp import cli; cli.build_parser().format_help(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_every_subcommand_has_help(capsys):
    parser = cli.build_parser()
    names = parser._subparsers._group_actions[0].choices
    assert {"run", "fetch-shapes", "make-shapes"} <= set(names)
    for name in names:
        with pytest.raises(SystemExit) as e:
            cli.main([name, "--help"])
        assert e.value.code == 0
        shown = capsys.readouterr().out
        assert "usage: dlstudio-aspp " + name in shown
        assert "%%" not in shown, f"{name} --help shows an escaped %: descriptions are not %-formatted"


def test_user_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["make-shapes", str(tmp_path), "--train", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert cli.main(["run", "--data", str(tmp_path / "none"), "--train-file", "x.gz", "--test-file", "y.gz"]) == 2
    assert "add --fetch" in capsys.readouterr().err and not (tmp_path / "none").exists()
    (tmp_path / "empty").mkdir()
    assert cli.main(["run", "--data", str(tmp_path / "empty"), "--train-file", "x.gz", "--test-file", "y.gz"]) == 2
    assert "fetch-shapes" in capsys.readouterr().err


def test_bad_rates():
    with pytest.raises(ValueError, match="comma-separated"):
        cli.parse_ints("2,x")
    with pytest.raises(ValueError, match="comma-separated"):
        cli.parse_ints("2,,4")


def test_run_end_to_end_on_synthetic(tmp_path, capsys):
    data = tmp_path / "syn"
    assert cli.main(["make-shapes", str(data), "--train", "8", "--test", "4"]) == 0
    assert "SYNTHETIC" in capsys.readouterr().out
    out = tmp_path / "out"
    rc = cli.main(["run", "--data", str(data), "--train-file", "PurdueShapes5MultiObject-8-train.gz",
                   "--test-file", "PurdueShapes5MultiObject-4-test.gz", "--max-iters", "2", "--depth", "4",
                   "--out", str(out), "--no-progress", "--log-every", "1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed and "mean" in printed
    metrics = json.loads((out / "saved_model.metrics.json").read_text())
    assert metrics["num_images"] == 4 and len(metrics["iou"]) == 5
    assert (out / "saved_model.test_grid.png").stat().st_size > 1000
    assert (out / "performance_numbers.txt").read_text().count("\n") == 2


@pytest.mark.parametrize("extra,match", [
    (["--batch-size", "0"], "--batch-size must be an int >= 1"), (["--epochs", "0"], "--epochs must be an int >= 1"),
    (["--loss", "msee"], "unknown loss 'msee'"), (["--grad-clip", "0"], "--grad-clip must be a finite number > 0"),
    (["--depth", "2"], "--depth must be an int >= 4"),
])
def test_bad_run_settings_are_one_line(syn, tmp_path, capsys, extra, match):
    assert cli.main(["run", *syn, "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and match in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra,match", [
    (["--recipe", "fancy"], "invalid choice: 'fancy' (choose from 'stock', 'modern', 'coco')"),
    (["--head", "wide"], "invalid choice: 'wide' (choose from 'stock', 'dense', 'bilinear')"),
    (["--optimizer", "lbfgs"], "(choose from 'sgd', 'adam', 'adamw')"),
    (["--schedule", "step"], "(choose from 'constant', 'cosine', 'onecycle')"),
    (["--rates", "2,,4"], "--rates must be comma-separated ints"), (["--aspp", "maybe"], "expected on or off"),
    (["--grad-clip", "much"], "expected float or off"),
])
def test_closed_sets_are_refused_by_the_parser_with_the_valid_values(capsys, extra, match):
    with pytest.raises(SystemExit) as e:
        cli.main(["run", *extra])
    assert e.value.code == 2 and match in capsys.readouterr().err


def test_version_and_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.startswith("dlstudio-aspp 0.1.0")
    text = " ".join(cli.build_parser()._subparsers._group_actions[0].choices["run"].format_help().split())
    assert "(default: adamw)" in text and "(default: 0.9, unused with these defaults)" in text


def test_every_spec_field_is_a_flag_of_run_and_experiments(monkeypatch):
    """A field added to RunSpec appears in both commands' help and reaches the spec, with no other change."""
    import dataclasses

    from dlstudio_aspp import spec as spec_module
    from dlstudio_aspp.spec import SPEC_FIELDS, RunSpec, option

    extra = dataclasses.make_dataclass("RunSpecPlus", [("test_knob", int, option(7, "a knob only this test has",
                                                                                  group="train"))], bases=(RunSpec,), frozen=True)
    monkeypatch.setattr(cli, "RunSpec", extra)
    monkeypatch.setattr("dlstudio_aspp.commands.RunSpec", extra)
    monkeypatch.setitem(SPEC_FIELDS, "test_knob", dataclasses.fields(extra)[-1])
    parser = cli.build_parser()
    choices = parser._subparsers._group_actions[0].choices
    for name in ("run", "experiments"):
        assert "--test-knob TEST_KNOB" in choices[name].format_help() and "a knob only this test has" in choices[name].format_help()
    args = parser.parse_args(["run", "--test-knob", "9"])
    assert spec_module.given_values(args) == {"test_knob": 9}
    from dlstudio_aspp.commands import run_spec_defaults

    spec = run_spec_defaults()
    assert spec.test_knob == 7 and spec.replace(test_knob=9).validate().to_json()["test_knob"] == 9
    # the card and grid.json record spec.to_json(), so the field is in both


def test_epochs_means_epochs_and_off_switches_reach_the_training(syn, tmp_path, capsys):
    out = tmp_path / "o"
    assert cli.main(["run", *syn, "--out", str(out), "--epochs", "2", "--grad-clip", "off", "--no-normalize-masks",
                     "--loss", "mse"]) == 0
    card = json.loads((out / "saved_model.json").read_text())
    assert card["iterations"] == 4 and card["epochs"] == 2  # 8 images at batch 4, 2 epochs
    assert card["spec"]["grad_clip"] is None and card["spec"]["normalize_masks"] is False
    assert card["normalize_masks"] is False and card["thresholds"] == [25.0, 50.0, 75.0, 100.0, 125.0]


def test_aspp_dropout_strong_augmentation_and_copy_paste_reach_the_model_and_the_card(syn, tmp_path, capsys):
    out = tmp_path / "o"
    assert cli.main(["run", *syn, "--out", str(out), "--max-iters", "2", "--aspp-dropout", "0.5", "--augment", "strong",
                     "--copy-paste", "0.5", "--no-progress"]) == 0
    header = capsys.readouterr().out
    assert "augmentation strong, copy-paste 0.5, input normalisation" in header and "(bottleneck 8x8), dropout 0.5" in header
    card = json.loads((out / "saved_model.json").read_text())
    assert card["spec"]["aspp_dropout"] == 0.5 == card["model"]["aspp_dropout"] and card["augment"] == "strong"
    assert card["spec"]["copy_paste"] == 0.5
    from dlstudio_aspp.card import RunCard

    assert RunCard.load(out).build_model().aspp.project[-1].p == 0.5  # what evaluation and predict rebuild


def test_grad_clip_off_reaches_the_optimizer_step(syn, tmp_path, monkeypatch):
    import torch

    calls = []
    real = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    assert cli.main(["run", *syn, "--out", str(tmp_path / "a"), "--max-iters", "2"]) == 0
    assert calls == [1.0, 1.0]  # the modern recipe clips at 1
    assert cli.main(["run", *syn, "--out", str(tmp_path / "b"), "--max-iters", "2", "--grad-clip", "off"]) == 0
    assert calls == [1.0, 1.0]


def test_data_pointing_at_a_file(tmp_path, capsys):
    f = tmp_path / "file.gz"
    f.write_bytes(b"x")
    assert cli.main(["run", "--data", str(f)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_failed_starts_leave_a_good_run_folder_as_it_was(syn, tmp_path, capsys):
    """Bugs: `run --out GOOD --loss msee` and `--resume --depth 8` rewrote saved_model.json."""
    out = tmp_path / "good"
    assert cli.main(["run", *syn, "--out", str(out), "--max-iters", "2", "--checkpoint-every", "1", "--checkpoint-seconds", "0"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    assert cli.main(["run", *syn, "--out", str(out), "--loss", "msee"]) == 2
    assert cli.main(["run", *syn, "--out", str(out), "--max-iters", "2", "--resume", "--depth", "8"]) == 2
    assert "model.depth: checkpoint 4, now 8" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_resume_needs_a_checkpoint(syn, tmp_path, capsys):
    assert cli.main(["run", *syn, "--out", str(tmp_path / "new"), "--resume"]) == 2
    assert "there is no checkpoint" in capsys.readouterr().err


def test_other_exceptions_keep_their_traceback(monkeypatch):
    from dlstudio_aspp import commands

    def boom(args):
        raise ValueError("a bug, not a user error")

    monkeypatch.setattr(commands, "report", boom)
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["report", "x"])


def test_sigterm_saves_a_checkpoint_and_resume_continues(syn, tmp_path, monkeypatch, capsys):
    import os
    import signal

    from dlstudio_aspp.data import shapes

    real = shapes.PurdueShapes5MultiObjectDataset.__getitem__
    calls = {"n": 0}

    def getitem(self, idx):
        calls["n"] += 1
        if self.train_or_test == "train" and calls["n"] == 6:  # during the 2nd batch
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, idx)

    monkeypatch.setattr(shapes.PurdueShapes5MultiObjectDataset, "__getitem__", getitem)
    monkeypatch.setattr("dlstudio_aspp.segmentation.default_num_workers", lambda n=None: 0)
    out = tmp_path / "o"
    args = ["run", *syn, "--out", str(out), "--max-iters", "2", "--batch-size", "4"]
    assert cli.main(args) == 130
    assert "checkpoint saved" in capsys.readouterr().out
    assert cli.main(args + ["--resume"]) == 0
    h = json.loads((out / "saved_model.history.json").read_text())
    assert h["iteration"] == [1, 2]


def test_experiments_command_ends_with_the_grid_outcome(syn, tmp_path, capsys):
    out = tmp_path / "grid"
    rc = cli.main(["experiments", "--out", str(out), "--preset", "smoke", *syn, "--loss", "mse", "--seed", "0",
                   "--aspp", "on", "--max-iters", "1", "--cpu", "--no-report", "--optimizer", "adam"])
    assert rc == 0
    assert f"1 of 1 runs finished in {out}/runs\n" in capsys.readouterr().out
    assert not (out / "report.md").exists()
    assert json.loads((out / "grid.json").read_text())["spec"]["optimizer"] == "adam"  # run options reach the grid


def test_experiments_dry_run_prints_the_grid_plan_and_writes_nothing(syn, tmp_path, capsys):
    out = tmp_path / "grid"
    rc = cli.main(["experiments", "--out", str(out), "--preset", "smoke", *syn, "--losses", "mse,dice", "--seed", "0",
                   "--max-iters", "2", "--cpu", "--dry-run"])
    printed = capsys.readouterr().out
    assert rc == 0 and not out.exists()
    assert "4 runs: 2 losses (mse, dice) x ASPP on/off x seeds 0; 0 finished already" in printed
    assert "first to train, mse__aspp-on__seed-0:" in printed and "learnable parameters:" in printed
    assert "2 iterations (1 epoch of 8 images at batch 4)" in printed
    assert f"dry run: would write {out}/ (grid.json, runs/, the report); nothing was written" in printed


def test_a_grid_config_is_checked_once_and_never_changed():
    from dlstudio_aspp.experiments import GridConfig

    given = GridConfig(losses=["MSE", "Dice"])
    checked = given.validate()
    assert given.losses == ["MSE", "Dice"] and checked.losses == ["mse", "dice"]  # the caller's grid is as it was
    assert checked.validate() is checked
    with pytest.raises(dataclasses.FrozenInstanceError):
        checked.losses = ["mse"]


def test_plan_grid_checks_the_axes_once(syn, tmp_path, monkeypatch):
    """Bug: plan_grid checked every cell a second time after making the data folder and rates concrete."""
    from dlstudio_aspp import experiments

    calls = []
    real = experiments.GridConfig._check_axes
    monkeypatch.setattr(experiments.GridConfig, "_check_axes", lambda self: (calls.append(1), real(self))[1])
    cfg = experiments.GridConfig.from_preset("smoke", data=syn[1], train_file=syn[3], test_file=syn[5],
                                             losses=["mse", "dice"])
    plan = experiments.plan_grid(cfg, tmp_path / "g")
    assert len(calls) == 1 and plan.cfg.spec.data and plan.cfg.validate() is plan.cfg


def test_experiments_refuses_duplicate_cells(syn, tmp_path, capsys):
    assert cli.main(["experiments", "--out", str(tmp_path / "g"), *syn, "--losses", "mse,MSE"]) == 2
    assert "--loss lists mse more than once" in capsys.readouterr().err and not (tmp_path / "g").exists()


def test_the_package_warnings_print_as_one_line(coco_tiny, tmp_path, capsys):
    """A warning of the package reads like its errors: ``warning: ...``, without Python's file:line and source."""
    argv = ["build-coco", "--coco-root", str(coco_tiny), "--classes", "person", "dog", "cat", "--size", "64",
            "--out", str(tmp_path / "o"), "--no-progress"]
    before = warnings.showwarning
    assert cli.main(argv) == 0
    assert warnings.showwarning is before  # installed for main's own call only
    err = capsys.readouterr().err
    assert "warning: test (val2017): no image qualifies for dog, cat" in err
    assert "RuntimeWarning" not in err and "warnings.warn" not in err


def test_a_warning_from_a_modules_forward_is_ours_too(capsys):
    """Bug: the ASPP rates warning, raised in forward, named torch's module.py and printed as a traceback-like
    RuntimeWarning instead of one line."""
    import torch

    from dlstudio_aspp.aspp import ASPP

    shown = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = cli._warning_line(lambda *a: shown.append(a))
        ASPP(8, rates=(2, 8), branch_channels=4)(torch.randn(1, 8, 8, 8))
    assert not shown and "warning: ASPP rates [8] are at least the bottleneck's side" in capsys.readouterr().err


def test_a_warning_is_printed_once_wherever_it_is_raised(capsys):
    """Bug: `run --val-split` printed its few-images warning twice: once when it planned, once when it trained."""
    show = cli._warning_line(lambda *a: None)
    for line in (10, 20):
        show(UserWarning("few images"), UserWarning, cli.__file__, line)
    show(UserWarning("another"), UserWarning, cli.__file__, 30)
    assert capsys.readouterr().err == "warning: few images\nwarning: another\n"


def test_other_warnings_keep_python_format(capsys, monkeypatch):
    shown = []
    show = cli._warning_line(lambda *a: shown.append(a))
    show(UserWarning("from elsewhere"), UserWarning, "/usr/lib/python3/x.py", 3)
    assert len(shown) == 1 and capsys.readouterr().err == ""
    monkeypatch.setenv("DLSTUDIO_ASPP_DEBUG", "1")
    show(UserWarning("ours"), UserWarning, cli.__file__, 3)
    assert len(shown) == 2  # debugging: Python's own format, with the file and line


def test_run_replays_a_card(syn, tmp_path, capsys):
    """`run --config CARD` runs the spec the card records; a flag beside it changes that field only; the card's
    recorded command replays the run."""
    import shlex

    first = tmp_path / "first"
    assert cli.main(["run", *syn, "--loss", "dice+mse:20", "--max-iters", "2", "--lr", "0.002", "--cpu",
                     "--out", str(first)]) == 0
    card = json.loads((first / "saved_model.json").read_text())
    assert cli.main(["run", "--config", str(first / "saved_model.json"), "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "saved_model.json").read_text())
    assert again["spec"] == card["spec"] and again["weights_sha256"] == card["weights_sha256"]  # the same run, exactly
    assert cli.main(["run", "--config", str(first), "--lr", "0.01", "--out", str(tmp_path / "lr")]) == 0
    changed = json.loads((tmp_path / "lr" / "saved_model.json").read_text())["spec"]
    assert {k for k in card["spec"] if changed[k] != card["spec"][k]} == {"lr"} and changed["lr"] == 0.01
    words = shlex.split(card["provenance"]["command"])
    assert words[:2] == ["dlstudio-aspp", "run"] and words[words.index("--out") + 1] == str(first)
    words[words.index("--out") + 1] = str(tmp_path / "replayed")
    assert cli.main(words[1:]) == 0
    assert json.loads((tmp_path / "replayed" / "saved_model.json").read_text())["weights_sha256"] == card["weights_sha256"]
    assert cli.main(["run", "--config", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "--config" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_a_card_with_a_relative_data_folder_replays_from_another_folder(syn, tmp_path, monkeypatch):
    """Bug: `run --config` from another folder failed: the card stores --data as given, relative to the folder the
    run was started in. It is read against that folder (the card's provenance records it)."""
    data = Path(syn[syn.index("--data") + 1])
    args = list(syn)
    args[args.index("--data") + 1] = data.name
    monkeypatch.chdir(data.parent)
    assert cli.main(["run", *args, "--max-iters", "1", "--cpu", "--out", str(tmp_path / "first")]) == 0
    card = json.loads((tmp_path / "first" / "saved_model.json").read_text())
    assert card["spec"]["data"].rstrip("/") == data.name and card["provenance"]["cwd"] == str(data.parent)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert cli.main(["run", "--config", str(tmp_path / "first"), "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "saved_model.json").read_text())
    assert again["weights_sha256"] == card["weights_sha256"] and again["spec"]["data"].rstrip("/") == str(data)


def test_a_bad_value_is_the_usage_line_the_error_and_where_the_help_is(capsys):
    """Bug: `run --aspp yes` printed 30 lines of usage before the one that mattered."""
    with pytest.raises(SystemExit) as e:
        cli.main(["run", "--aspp", "yes"])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines() == ["usage: dlstudio-aspp run [options]",
                                                   "dlstudio-aspp run: error: argument --aspp: expected on or off, got 'yes'",
                                                   "see dlstudio-aspp run --help"]


def test_a_finished_run_is_called_finished(syn, tmp_path, capsys):
    """Bug: every finished run keeps its .ckpt, so a re-run into its folder called it interrupted and said --resume."""
    out = tmp_path / "run"
    assert cli.main(["run", *syn, "--max-iters", "1", "--cpu", "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["run", *syn, "--max-iters", "1", "--cpu", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds a finished run; --overwrite starts it afresh" in err and "--resume" not in err
    assert f"run --config {out / 'saved_model.json'} --out NEW --max-iters N" in err


def test_no_blank_lines_with_no_progress(syn, tmp_path, capsys):
    """A log file (--no-progress) gets no blank lines; each line says something."""
    assert cli.main(["run", *syn, "--epochs", "2", "--log-every", "1", "--cpu", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "" not in out and "Finished Training" in out and sum(line.startswith("[epoch=") for line in out) == 4


def test_a_run_validates_its_spec_once_and_builds_its_model_once(syn, tmp_path, monkeypatch):
    """The plan is resolved once: `run`'s header is printed from the model that trains."""
    from dlstudio_aspp import model, spec

    checks, builds = [], []
    check, init = spec.RunSpec._check, model.mUNetASPP.__init__
    monkeypatch.setattr(spec.RunSpec, "_check", lambda self, names: (checks.append((len(list(names)), self.max_iters)),
                                                                     check(self, names))[1])
    monkeypatch.setattr(model.mUNetASPP, "__init__", lambda self, *a, **k: (builds.append(1), init(self, *a, **k))[1])
    assert cli.main(["run", *syn, "--max-iters", "1", "--cpu", "--out", str(tmp_path / "r")]) == 0
    full = len(spec.SPEC_FIELDS)  # the parser's defaults are a spec of their own (max_iters None)
    assert checks.count((full, 1)) == 1 and len(builds) == 1, (checks, builds)


def test_dry_run_prints_the_plan_and_writes_nothing(syn, tmp_path, capsys):
    out = tmp_path / "r"
    assert cli.main(["run", *syn, "--max-iters", "3", "--cpu", "--dry-run", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "learnable parameters:" in printed and "3 iterations (2 epochs of 8 images at batch 4)" in printed
    assert f"writing {out}/; nothing was written" in printed and not out.exists()
