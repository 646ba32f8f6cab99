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
