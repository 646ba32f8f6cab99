import json
import random
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dlstudio_aspp import cli
from dlstudio_aspp.experiments import GridConfig, run_grid
from dlstudio_aspp.report import make_report
from conftest import build_tiny_sam
from dlstudio_aspp.demo_files import DemoReader, kind_of, parse_name, whole_mask
from dlstudio_aspp.sam import downscale_mask, load_sam

TRAIN, TEST = "PurdueShapes5MultiObject-24-train.gz", "PurdueShapes5MultiObject-8-test.gz"


@pytest.fixture(scope="module")
def grid_run(synthetic_shapes, tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    cfg = GridConfig.from_preset("smoke", data=synthetic_shapes, train_file=TRAIN, test_file=TEST, losses=["mse"],
                                 aspp=[True], seeds=[0], max_iters=1, progress=False, cpu=True)
    folder = run_grid(cfg, root)[0]
    return root, folder


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam") / "tiny_sam.pth"
    torch.save(build_tiny_sam().state_dict(), path)
    return path


def test_whole_command_with_a_tiny_random_sam(grid_run, synthetic_shapes, tiny_ckpt, tiny_sam_registered, capsys):
    root, run = grid_run
    rc = cli.main(["sam-compare", "--run", str(run), "--data", synthetic_shapes, "--test-file", TEST, "--sam-model", "tiny",
                   "--sam-checkpoint", str(tiny_ckpt), "--sam-size", "256", "--points-per-side", "4", "--everything",
                   "--show-input", "--cpu"])
    assert rc == 0
    assert "| **mean** | SAM (box prompts) |" in capsys.readouterr().out
    out = root / "sam"  # default: beside the experiments' runs
    res = json.loads((out / "sam_shapes_metrics.json").read_text())
    assert [r["index"] for r in res["images"]] == [0, 1, 2, 3, 4]
    assert set(res["mean"]) == {"SAM (box prompts)", "SAM everything (vs union)", "mUNet"}
    img = Image.open(out / "sam_shapes.png")
    assert img.size == (4 * 250, 5 * 250)  # input, SAM, mUNet, everything; 5 rows
    assert np.asarray(img.convert("L")).std() > 10
    assert "## SAM comparison" in make_report(root).read_text()


def test_saved_demo_masks(grid_run, synthetic_shapes, tmp_path):
    from dlstudio_aspp.data.shapes import PurdueShapes5MultiObjectDataset

    ds = PurdueShapes5MultiObjectDataset(train_or_test="test", dataset_file=TEST, root=synthetic_shapes)
    names = ["rectangle", "triangle", "disk", "oval", "star"]
    masks = tmp_path / "demo"
    masks.mkdir()
    for i in range(5):
        gt = ds[i]["mask_tensor"].numpy() > 0
        if i == 1:  # whole-image RGBA at twice the size, mask in the alpha channel
            rgba = np.zeros((128, 128, 4), np.uint8)
            rgba[..., 3] = np.kron(gt.any(0), np.ones((2, 2))).astype(np.uint8) * 255
            Image.fromarray(rgba, "RGBA").save(masks / "1.png")
            continue
        for c in np.nonzero(gt.reshape(5, -1).any(1))[0]:
            Image.fromarray(gt[c].astype(np.uint8) * 255).save(masks / f"{i}_{names[c]}.png")
    out = tmp_path / "out"
    rc = cli.main(["sam-compare", "--run", str(grid_run[1]), "--data", synthetic_shapes, "--test-file", TEST,
                   "--sam-masks", str(masks), "--out", str(out), "--cpu"])
    assert rc == 0
    res = json.loads((out / "sam_shapes_metrics.json").read_text())
    for row in res["images"]:
        sam = [v for k, v in row["scores"].items() if k.startswith("SAM")][0]
        assert sam["iou"] == 1.0 and sam["boundary_f1"] == 1.0 and sam["fp_rate"] == 0.0
    assert "SAM (saved, vs union)" in res["images"][1]["scores"]
    assert Image.open(out / "sam_shapes.png").size == (2 * 250, 5 * 250)


def test_mask_reading_rules(tmp_path):
    grey = np.array([[0, 200], [128, 127]], np.uint8)
    rgba = np.dstack([grey] * 3 + [np.full_like(grey, 255)])
    binary = np.kron(np.array([[0, 255], [255, 0]], np.uint8), np.ones((8, 8), np.uint8))
    assert kind_of(np.dstack([binary] * 3 + [np.full_like(binary, 255)])) == "mask"
    assert whole_mask(rgba, (2, 2)).tolist() == [[False, True], [True, False]]
    assert whole_mask(rgba, (4, 4)).sum() == 8  # brought to the test image's size
    assert parse_name(Path("3_disk.png")) == (3, "disk") and parse_name(Path("3_dining table_2.png")) == (3, "dining table")
    assert parse_name(Path("download (1).png")) == (None, None)
    image = torch.zeros(3, 4, 4)
    reader = DemoReader({3: image}, (4, 4), ["rectangle", "disk"], sam_size=4)
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "3_cube.png")
    with pytest.raises(ValueError, match="unknown class 'cube'"):
        reader.read(tmp_path / "3_cube.png")
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "9.png")
    with pytest.raises(ValueError, match="names test image 9, which is not among those compared"):
        reader.read(tmp_path / "9.png")
    (tmp_path / "3.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="3.png is not a readable image"):
        reader.read(tmp_path / "3.png")


def test_downscale_is_a_majority_vote():
    m = np.zeros((4, 4), bool)
    m[:2, :2] = True
    m[2, 2] = True  # 1 of 4 in that block
    assert downscale_mask(m, 2).tolist() == [[True, False], [False, False]]


def test_clear_errors(tmp_path, monkeypatch, tiny_sam_registered):
    with pytest.raises(FileNotFoundError, match="segment-anything#model-checkpoints"):
        load_sam("vit_b", tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="--sam-model must be one of"):
        load_sam("vit_x", tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"w": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="does not fit SAM tiny: 'w' is not in SAM tiny"):
        load_sam("tiny", bad)
    other = tmp_path / "other.pth"  # another model type: a differently sized SAM
    torch.save(build_tiny_sam(img_size=128).state_dict(), other)
    with pytest.raises(ValueError, match=r"does not fit SAM tiny: 'image_encoder.pos_embed' has shape \(1, 8, 8, 64\)"):
        load_sam("tiny", other)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a SAM checkpoint that torch can read"):
        load_sam("tiny", garbage)
    monkeypatch.setitem(sys.modules, "segment_anything", None)
    with pytest.raises(ValueError, match=r"pip install -e \"\.\[sam\]\""):
        load_sam("vit_b", bad)


def test_coco_run_with_tiny_sam(coco_tiny_3, tiny_ckpt, tiny_sam_registered, tmp_path):
    """sam-compare on real COCO photographs: 5 test images by default, --indices picks others, --seed and
    --tolerance are recorded and change what they should."""
    cfg = GridConfig.from_preset("smoke", dataset="coco", data=coco_tiny_3, losses=["mse"], aspp=[True], seeds=[0],
                                 max_iters=1, batch_size=2, progress=False, cpu=True)
    run = run_grid(cfg, tmp_path / "grid")[0]
    base = ["sam-compare", "--run", str(run), "--dataset", "coco", "--data", coco_tiny_3, "--sam-model", "tiny",
            "--sam-checkpoint", str(tiny_ckpt), "--sam-size", "256", "--cpu"]
    assert cli.main(base) == 0
    sam_dir = tmp_path / "grid" / "sam"
    res = json.loads((sam_dir / "sam_coco_metrics.json").read_text())
    assert len(res["images"]) == 5
    assert Image.open(sam_dir / "sam_coco.png").size[1] == 5 * 250  # one row per image
    n = len(json.loads((Path(coco_tiny_3) / "index.json").read_text())["splits"]["test"])
    assert cli.main(base + ["--count", "3", "--seed", "3"]) == 0
    picked = [r["index"] for r in json.loads((sam_dir / "sam_coco_metrics.json").read_text())["images"]]
    assert picked == sorted(random.Random(3).sample(range(n), 3)) and picked != [0, 1, 2]
    f1 = {}
    for tol in (0, 4):
        assert cli.main(base + ["--indices", "7,2", "--seed", "3", "--tolerance", str(tol)]) == 0  # indices win
        res = json.loads((sam_dir / "sam_coco_metrics.json").read_text())
        assert [r["index"] for r in res["images"]] == [7, 2] and res["tolerance_px"] == tol
        f1[tol] = [sc["boundary_f1"] for r in res["images"] for sc in r["scores"].values()]
    assert all(b >= a for a, b in zip(f1[0], f1[4]) if a == a)  # a wider band never scores an edge lower
    assert f1[4] != f1[0]


def test_a_stock_munet_run_is_rebuilt_without_aspp(synthetic_shapes, tmp_path):
    from conftest import make_segmenter
    from dlstudio_aspp.model import StockMUNet
    from dlstudio_aspp.card import RunCard

    seg = make_segmenter(synthetic_shapes, tmp_path, TRAIN, TEST)
    seg.run_code_for_training_for_semantic_segmentation(StockMUNet(depth=4), max_iters=1, progress=False)
    card = RunCard.load(tmp_path)
    model = card.load_model()
    assert card.model["aspp"] is False and model.aspp is None and model.depth == 2


def test_garbage_png_in_saved_masks(tmp_path):
    (tmp_path / "0_disk.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    reader = DemoReader({0: torch.zeros(3, 4, 4)}, (4, 4), ["rectangle", "disk"], sam_size=4)
    readings, problems = reader.read_all(tmp_path)
    assert readings == [] and len(problems) == 1
    assert re.match(r"--sam-masks: 0_disk\.png is not a readable image \(.*\); save it again from the demo$", problems[0])


def test_the_demo_path_end_to_end_on_real_photographs(coco_tiny_3, tmp_path, capsys):
    """--export-demo writes the images to upload (enlarged as SAM gets them) and a table from index to COCO file;
    masks saved back from the demo are read with --sam-masks; the figure's SAM column and the report name their
    source, and the report names folders relative to the run."""
    cfg = GridConfig.from_preset("smoke", dataset="coco", data=coco_tiny_3, losses=["mse"], aspp=[True], seeds=[0],
                                 max_iters=1, batch_size=2, progress=False, cpu=True)
    run = run_grid(cfg, tmp_path / "grid")[0]
    out = run / "sam"
    base = ["sam-compare", "--run", str(run), "--dataset", "coco", "--data", coco_tiny_3, "--indices", "3,1",
            "--out", str(out), "--cpu"]
    assert cli.main(base + ["--export-demo", "--sam-size", "256"]) == 0
    printed = capsys.readouterr().out
    demo = out / "demo_images"
    index = json.loads((demo / "index.json").read_text())
    test = json.loads((Path(coco_tiny_3) / "index.json").read_text())["splits"]["test"]
    assert [(r["file"], r["index"], r["coco_id"], r["source_file"]) for r in index] == \
        [(f"{i}.png", i, test[i]["coco_id"], test[i]["source_file"]) for i in (3, 1)]
    assert Image.open(demo / "3.png").size == (256, 256)  # 64x64 enlarged 4 times
    assert f"| 3.png | 3 | [256, 256] | {test[3]['coco_id']} | {test[3]['source_file']} | coco_tiny |" in printed
    assert f"--sam-masks {out / 'demo_masks'}" in printed
    masks = out / "demo_masks"
    masks.mkdir()
    for i in (3, 1):  # as if saved from the demo: the ground truth at the uploaded size
        gt = np.array(Image.open(Path(coco_tiny_3) / test[i]["mask"])) > 0
        Image.fromarray(np.kron(gt, np.ones((4, 4))).astype(np.uint8) * 255).save(masks / f"{i}.png")
    assert cli.main(base + ["--sam-masks", str(masks)]) == 0
    res = json.loads((out / "sam_coco_metrics.json").read_text())
    assert res["sam_column"] == "SAM (files saved from the demo)"
    assert res["sam_source"] == "files saved from the demo in sam/demo_masks/"
    assert [(f["file"], f["index"], f["kind"]) for f in res["files"]] == [("1.png", 1, "mask"), ("3.png", 3, "mask")]
    assert all(r["scores"]["SAM (saved, vs union)"]["iou"] == 1.0 for r in res["images"])
    assert cli.main(["report", str(run), "--format", "md"]) == 0
    report = (run / "report.md").read_text()
    assert "## SAM comparison" in report and "(files saved from the demo in sam/demo_masks/)" in report
    assert "![sam_coco](sam/sam_coco.png)" in report and str(tmp_path) not in report.split("## Appendix")[0]


def test_export_demo_on_a_coco_run_needs_only_the_run(coco_tiny_3, tmp_path, monkeypatch, capsys):
    """Bug: `sam-compare --run COCO_RUN --export-demo` loaded Shapes from ./data; with --dataset coco it wanted --data.
    The run's card names both, and a relative --data is read against the folder the run was started in."""
    data = Path(coco_tiny_3.rstrip("/"))
    monkeypatch.chdir(data.parent)
    cfg = GridConfig.from_preset("smoke", dataset="coco", data=data.name, losses=["mse"], aspp=[True], seeds=[0],
                                 max_iters=1, batch_size=2, progress=False, cpu=True)
    run = run_grid(cfg, tmp_path / "grid")[0]
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    assert cli.main(["sam-compare", "--run", str(run), "--export-demo", "--count", "2", "--sam-size", "128", "--cpu"]) == 0
    printed = capsys.readouterr().out
    assert "enlarged from 64 px to about 128 px" in printed and "original photograph" in printed
    assert printed.strip().splitlines()[-1].split() == ["dlstudio-aspp", "sam-compare", "--run", str(run), "--sam-size",
                                                       "128", "--indices", "0,1", "--sam-masks", str(tmp_path / "grid" / "sam" / "demo_masks")]
