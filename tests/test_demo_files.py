"""Files saved from the SAM online demo (cut-outs, screenshots, masks), rendered by the demo's own rules from real
photographs and real PurdueShapes images, read back by `sam-compare --sam-masks` as the masks they show."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import demo_render as render
from dlstudio_aspp import cli
from dlstudio_aspp.demo_files import DemoReader, demo_image, kind_of, read_rgba

COUNT = 5


def iou(a, b) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def up(mask, f):
    return np.kron(mask, np.ones((f, f), bool))


@pytest.fixture(scope="module")
def coco256(coco_tiny, tmp_path_factory) -> str:
    """coco_tiny's photographs of people at 256x256 (exported for the demo at 1024)."""
    from dlstudio_aspp.data.coco_build import build_coco

    out = tmp_path_factory.mktemp("coco256")
    build_coco(coco_tiny, out, progress=False, log=lambda s: None, classes=["person"], size=256)
    return str(out) + "/"


@pytest.fixture(scope="module")
def exported(coco256, tmp_path_factory):
    """A one-iteration COCO run, its first 5 test images exported with --export-demo, and their masks."""
    from dlstudio_aspp.experiments import GridConfig, run_grid

    cfg = GridConfig.from_preset("smoke", dataset="coco", data=coco256, losses=["mse"], aspp=[True], seeds=[0],
                                 max_iters=1, batch_size=2, progress=False, cpu=True)
    run = run_grid(cfg, tmp_path_factory.mktemp("grid"))[0]
    out = run / "sam"
    assert cli.main(["sam-compare", "--run", str(run), "--export-demo", "--count", str(COUNT), "--out", str(out),
                     "--cpu"]) == 0
    test = json.loads((Path(coco256) / "index.json").read_text())["splits"]["test"]
    images = {i: np.array(Image.open(out / "demo_images" / f"{i}.png").convert("RGB")) for i in range(COUNT)}
    truth = {i: np.array(Image.open(Path(coco256) / test[i]["mask"])) > 0 for i in range(COUNT)}
    return run, out, images, truth


def sam_compare(run, out, folder, capsys, *extra):
    capsys.readouterr()
    rc = cli.main(["sam-compare", "--run", str(run), "--sam-masks", str(folder), "--out", str(out / folder.name),
                   "--cpu", *extra])
    printed = capsys.readouterr()
    return rc, json.loads((out / folder.name / "sam_coco_metrics.json").read_text()), printed


def sam_iou(image_record) -> float:
    return [v for k, v in image_record["scores"].items() if k.startswith("SAM")][0]["iou"]


def pieces(mask):
    """Several masks whose union is ``mask`` (for Everything): its left and right halves at its centre."""
    xs = np.nonzero(mask.any(0))[0]
    cut = int(xs.mean())
    left, right = mask.copy(), mask.copy()
    left[:, cut:], right[:, :cut] = False, False
    return [m for m in (left, right) if m.any()]


@pytest.mark.slow
def test_cutouts_of_real_photographs_are_placed_where_they_were_cut(exported, tmp_path, capsys):
    run, out, images, truth = exported
    folder = tmp_path / "cutouts"
    folder.mkdir()
    for i, image in images.items():  # "Cut out object" on each exported image; some renamed, some as the demo saved
        name = f"{i}.png" if i % 2 == 0 else f"download ({i}).png"
        (folder / name).write_bytes(render.png(render.cutout(image, up(truth[i], 4))))
    rc, res, printed = sam_compare(run, out, folder, capsys)
    assert rc == 0, printed.err
    assert [r["index"] for r in res["images"]] == list(range(COUNT))
    assert min(sam_iou(r) for r in res["images"]) >= 0.97
    assert {f["file"]: (f["index"], f["kind"]) for f in res["files"]} == \
        {(f"{i}.png" if i % 2 == 0 else f"download ({i}).png"): (i, "cutout") for i in range(COUNT)}
    md = (out / "cutouts" / "sam_coco_metrics.md").read_text()
    assert "| download (1).png | 1 | all classes (vs union) | cutout |" in md
    figure = Image.open(out / "cutouts" / res["files_figure"])
    assert figure.size[1] >= COUNT * 200 and np.asarray(figure.convert("L")).std() > 10


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["click", "hover", "everything"])
def test_screenshots_of_real_photographs_give_the_mask_shown(exported, tmp_path, capsys, mode):
    """At several scales and offsets in a page, PNG and JPEG, with and without an index in the name."""
    run, out, images, truth = exported
    folder = tmp_path / f"shots_{mode}"
    folder.mkdir()
    views = [(0.62, (300, 90), 0), (1.0, (250, 60), 85), (0.45, (500, 300), 0), (0.8, (120, 200), 90), (0.55, (640, 180), 0)]
    for i, image in images.items():
        scale, offset, jpeg = views[i]
        masks = pieces(up(truth[i], 4)) if mode == "everything" else [up(truth[i], 4)]
        name = (f"{i}" if i < 3 else f"Screenshot {i}") + (".jpg" if jpeg else ".png")
        (folder / name).write_bytes(render.screenshot(image, masks, mode, scale, offset, page=(1500, 1250), seed=i,
                                                      jpeg=jpeg))
    rc, res, printed = sam_compare(run, out, folder, capsys)
    assert rc == 0, printed.err
    assert [r["index"] for r in res["images"]] == list(range(COUNT))
    assert min(sam_iou(r) for r in res["images"]) >= 0.92, [round(sam_iou(r), 3) for r in res["images"]]
    assert all(f["kind"] == "screenshot" for f in res["files"])
    assert sorted(f["index"] for f in res["files"]) == list(range(COUNT))
    assert all(("clicked" in f["how"]) == (mode == "click") for f in res["files"])


@pytest.mark.slow
def test_an_unrelated_picture_is_named_in_one_line_and_the_rest_is_compared(exported, coco_tiny, tmp_path, capsys):
    run, out, images, truth = exported
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i in (0, 1):
        (folder / f"download ({i}).png").write_bytes(render.png(render.cutout(images[i], up(truth[i], 4))))
    photo = sorted((coco_tiny / "train2017").glob("*.jpg"))[0]  # a photograph that was never exported
    Image.open(photo).convert("RGB").resize((900, 700)).save(folder / "download (7).png")
    rc, res, printed = sam_compare(run, out, folder, capsys, "--indices", "0,1")
    assert rc == 1
    line = printed.err.strip().splitlines()[-1]
    assert "download (7).png (read as a screenshot) shows nothing of any exported image" in line
    assert [r["index"] for r in res["images"]] == [0, 1] and len(res["problems"]) == 1
    assert "- not read: --sam-masks: download (7).png" in (out / "mixed" / "sam_coco_metrics.md").read_text()


@pytest.mark.slow
def test_a_cutout_of_an_upload_over_the_demos_limit(exported, coco256):
    """Exported at 2048x2048 (4.2 megapixels): the demo shrinks it by sqrt(1677721 / area) before cutting out."""
    from dlstudio_aspp.data.coco import COCOSegmentationDataset

    run, out, images, truth = exported
    ds = COCOSegmentationDataset(train_or_test="test", root=coco256)
    big = demo_image(ds[2]["image"], 2048)
    assert big.shape[:2] == (2048, 2048)
    cut = render.cutout(big, up(truth[2], 8))
    assert max(cut.shape[:2]) < 0.64 * 2048  # shrunk
    reader = DemoReader({2: ds[2]["image"], 3: ds[3]["image"]}, (256, 256), ["person"], sam_size=2048)
    path = out / "big.png"
    path.write_bytes(render.png(cut))
    got = reader.read(path)
    assert got.index == 2 and got.kind == "cutout" and "scale 0.632" in got.how
    assert iou(got.mask, truth[2]) >= 0.97


@pytest.fixture(scope="module")
def shapes_reader(real_shapes):
    from dlstudio_aspp.data.shapes import PurdueShapes5MultiObjectDataset

    ds = PurdueShapes5MultiObjectDataset(train_or_test="test", dataset_file="PurdueShapes5MultiObject-1000-test.gz",
                                         root=real_shapes)
    items = {i: ds[i] for i in range(COUNT)}
    reader = DemoReader({i: it["image"] for i, it in items.items()}, (64, 64), ["rectangle", "triangle", "disk", "oval",
                                                                             "star"])
    # SAM's masks have no holes; PurdueShapes' leave out each shape's black texture pixels
    masks = {i: np.stack([render.solid(m) for m in it["mask_tensor"].numpy() > 0]) for i, it in items.items()}
    return reader, masks


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["cutout", "click", "hover", "everything"])
def test_real_shapes_images_read_back(shapes_reader, tmp_path, mode):
    """Flat shapes on black: after a click the dimmed outside is black like the image's, and only the outline tells."""
    reader, masks = shapes_reader
    for i, exported in reader.exported.items():
        union = up(masks[i].any(0), 16)
        path = tmp_path / f"{i}.{'jpg' if i == 1 else 'png'}"
        if mode == "cutout":
            data = render.png(render.cutout(exported, union))
            path = path.with_suffix(".png")
        else:
            parts = [up(m, 16) for m in masks[i] if m.any()] if mode == "everything" else [union]
            scale, offset = (0.45, (500, 300)) if i in (2, 4) else (0.62, (300, 90))
            data = render.screenshot(exported, parts, mode, scale, offset, page=(1500, 1250), seed=i,
                                     jpeg=90 if i == 1 else 0)
        path.write_bytes(data)
        got = reader.read(path)
        assert got.index == i
        assert iou(got.mask, masks[i].any(0)) >= (0.97 if mode == "cutout" else 0.92), (i, mode)


def test_the_kinds_are_told_apart_by_content(shapes_reader):
    reader, masks = shapes_reader
    exported = reader.exported[0]
    union = up(masks[0].any(0), 16)
    decode = lambda b: read_rgba(_bytes(b))  # noqa: E731
    assert kind_of(decode(render.png(render.cutout(exported, union)))) in ("cutout", "mask")  # a flat shape: tried both
    assert kind_of(decode(render.screenshot(exported, [union], "hover", 0.5, (10, 60), page=(700, 700)))) == "screenshot"
    mask = np.dstack([union.astype(np.uint8) * 255] * 3 + [np.full(union.shape, 255, np.uint8)])
    assert kind_of(mask) == "mask"


def _bytes(data: bytes):
    import io

    return io.BytesIO(data)


def test_a_file_that_fits_two_images_equally_is_named(tmp_path):
    """Two identical test images: a cut-out without an index could come from either."""
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.integers(0, 255, (3, 64, 64)).astype(np.float32))
    reader = DemoReader({0: image, 1: image.clone()}, (64, 64), ["thing"])
    mask = np.zeros((1024, 1024), bool)
    mask[200:600, 300:700] = True
    (tmp_path / "download.png").write_bytes(render.png(render.cutout(reader.exported[0], mask)))
    with pytest.raises(ValueError, match=r"download\.png fits exported images 0 and 1 about equally; rename it"):
        reader.read(tmp_path / "download.png")
    blank = np.zeros((50, 50, 4), np.uint8)
    Image.fromarray(blank, "RGBA").save(tmp_path / "0_thing.png")
    with pytest.raises(ValueError, match="0_thing.png is fully transparent"):
        reader.read(tmp_path / "0_thing.png")
    Image.fromarray((mask * 255).astype(np.uint8)).save(tmp_path / "mask.png")
    with pytest.raises(ValueError, match="whole-image mask without an index in its name"):
        reader.read(tmp_path / "mask.png")
