import json
import subprocess
import sys

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
        assert "usage: dlstudio-aspp " + name in capsys.readouterr().out


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


@pytest.fixture
def syn(tmp_path):
    data = tmp_path / "syn"
    assert cli.main(["make-shapes", str(data), "--train", "8", "--test", "4"]) == 0
    return ["--data", str(data), "--train-file", "PurdueShapes5MultiObject-8-train.gz",
            "--test-file", "PurdueShapes5MultiObject-4-test.gz", "--depth", "4", "--no-progress"]


@pytest.mark.parametrize("extra,match", [
    (["--batch-size", "0"], "--batch-size must be >= 1"), (["--epochs", "0"], "--epochs must be >= 1"),
    (["--rates", "2,,4"], "--rates must be comma-separated ints"), (["--loss", "msee"], "unknown loss 'msee'"),
    (["--recipe", "fancy"], "unknown recipe 'fancy'; valid: stock, modern"),
    (["--head", "wide"], "unknown head 'wide'; valid: stock, dense, bilinear"),
    (["--optimizer", "lbfgs"], "unknown optimizer 'lbfgs'; valid: sgd, adam, adamw"),
    (["--schedule", "step"], "unknown schedule 'step'; valid: constant, cosine, onecycle"),
])
def test_bad_run_settings_are_one_line(syn, tmp_path, capsys, extra, match):
    assert cli.main(["run", *syn, "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and match in err
    assert not (tmp_path / "o").exists()


def test_data_pointing_at_a_file(tmp_path, capsys):
    f = tmp_path / "file.gz"
    f.write_bytes(b"x")
    assert cli.main(["run", "--data", str(f)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_failed_starts_leave_a_good_run_folder_as_it_was(syn, tmp_path, capsys):
    """Bugs: `run --out GOOD --loss msee` and `--resume --depth 8` rewrote saved_model.json."""
    out = tmp_path / "good"
    assert cli.main(["run", *syn, "--out", str(out), "--max-iters", "2", "--checkpoint-every", "1"]) == 0
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
    rc = cli.main(["experiments", str(out), "--preset", "smoke", *syn, "--losses", "mse", "--seeds", "0", "--aspp", "on",
                   "--max-iters", "1", "--cpu", "--no-report"])
    assert rc == 0
    assert f"1 of 1 runs finished in {out}/runs\n" in capsys.readouterr().out
    assert not (out / "report.md").exists()
