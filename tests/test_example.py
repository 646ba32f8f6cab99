import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import udiff

REPO = Path(__file__).resolve().parents[1]


def stock_example() -> str:
    """DLStudio's own Examples/semantic_segmentation.py, from the installed version's sdist (cached)."""
    import DLStudio
    from dlstudio_aspp.data.sources import cache_dir

    version = DLStudio.__version__
    d = cache_dir() / f"dlstudio-{version}-sdist"
    hits = list(d.glob("*.tar.gz")) if d.is_dir() else []
    if not hits:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(d),
                        f"dlstudio=={version}"], check=True, capture_output=True)
        hits = list(d.glob("*.tar.gz"))
    with tarfile.open(hits[0]) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("Examples/semantic_segmentation.py"))
        return tar.extractfile(member).read().decode()


def test_patch_turns_stock_example_into_ours():
    diff = (REPO / "patches" / "semantic_segmentation.py.diff").read_text()
    ours = (REPO / "examples" / "semantic_segmentation.py").read_bytes()
    assert udiff.apply(stock_example(), diff).encode() == ours


def test_udiff_refuses_a_mismatch():
    with pytest.raises(ValueError, match="does not apply"):
        udiff.apply("a\nb\n", "@@ -1,2 +1,2 @@\n a\n-c\n+d\n")


@pytest.mark.slow
def test_example_without_data_says_how_to_get_it(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "semantic_segmentation.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "dlstudio-aspp fetch-shapes" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_example_runs_end_to_end_on_the_real_data(real_shapes, tmp_path):
    """examples/semantic_segmentation.py as a user runs it, beside the real 10000-train and 1000-test files; only the
    budget (4 iterations) and the depth are cut: it trains, saves, and scores all 1000 test images."""
    import json

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "PurdueShapes5MultiObject").symlink_to(Path(real_shapes), target_is_directory=True)
    script = (REPO / "examples" / "semantic_segmentation.py").read_text()
    for old, new in (("(model, loss=loss)", "(model, loss=loss, max_iters=4, progress=False)"),
                     ("depth=16", "depth=4"),
                     ("os.path.dirname(os.path.abspath(__file__))", repr(str(REPO / "examples")))):
        assert script.count(old) == 1, old
        script = script.replace(old, new)
    (tmp_path / "example.py").write_text(script)
    proc = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "The number of learnable parameters in the model" in proc.stdout
    card = json.loads((tmp_path / "saved_model.json").read_text())
    assert card["iterations"] == 4 and card["spec"]["loss"] == "mse" and card["model"]["aspp_rates"] == [2, 4, 6]
    assert card["spec"]["train_file"] == "PurdueShapes5MultiObject-10000-train.gz"
    metrics = json.loads((tmp_path / "saved_model.metrics.json").read_text())
    assert metrics["num_images"] == 1000 and len(metrics["iou"]) == 5
