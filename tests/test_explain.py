"""`dlstudio-aspp explain`: a run and an experiments folder explained end to end, and the reports' section."""
import json
import shutil

import numpy as np
import pytest

from dlstudio_aspp import cli
from dlstudio_aspp.explain import explain_run, mean_interval, pixels


def test_pixels_and_mean_interval():
    assert pixels([64, 64]) == {"centre": (32, 32), "corner": (4, 4)}
    lo, hi = mean_interval([1.0, 2.0, 3.0, 4.0])
    assert 1.0 <= lo < 2.5 < hi <= 4.0
    assert np.isnan(mean_interval([1.0])).all()


def test_explain_a_run(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert cli.main(["explain", str(run), "--images", "4", "--cpu", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "centre pixel's field holds 90% within" in out and ("the branch it needs most" in out or
                                                              "no ASPP branch is needed on its own" in out)
    result = json.loads((run / "explain" / "explain.json").read_text())
    rf = result["receptive_field"]
    assert result["num_images"] == 4 and result["aspp"] and rf["image_pool"]
    for name in ("centre", "corner"):
        f = rf[name]
        assert len(f["radii"]) == 4 and f["radius_ci95"][0] <= f["radius_mean"] <= f["radius_ci95"][1]
        assert 0 < f["mass_inside_theoretical"] <= 1.0 + 1e-6
    branches = result["branches"]["branches"]
    assert [b["branch"] for b in branches] == ["1x1", "rate 2", "rate 4", "rate 6", "image pool", "all rates"]
    for b in branches:
        assert b["ci95"][0] <= b["difference"] + 1e-9 and b["difference"] - 1e-9 <= b["ci95"][1]
        assert len(b["classes"]) == len(result["class_names"])
    padding = {p["branch"]: p["padding_share"] for p in result["padding"]}
    assert padding["rate 6"] == pytest.approx(0.75) and padding["1x1"] == 0.0
    fields = np.load(run / "explain" / "fields.npz")
    assert fields["centre_mean_map"].shape == (64, 64) and fields["centre_mean_map"].sum() == pytest.approx(1.0)
    for name in ("receptive_field.png", "branches.png", "explain.md"):
        assert (run / "explain" / name).stat().st_size > 0
    md = (run / "explain" / "explain.md").read_text()
    assert "| rate 6 | 75% |" in md and "![branches](branches.png)" in md

    from dlstudio_aspp.run_report import section

    text = "\n".join(section("what aspp does", run))
    assert text.startswith("## What ASPP does") and "](explain/receptive_field.png)" in text


def test_an_unexplained_run_names_the_command(trained_run):
    from dlstudio_aspp.explain_report import run_section

    text = "\n".join(run_section(trained_run / "nowhere", str))
    assert "Not measured yet: `dlstudio-aspp explain" in text


def test_explain_refuses_what_it_cannot_explain(tmp_path, capsys):
    assert cli.main(["explain", str(tmp_path), "--cpu"]) == 2
    assert "saved_model.json is missing" in capsys.readouterr().err
    assert cli.main(["explain", str(tmp_path), "--images", "0"]) == 2


def test_a_run_without_aspp_gets_its_fields_only(syn, tmp_path):
    out = tmp_path / "off"
    assert cli.main(["run", *syn, "--aspp", "off", "--max-iters", "2", "--out", str(out)]) == 0
    result = explain_run(out, images=2, progress=False)
    assert not result["aspp"] and "branches" not in result and not result["receptive_field"]["image_pool"]
    assert not (out / "explain" / "branches.png").exists()
    assert "ASPP branches" not in (out / "explain" / "explain.md").read_text()


@pytest.mark.slow
def test_explain_a_grid_and_its_report(syn, tmp_path, capsys):
    grid = tmp_path / "grid"
    assert cli.main(["experiments", str(grid), "--preset", "smoke", *syn, "--loss", "mse", "--aspp", "both", "--seed",
                     "0,1", "--max-iters", "2", "--no-report"]) == 0
    from dlstudio_aspp.report import section

    assert "Not measured yet: `dlstudio-aspp explain" in "\n".join(section("what aspp does", grid))
    assert cli.main(["explain", str(grid), "--images", "2", "--cpu", "--no-progress"]) == 0
    assert capsys.readouterr().out.count("centre pixel's field") == 4
    text = "\n".join(section("what aspp does", grid))
    assert "4 of 4 runs explained" in text and "### Effective radius, ASPP on − off, paired by seed" in text
    assert "| mse | rate 6 |" in text and "](runs/mse__aspp-on__seed-0/explain/branches.png)" in text


def test_the_summary_names_a_needed_branch_only():
    from pathlib import Path

    from dlstudio_aspp.explain_report import explain_summary

    base = {"num_images": 3, "receptive_field": {"centre": {"radius_mean": 5.0}}}

    def branch(name, d, high):
        return {"branch": name, "difference": d, "ci95": [d - 0.01, high]}

    line = explain_summary(Path("r"), dict(base, branches={"branches": [branch("1x1", -0.2, -0.1),
                                                                         branch("rate 6", -0.3, 0.01)]}))
    assert "within 5.0 px" in line and "needs most: 1x1 (-0.2000" in line
    line = explain_summary(Path("r"), dict(base, branches={"branches": [branch("rate 6", -0.3, 0.01)]}))
    assert "no ASPP branch is needed on its own" in line
    assert "branch" not in explain_summary(Path("r"), base)
