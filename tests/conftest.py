"""Shared fixtures. Real data comes from `fetch_shapes` (pip download of the DLStudio
1.0.9 sdist, cached in ~/.cache/dlstudio_aspp), so the first run needs the package index."""
import json
import os
from pathlib import Path

import numpy as np

import pytest
from PIL import Image

os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_configure(config):
    """Under pytest-xdist (``-n 2``) each worker holds one torch thread, and so do the processes it starts:
    two workers with two threads each on two cores run several times slower than one thread each."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[2] / "shared"
COCO_TINY = SHARED / "data" / "coco_tiny"
COCO_PERSON = SHARED / "data" / "coco_person"


def shared_data(name: str) -> Path:
    """A real COCO sample in ``../shared/data``. Missing, it skips the test, but under CI (which lays
    ``../shared`` beside the clone) it fails it: a broken checkout must not pass as green."""
    path = SHARED / "data" / name
    if not path.is_dir():
        message = f"the real COCO sample {name} is not at {path}; put a copy of shared/ beside the repository"
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch):
    """Stock DLStudio writes into the working directory; keep that out of the repo."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def real_shapes(tmp_path_factory) -> str:
    """Folder (ending in '/') holding the four real PurdueShapes5MultiObject files, taken from the
    hash-pinned DLStudio 1.0.9 sdist (11 MB, cached) only: never the 400 MB Purdue tarball."""
    from dlstudio_aspp.data import sources

    dest = sources.cache_dir() / "shapes-from-sdist"  # kept between runs, with the decoded-array caches beside it
    sources.fetch_shapes(dest, sources={"pypi-sdist": sources._sdist_source}, log=lambda s: None)
    return str(dest) + "/"


@pytest.fixture(scope="session")
def coco_tiny() -> Path:
    """coco_tiny: 80 + 80 real COCO 2017 photographs, all classes, original annotations."""
    return shared_data("coco_tiny")


def _built(coco_root: Path, tmp_path_factory, name: str, **kw) -> str:
    from dlstudio_aspp.data.coco_build import build_coco

    out = tmp_path_factory.mktemp(name)
    build_coco(coco_root, out, progress=False, log=lambda s: None, **kw)
    return str(out) + "/"


@pytest.fixture(scope="session")
def coco_tiny_person(coco_tiny, tmp_path_factory) -> str:
    """coco_tiny's photographs of people built at 64x64: 12 training and 15 test images, one class."""
    return _built(coco_tiny, tmp_path_factory, "coco_tiny_person", classes=["person"], size=64)


@pytest.fixture(scope="session")
def coco_person(tmp_path_factory) -> str:
    """coco_person (226 training, 73 test photographs, one person of at least 200x200 each) built at 64x64."""
    return _built(shared_data("coco_person"), tmp_path_factory, "coco_person_64", classes=["person"], size=64)


#: Three classes with qualifying instances in both of coco_tiny's splits.
TINY_CLASSES = ["person", "dining table", "bowl"]


@pytest.fixture(scope="session")
def coco_tiny_3(coco_tiny, tmp_path_factory) -> str:
    """coco_tiny built at 64x64 for person, dining table and bowl (real photographs, three classes)."""
    return _built(coco_tiny, tmp_path_factory, "coco_tiny_3", classes=TINY_CLASSES, size=64)


@pytest.fixture(scope="session")
def synthetic_shapes(tmp_path_factory) -> str:
    from dlstudio_aspp.data.sources import make_shapes

    dest = tmp_path_factory.mktemp("synthetic")
    make_shapes(dest, train=24, test=8, seed=0)
    return str(dest) + "/"


SYN_FILES = ("PurdueShapes5MultiObject-24-train.gz", "PurdueShapes5MultiObject-8-test.gz")


@pytest.fixture(scope="session")
def trained_run(synthetic_shapes, tmp_path_factory) -> Path:
    """A run folder trained by `train_and_score` (modern recipe, depth 4, 6 iterations) on the synthetic data."""
    from dlstudio_aspp.runner import train_and_score
    from dlstudio_aspp.spec import RunSpec

    folder = tmp_path_factory.mktemp("run")
    spec = RunSpec.build("modern", data=synthetic_shapes, train_file=SYN_FILES[0], test_file=SYN_FILES[1], depth=4,
                         seed=0, max_iters=6, progress=False, cpu=True)
    train_and_score(spec, folder)
    return folder


@pytest.fixture
def syn(tmp_path):
    """`run` arguments for an 8+4-image synthetic set made by `make-shapes` (depth 4, no progress bar)."""
    from dlstudio_aspp import cli

    data = tmp_path / "syn"
    assert cli.main(["make-shapes", str(data), "--train", "8", "--test", "4"]) == 0
    return ["--data", str(data), "--train-file", "PurdueShapes5MultiObject-8-train.gz",
            "--test-file", "PurdueShapes5MultiObject-4-test.gz", "--depth", "4", "--no-progress"]


def loss_turning(value: float, at: int):
    """(an MSE loss that returns ``value`` (nan, inf) on its ``at``-th call, the dict counting its calls)."""
    import torch

    calls = {"n": 0}

    def loss(out, target):
        calls["n"] += 1
        v = torch.nn.functional.mse_loss(out, target)
        return v * value if calls["n"] == at else v

    return loss, calls


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
    from dlstudio_aspp.segmentation import SemanticSegmentationASPP

    dls = make_dls(dataroot, tmp_path, **kw)
    seg = SemanticSegmentationASPP(dl_studio=dls, max_num_objects=5)
    tr = seg.PurdueShapes5MultiObjectDataset(dl_studio=dls, segmenter=seg, train_or_test="train", dataset_file=train_file)
    te = seg.PurdueShapes5MultiObjectDataset(dl_studio=dls, segmenter=seg, train_or_test="test", dataset_file=test_file)
    seg.load_PurdueShapes5MultiObject_dataset(tr, te, num_workers=0)
    return seg


def rect_poly(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def uncompressed_rle(mask):
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, cur, run = [], 0, 0
    for v in flat:
        if v == cur:
            run += 1
        else:
            counts.append(run)
            cur, run = v, 1
    counts.append(run)
    return {"counts": counts, "size": list(mask.shape)}


@pytest.fixture
def fake_coco(tmp_path):
    """COCO-format files: polygons, an RLE crowd, instances at 199 and 200, non-square images."""
    root = tmp_path / "coco"
    cats = [{"id": 17, "name": "cat", "supercategory": "animal"}, {"id": 18, "name": "dog", "supercategory": "animal"},
            {"id": 6, "name": "bus", "supercategory": "vehicle"}]
    crowd = np.zeros((320, 320), bool)
    crowd[250:300, 20:120] = True
    big_crowd = np.zeros((300, 300), bool)
    big_crowd[10:290, 10:290] = True
    specs = {
        "train2017": (
            [(1, 400, 300), (2, 320, 320), (3, 300, 400), (4, 300, 300)],
            [(1, 18, rect_poly(10, 10, 210, 210), 0), (1, 17, rect_poly(250, 20, 120, 60), 0),   # dog 210: in; small cat kept
             (2, 17, rect_poly(50, 30, 200, 200), 0), (2, 18, uncompressed_rle(crowd), 1),         # cat exactly 200: in
             (3, 17, rect_poly(0, 0, 199, 300), 0),                                                # 199 wide: out
             (4, 18, uncompressed_rle(big_crowd), 1)]),                                           # crowd only: out
        "val2017": ([(10, 640, 480)], [(10, 6, rect_poly(100, 100, 300, 250), 0), (10, 18, rect_poly(0, 0, 50, 50), 0)]),
    }
    for split, (images, anns) in specs.items():
        (root / split).mkdir(parents=True)
        imgs = []
        for iid, w, h in images:
            Image.fromarray((np.random.default_rng(iid).random((h, w, 3)) * 255).astype(np.uint8)).save(root / split / f"{iid:012d}.jpg")
            imgs.append({"id": iid, "width": w, "height": h, "file_name": f"{iid:012d}.jpg"})
        out = []
        for k, (iid, cid, seg, crowd_flag) in enumerate(anns):
            if crowd_flag:
                ys, xs = np.nonzero(np.array(_decode(seg)))
                bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
            else:
                p = seg[0]
                bbox = [p[0], p[1], p[2] - p[0], p[5] - p[1]]
            out.append({"id": 100 + k, "image_id": iid, "category_id": cid, "segmentation": seg, "iscrowd": crowd_flag,
                        "bbox": bbox, "area": bbox[2] * bbox[3]})
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps({"images": imgs, "annotations": out, "categories": cats}))
    return root


def _decode(rle):
    from pycocotools import mask as mask_utils

    return mask_utils.decode(mask_utils.frPyObjects(rle, *rle["size"]))


def build_tiny_sam(img_size: int = 256):
    """A tiny, randomly initialised SAM from segment_anything's own modules: the SAM code path
    runs for real without a checkpoint (none can be downloaded where the tests run)."""
    from functools import partial

    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    dim, patch = 32, 16
    return Sam(
        image_encoder=ImageEncoderViT(img_size=img_size, patch_size=patch, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2,
                                      out_chans=dim, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                                      use_rel_pos=False, window_size=0, global_attn_indexes=()),
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(img_size // patch, img_size // patch),
                                     input_image_size=(img_size, img_size), mask_in_chans=8),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
                                 transformer_dim=dim, iou_head_depth=2, iou_head_hidden_dim=dim),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    )


@pytest.fixture
def tiny_sam_registered(monkeypatch):
    """`--sam-model tiny` builds the tiny random SAM, for this test only."""
    from dlstudio_aspp import sam, spec

    monkeypatch.setattr(spec, "SAM_MODELS", spec.SAM_MODELS + ("tiny",))
    real = sam.architecture
    monkeypatch.setattr(sam, "architecture", lambda t: build_tiny_sam() if t == "tiny" else real(t))
