"""Shared fixtures. Real data comes from `fetch_shapes` (pip download of the DLStudio
1.0.9 sdist, cached in ~/.cache/dlstudio_aspp), so the first run needs the package index."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

SHARED = Path(__file__).resolve().parents[2] / "shared"
COCO_TINY = SHARED / "data" / "coco_tiny"


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch):
    """Stock DLStudio writes into the working directory; keep that out of the repo."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def real_shapes(tmp_path_factory) -> str:
    """Folder (ending in '/') holding the four real PurdueShapes5MultiObject files."""
    from dlstudio_aspp.data.sources import cache_dir, fetch_shapes

    dest = cache_dir() / "shapes"
    fetch_shapes(dest, timeout=3.0, log=lambda s: None)
    return str(dest) + "/"


@pytest.fixture(scope="session")
def synthetic_shapes(tmp_path_factory) -> str:
    from dlstudio_aspp.data.sources import make_shapes

    dest = tmp_path_factory.mktemp("synthetic")
    make_shapes(dest, train=24, test=8, seed=0)
    return str(dest) + "/"


def make_dls(dataroot: str, tmp_path, **kw):
    from dlstudio_aspp.dlstudio_glue import load_dlstudio

    DLStudio = load_dlstudio()
    args = dict(dataroot=dataroot, image_size=[64, 64], path_saved_model=str(tmp_path / "saved_model"), momentum=0.9,
                learning_rate=1e-4, epochs=1, batch_size=4, classes=("rectangle", "triangle", "disk", "oval", "star"),
                use_gpu=False)
    args.update(kw)
    return DLStudio(**args)


def make_segmenter(dataroot: str, tmp_path, train_file: str, test_file: str, **kw):
    """Our segmenter with train/test loaders (0 workers) ready."""
    import torch
    from dlstudio_aspp.segmentation import SemanticSegmentationASPP

    dls = make_dls(dataroot, tmp_path, **kw)
    seg = SemanticSegmentationASPP(dl_studio=dls, max_num_objects=5)
    tr = seg.PurdueShapes5MultiObjectDataset(dl_studio=dls, segmenter=seg, train_or_test="train", dataset_file=train_file)
    te = seg.PurdueShapes5MultiObjectDataset(dl_studio=dls, segmenter=seg, train_or_test="test", dataset_file=test_file)
    seg.load_PurdueShapes5MultiObject_dataset(tr, te, num_workers=0)
    return seg
