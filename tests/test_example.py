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


def test_example_without_data_says_how_to_get_it(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "semantic_segmentation.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "dlstudio-aspp fetch-shapes" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
