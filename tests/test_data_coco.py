import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dlstudio_aspp.data import coco as C, coco_build as B
from dlstudio_aspp.errors import UnfinishedError


def test_selection_channels_sizes_and_values(fake_coco, tmp_path):
    index = B.build_coco(fake_coco, tmp_path / "out", classes=["dog", "cat", "bus"], size=64, progress=False, log=lambda s: None)
    train = {e["coco_id"]: e for e in index["splits"]["train"]}
    assert sorted(train) == [1, 2]
    assert train[1]["selected_for"] == ["dog"] and sorted(train[1]["classes"]) == ["cat", "dog"]
    assert train[2]["selected_for"] == ["cat"]
    assert index["label_map"] == {"dog": 83, "cat": 167, "bus": 250}

    class D:
        image_size = [64, 64]
        dataroot = str(tmp_path / "out")

    ds = C.COCOSegmentationDataset(D(), None, "train")
    item = ds[0]  # image 1, 400x300 -> 64x64
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    m = item["mask_tensor"]
    assert m.shape == (3, 64, 64) and m.dtype == torch.uint8
    assert set(m[0].unique().tolist()) == {0, 83} and set(m[1].unique().tolist()) == {0, 167} and m[2].max() == 0
    # dog rectangle x 10..220 of 400, y 10..220 of 300 -> about 33.6 x 44.8 px; small cat (kept) 120x60 -> 19.2 x 12.8
    assert abs((m[0] > 0).sum().item() - 33.6 * 44.8) < 80
    assert abs((m[1] > 0).sum().item() - 19.2 * 12.8) < 40
    dog_box = item["bbox_tensor"][0, 0].tolist()
    assert dog_box == [2, 2, 34, 46]  # round(10*.16), round(10*.2133), round(220*.16)-1, round(220*.2133)-1
    # the crowd region of image 2 is in the dog channel
    assert (ds[1]["mask_tensor"][0] > 0).sum() > 0
    assert Image.open(tmp_path / "out" / train[1]["image"]).size == (64, 64)


def test_rerun_skips_and_settings_are_guarded(fake_coco, tmp_path):
    out = tmp_path / "out"
    B.build_coco(fake_coco, out, classes=["dog", "cat", "bus"], size=64, progress=False, log=lambda s: None)
    first = (out / "images" / "train" / "000000000001.png").stat().st_mtime_ns
    (out / "masks" / "train" / "000000000002.png").unlink()  # as if the build died there
    B.build_coco(fake_coco, out, classes=["dog", "cat", "bus"], size=64, progress=False, log=lambda s: None)
    assert (out / "images" / "train" / "000000000001.png").stat().st_mtime_ns == first
    assert (out / "masks" / "train" / "000000000002.png").is_file()
    assert not list(out.rglob("*.part*"))
    with pytest.raises(ValueError, match="other settings"):
        B.build_coco(fake_coco, out, classes=["dog"], size=64, progress=False, log=lambda s: None)


def test_deterministic_caps(fake_coco, tmp_path):
    a = B.build_coco(fake_coco, tmp_path / "a", classes=["dog", "cat", "bus"], size=64, max_per_split=1, seed=4, progress=False, log=lambda s: None)
    b = B.build_coco(fake_coco, tmp_path / "b", classes=["dog", "cat", "bus"], size=64, max_per_split=1, seed=4, progress=False, log=lambda s: None)
    assert a["splits"] == b["splits"] and len(a["splits"]["train"]) == 1


@pytest.mark.parametrize("case,exc,match", [
    ("unknown", ValueError, "did you mean dog"), ("no-ann", FileNotFoundError, "no --coco-root folder holds annotations/instances_train2017.json"),
    ("no-images", FileNotFoundError, "image folder"), ("bad-json", ValueError, "not valid JSON"),
    ("threshold", ValueError, r"smaller side 210\); --min-size 210 keeps the largest \(--min-size 200 is the homework's rule\)"), ("size", ValueError, "multiple of 8"),
    ("no-categories", ValueError, "has no 'categories' list"), ("no-bbox", ValueError, "annotation 100 has no 'bbox'"),
    ("no-segmentation", ValueError, "annotation 100 has no 'segmentation'"),
    ("bad-image-id", ValueError, "names image id 999, which is not in its 'images' list"),
])
def test_bad_input(fake_coco, tmp_path, case, exc, match):
    classes, kw = ["dog", "cat", "bus"], {}
    if case == "unknown":
        classes = ["dgo"]
    elif case == "no-ann":
        (fake_coco / "annotations" / "instances_train2017.json").unlink()
    elif case == "no-images":
        (fake_coco / "train2017").rename(fake_coco / "elsewhere")
    elif case == "bad-json":
        (fake_coco / "annotations" / "instances_train2017.json").write_text("{not json")
    elif case == "threshold":
        kw["min_size"] = 250
    elif case in ("no-categories", "no-bbox", "no-segmentation", "bad-image-id"):
        f = fake_coco / "annotations" / "instances_train2017.json"
        data = json.loads(f.read_text())
        if case == "no-categories":
            del data["categories"]
        elif case == "bad-image-id":
            data["annotations"][0]["image_id"] = 999
        else:
            del data["annotations"][0][case[3:]]
        f.write_text(json.dumps(data))
    else:
        kw["size"] = 100
    with pytest.raises(exc, match=match):
        B.build_coco(fake_coco, tmp_path / "o", classes=classes, progress=False, log=lambda s: None, **kw)


def test_failed_build_records_its_settings(fake_coco, tmp_path):
    """Bug: after a failed build (no index.json yet) a re-run with other classes reused its PNGs."""
    (fake_coco / "train2017" / "000000000002.jpg").unlink()  # the build ends with an error for it
    out = tmp_path / "out"
    kw = dict(size=64, splits=["train"], progress=False, log=lambda s: None)
    with pytest.raises(UnfinishedError, match="000000000002.jpg"):
        B.build_coco(fake_coco, out, classes=["dog", "cat"], **kw)
    assert not (out / "index.json").exists() and (out / "images" / "train" / "000000000001.png").is_file()
    with pytest.raises(ValueError, match=r"other settings \(classes \['dog', 'cat'\] there, \['cat', 'dog'\] now"):
        B.build_coco(fake_coco, out, classes=["cat", "dog"], **kw)
    with pytest.raises(ValueError, match="size 64 there, 128 now"):
        B.build_coco(fake_coco, out, classes=["dog", "cat"], **dict(kw, size=128))


def test_unreadable_images_are_all_named_after_the_others_are_built(fake_coco, tmp_path):
    first, second = (fake_coco / "train2017" / f"00000000000{k}.jpg" for k in (1, 2))
    kept = first.read_bytes(), second.read_bytes()
    first.write_bytes(b"\xff\xd8\xff garbage")
    second.unlink()
    out, kw = tmp_path / "out", dict(classes=["dog", "cat", "bus"], size=64, progress=False, log=lambda s: None)
    with pytest.raises(UnfinishedError) as err:
        B.build_coco(fake_coco, out, **kw)
    message = str(err.value)
    assert message.startswith("2 source image(s) could not be read") and "index.json was not written" in message
    assert "000000000001.jpg (COCO id 1): cannot identify image file" in message
    assert "000000000002.jpg (COCO id 2): missing" in message
    assert not (out / "index.json").exists() and not list(out.rglob("*.part*"))
    built = sorted(p.relative_to(out) for p in out.rglob("*.png"))
    assert built and all("000000000001" not in str(p) and "000000000002" not in str(p) for p in built)
    first.write_bytes(kept[0])
    second.write_bytes(kept[1])
    before = {p: (out / p).stat().st_mtime_ns for p in built}
    index = B.build_coco(fake_coco, out, **kw)  # the same command, after the files are fixed
    assert (out / "index.json").is_file() and {p: (out / p).stat().st_mtime_ns for p in built} == before
    assert any(e["coco_id"] == 1 for e in index["splits"]["train"])


def test_the_installed_script_exits_1_naming_unreadable_images_and_2_for_a_user_error(fake_coco, tmp_path):
    import shutil

    script = shutil.which("dlstudio-aspp")
    assert script, "the dlstudio-aspp script is not installed (pip install -e .)"
    (fake_coco / "train2017" / "000000000002.jpg").write_bytes(b"not a jpeg")
    build = [script, "build-coco", "--coco-root", str(fake_coco), "--classes", "dog", "cat", "--size", "64", "--splits", "train",
             "--no-progress"]
    failed = subprocess.run([*build, "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert failed.returncode == 1, failed.stderr[-1000:]
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 source image(s) could not be read") and "000000000002.jpg (COCO id 2)" in last
    mistyped = subprocess.run([*build, "--out", str(tmp_path / "p"), "--size", "100"], capture_output=True, text=True)
    assert mistyped.returncode == 2 and mistyped.stderr.count("\n") == 1, mistyped.stderr


def test_class_without_images_in_a_split_warns(fake_coco, tmp_path):
    with pytest.warns(RuntimeWarning, match=r"test \(val2017\): no image qualifies for dog, cat"):
        B.build_coco(fake_coco, tmp_path / "o", classes=["dog", "cat", "bus"], size=64, progress=False, log=lambda s: None)


def test_corrupt_index_names_the_file(tmp_path):
    (tmp_path / "index.json").write_text("{oops")
    with pytest.raises(ValueError, match=r"index\.json is not valid JSON"):
        C.COCOSegmentationDataset(train_or_test="train", root=tmp_path)


def test_real_coco_tiny(coco_tiny, tmp_path):
    index = B.build_coco(coco_tiny, tmp_path / "tiny", classes=["dog", "cat", "motorcycle", "pizza", "bus"],
                         progress=False, log=lambda s: None)
    assert index["counts"]["train"] == {"dog": 2, "cat": 2, "motorcycle": 1, "pizza": 0, "bus": 0}
    assert index["counts"]["test"] == {"dog": 0, "cat": 0, "motorcycle": 0, "pizza": 1, "bus": 1}

    ds = C.COCOSegmentationDataset(train_or_test="train", root=tmp_path / "tiny")
    for i in range(len(ds)):
        it = ds[i]
        assert it["image"].shape == (3, 256, 256) and it["mask_tensor"].shape == (5, 256, 256)
        vals = set(it["mask_tensor"].unique().tolist())
        assert vals <= {0, 50, 100, 150, 200, 250} and len(vals) >= 2
    with pytest.raises(ValueError, match="image_size"):
        C.COCOSegmentationDataset(train_or_test="train", root=tmp_path / "tiny", image_size=[64, 64])


@pytest.mark.slow
def test_the_segmenter_trains_and_scores_on_real_photographs(coco_tiny_3, tmp_path):
    """The stock-like API on a set built from real COCO photographs: COCO's defaults, the loss falls on the
    training photographs, the test split is scored against the floors. (Whether it learns is scored on
    held-out photographs in test_learning.py.)"""
    from conftest import TINY_CLASSES, make_dls
    from dlstudio_aspp.model import mUNetASPP
    from dlstudio_aspp.segmentation import SemanticSegmentationASPP

    dls = make_dls(coco_tiny_3, tmp_path, batch_size=2, epochs=8, learning_rate=1e-4)
    seg = SemanticSegmentationASPP(dl_studio=dls, max_num_objects=5)
    tr = C.COCOSegmentationDataset(dls, seg, "train")
    te = C.COCOSegmentationDataset(dls, seg, "test")
    seg.load_PurdueShapes5MultiObject_dataset(tr, te, num_workers=0)
    torch.manual_seed(0)
    h = seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4, num_classes=3), loss="mse", seed=0,
                                                            augment="none", normalize="none", progress=False)
    assert np.mean(h["loss"][-2:]) < 0.7 * np.mean(h["loss"][:2])
    # with a COCO training set, the stock-like path takes COCO's defaults: augmentation, normalised inputs
    spec = seg.spec_for(loss="mse")
    assert spec.dataset == "coco" and spec.augment_level() == "standard" and spec.normalization() == "dataset"
    m = seg.run_code_for_testing_semantic_segmentation(mUNetASPP(depth=4, num_classes=3), progress=False)
    assert m["class_names"] == TINY_CLASSES and m["num_images"] == len(te) >= 15
    assert len(m["floors"]["fixed"]) == 3 and 0 < m["floors"]["all"][0] < 1  # scored against the floors, as `run` is


@pytest.mark.slow
def test_the_coco_example_runs_like_the_stock_script(coco_tiny, tmp_path):
    """examples/semantic_segmentation_coco.py, run as a user runs it, on a set built from coco_tiny; only the
    budget and the depth are cut for the test."""
    repo = Path(__file__).resolve().parents[1]
    B.build_coco(coco_tiny, tmp_path / "data" / "coco_seg", classes=["person"], size=256, progress=False,
                 log=lambda s: None)
    proc = _run_example(repo, tmp_path, {})
    card = json.loads((tmp_path / "saved_model_coco.json").read_text())
    assert card["spec"]["recipe"] == "coco" and card["model"]["aspp_rates"] == [6, 12, 18] and card["augment"] == "standard"
    assert "fixed mask" in proc.stdout and card["iterations"] == 2


def _run_example(repo: Path, where: Path, replace: dict):
    script = (repo / "examples" / "semantic_segmentation_coco.py").read_text()
    assert "options = {}" in script and "depth = 4 " in script  # the coco recipe's depth, as run trains
    script = script.replace("options = {}", "options = dict(max_iters=2, progress=False)")
    script = script.replace("os.path.dirname(os.path.abspath(__file__))", repr(str(repo / "examples")))
    for old, new in replace.items():
        assert old in script, old
        script = script.replace(old, new)
    (where / "example.py").write_text(script)
    proc = subprocess.run([sys.executable, "example.py"], cwd=where, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.mark.slow
def test_the_coco_example_builds_its_set_from_several_folders(coco_tiny, tmp_path):
    repo = Path(__file__).resolve().parents[1]
    extra = _tiny_extra(tmp_path)
    _run_example(repo, tmp_path, {"coco_roots = []": f"coco_roots = [{str(coco_tiny)!r}, {str(extra)!r}]"})
    index = json.loads((tmp_path / "data" / "coco_seg" / "index.json").read_text())
    assert index["settings"]["coco_roots"] == [str(coco_tiny.resolve()), str(extra.resolve())]
    assert json.loads((tmp_path / "saved_model_coco.json").read_text())["model"]["aspp_rates"] == [2, 4, 6]  # 96x96


def _edit_train_json(root, change):
    f = root / "annotations" / "instances_train2017.json"
    data = json.loads(f.read_text())
    change(data)
    f.write_text(json.dumps(data))


@pytest.mark.parametrize("name", ["../../secret.jpg", "/etc/secret.jpg"])
def test_a_file_name_outside_the_coco_root_is_refused(fake_coco, tmp_path, name):
    """Bug: `../../x.jpg` or an absolute file_name in the JSON was read and its pixels stored in the built set."""
    secret = tmp_path / "secret.jpg"
    Image.fromarray(np.zeros((300, 300, 3), np.uint8)).save(secret)
    _edit_train_json(fake_coco, lambda d: d["images"][0].update(file_name=name.replace("/etc", str(tmp_path))))
    with pytest.raises(ValueError, match="file_name .*(leads outside|is not a path inside)"):
        B.build_coco(fake_coco, tmp_path / "out", classes=["dog", "cat", "bus"], size=64, progress=False, log=lambda s: None)
    assert not list((tmp_path / "out").rglob("*.png"))


def test_an_index_entry_outside_the_set_is_refused(fake_coco, tmp_path):
    out = tmp_path / "out"
    B.build_coco(fake_coco, out, classes=["dog", "cat", "bus"], size=64, progress=False, log=lambda s: None)
    index = json.loads((out / "index.json").read_text())
    index["splits"]["train"][0]["image"] = "../../../etc/passwd"
    (out / "index.json").write_text(json.dumps(index))
    ds = C.COCOSegmentationDataset(train_or_test="train", root=out)
    with pytest.raises(ValueError, match="index.json image '../../../etc/passwd' leads outside"):
        ds[0]


@pytest.mark.parametrize("width", [0, -5, 10 ** 9, "640"])
def test_absurd_sizes_in_the_json_are_one_line(fake_coco, tmp_path, width):
    _edit_train_json(fake_coco, lambda d: d["images"][0].update(width=width))
    with pytest.raises(ValueError, match=f"image 1 has height 300 and width {width!r}; both must be whole numbers"):
        B.build_coco(fake_coco, tmp_path / "out", classes=["dog", "cat", "bus"], size=64, progress=False, log=lambda s: None)


def test_a_decompression_bomb_is_one_line(fake_coco, tmp_path, monkeypatch):
    monkeypatch.setattr(B, "MAX_PIXELS", 1000)  # the fixture's 400x300 image is then a "bomb"
    with pytest.raises(ValueError, match=r"000000000001\.jpg \(COCO id 1\) is too large to decode safely"):
        B.build_coco(fake_coco, tmp_path / "out", classes=["dog", "cat", "bus"], size=64, progress=False, log=lambda s: None)


def test_run_builds_the_coco_set_then_trains_on_it(coco_tiny, tmp_path, capsys):
    """`run --dataset coco --coco-root ROOT --classes person`: the set is built when missing, then a run is made
    with COCO's defaults (standard augmentation, inputs normalised by the training images' statistics)."""
    from dlstudio_aspp import cli

    out, data = tmp_path / "run", tmp_path / "coco_person"
    rc = cli.main(["run", "--dataset", "coco", "--coco-root", str(coco_tiny), "--classes", "person", "--data", str(data),
                   "--out", str(out), "--max-iters", "2", "--depth", "4", "--batch-size", "2", "--test-subset", "2",
                   "--no-progress", "--cpu"])
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "building the COCO set for person" in printed
    assert "to train longer, raise --max-iters (this run: 2 iterations)" in printed  # the recipe's budget is iterations
    assert json.loads((data / "index.json").read_text())["counts"]["train"] == {"person": 12}
    card = json.loads((out / "saved_model.json").read_text())
    assert card["class_names"] == ["person"] and card["augment"] == "standard" and len(card["mean"]) == 3
    assert card["spec"]["rates"] == [2, 4, 6] == card["model"]["aspp_rates"]  # --rates auto at 96x96's 12x12
    assert card["spec"]["recipe"] == "coco" and card["spec"]["val_split"] is None and card["image_size"] == [96, 96]
    from dlstudio_aspp.card import RunCard

    assert list(RunCard.load(out).build_model().aspp.rates) == [2, 4, 6]  # what evaluation, predict and sam-compare rebuild
    metrics = json.loads((out / "saved_model.metrics.json").read_text())
    assert metrics["num_images"] == 2 and 0 < metrics["floors"]["all"][0] < 1  # COCO runs are scored against floors
    assert cli.main(["report", str(out), "--format", "md"]) == 0
    report = (out / "report.md").read_text()
    assert "| person | " in report and "fixed mask" in report
    why = report.split("### Why the recipe chose these values")[1].split("###")[0]  # --max-iters 2 is the user's
    assert "| `--val-split` | off: train on every image and keep the last weights" in why and "`--max-iters`" not in why
    options = report.split("### Options (the run's spec)")[1]
    assert "| `--val-split` | off |" in options and "| `--rates` | 2,4,6 |" in options and "| `--aspp` | on |" in options


def test_build_coco_caps_and_splits_from_the_command_line(coco_tiny, tmp_path, capsys):
    """--max-per-class caps each class (picked by --seed), --splits train builds that split only."""
    from dlstudio_aspp import cli

    out = tmp_path / "capped"
    assert cli.main(["build-coco", "--coco-root", str(coco_tiny), "--classes", "person", "--size", "64",
                     "--max-per-class", "5", "--out", str(out), "--no-progress"]) == 0
    index = json.loads((out / "index.json").read_text())
    assert index["counts"]["train"] == {"person": 5} and index["counts"]["test"] == {"person": 5}
    assert index["settings"]["max_per_class"] == 5 and len(list((out / "images" / "train").glob("*.png"))) == 5
    only = tmp_path / "train_only"
    assert cli.main(["build-coco", "--coco-root", str(coco_tiny), "--classes", "person", "--size", "64",
                     "--splits", "train", "--out", str(only), "--no-progress"]) == 0
    assert list(json.loads((only / "index.json").read_text())["splits"]) == ["train"]
    assert not (only / "images" / "test").exists()
    with pytest.raises(ValueError, match="has no 'test' split .*--splits train"):
        C.COCOSegmentationDataset(train_or_test="test", root=only)


#: Twelve classes with a qualifying instance in coco_tiny's train2017: masks need 16-bit PNGs.
TWELVE = ["person", "dining table", "bowl", "laptop", "bed", "dog", "cat", "airplane", "bench", "toilet", "elephant",
          "zebra"]


def test_nine_to_sixteen_classes_use_sixteen_bit_masks(coco_tiny, tmp_path):
    index = B.build_coco(coco_tiny, tmp_path / "twelve", classes=TWELVE, size=64, splits=["train"], progress=False,
                         log=lambda s: None)
    assert all(v >= 1 for v in index["counts"]["train"].values())
    ds = C.COCOSegmentationDataset(train_or_test="train", root=tmp_path / "twelve")
    from dlstudio_aspp.masks import mask_values_for

    values = mask_values_for(12)
    seen = set()
    for i, entry in enumerate(ds.entries):
        assert Image.open(tmp_path / "twelve" / entry["mask"]).mode.startswith("I;16")
        m = ds[i]["mask_tensor"]
        assert m.shape == (12, 64, 64)
        for c in range(12):
            assert set(m[c].unique().tolist()) <= {0, values[c]}
        seen |= {TWELVE[c] for c in range(12) if m[c].any()}
    assert {"elephant", "zebra", "toilet"} <= seen  # classes 9-12 live in the upper byte


def test_more_than_sixteen_classes_are_refused_before_anything_is_written(coco_tiny, tmp_path):
    classes = TWELVE + ["giraffe", "suitcase", "broccoli", "banana", "sandwich"]
    with pytest.raises(ValueError, match="--classes takes at most 16 classes .*got 17"):
        B.build_coco(coco_tiny, tmp_path / "seventeen", classes=classes, size=64, progress=False, log=lambda s: None)
    assert not (tmp_path / "seventeen").exists()


def test_a_mistyped_class_writes_nothing_and_messages_name_the_flag_typed(coco_tiny, tmp_path, capsys):
    """Bug: --classes persn was reported well, but build_settings.json was written first, so the corrected command
    was refused ("holds a build with other settings ... use another --out"; for `run`, that flag is --data)."""
    from dlstudio_aspp import cli

    out = tmp_path / "set"
    argv = ["build-coco", "--coco-root", str(coco_tiny), "--size", "64", "--out", str(out), "--no-progress", "--classes"]
    assert cli.main(argv + ["persn"]) == 2
    assert "did you mean person" in capsys.readouterr().err and not out.exists()
    assert cli.main(argv + ["person"]) == 0
    run = ["run", "--dataset", "coco", "--coco-root", str(coco_tiny), "--size", "64", "--max-iters", "1", "--depth", "4",
           "--cpu", "--no-progress", "--out", str(tmp_path / "run")]
    assert cli.main(run + ["--data", str(tmp_path / "other"), "--classes", "persn"]) == 2
    assert not (tmp_path / "other").exists()
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / B.SETTINGS).write_text(json.dumps(dict(classes=["dog"], min_size=200, size=64, max_per_class=None,
                                                               max_per_split=None, seed=0, splits=["train", "test"])))
    assert cli.main(run + ["--data", str(tmp_path / "half"), "--classes", "person"]) == 2
    assert "use another --data or the same settings" in capsys.readouterr().err


# ---- several folders, one set; a rule per split ------------------------------------------------------------------

def _second_folder(fake_coco, tmp_path, bus=True):
    """A train-only export: other category ids, one image also in fake_coco (same id and file), one with fake_coco's
    image 2's content under another id, a train image that is fake_coco's test image 10, and two new images (a big
    dog; a cat of 120x120 that only a looser training rule admits)."""
    import shutil

    root = tmp_path / "export"
    (root / "train2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    shutil.copy(fake_coco / "train2017" / "000000000001.jpg", root / "train2017" / "000000000001.jpg")
    shutil.copy(fake_coco / "train2017" / "000000000002.jpg", root / "train2017" / "copy_of_2.jpg")
    shutil.copy(fake_coco / "val2017" / "000000000010.jpg", root / "train2017" / "000000000010.jpg")
    for iid in (60, 70):
        Image.fromarray((np.random.default_rng(iid).random((300, 300, 3)) * 255).astype(np.uint8)).save(
            root / "train2017" / f"{iid:012d}.jpg")
    from conftest import rect_poly

    images = [{"id": 1, "width": 400, "height": 300, "file_name": "000000000001.jpg"},
              {"id": 500, "width": 320, "height": 320, "file_name": "copy_of_2.jpg"},
              {"id": 10, "width": 640, "height": 480, "file_name": "000000000010.jpg"},
              {"id": 60, "width": 300, "height": 300, "file_name": "000000000060.jpg"},
              {"id": 70, "width": 300, "height": 300, "file_name": "000000000070.jpg"}]
    anns = [(1, 5, rect_poly(10, 10, 210, 210)), (500, 9, rect_poly(50, 30, 200, 200)),
            (10, 5, rect_poly(100, 100, 300, 250)), (60, 5, rect_poly(20, 20, 250, 250)), (70, 9, rect_poly(10, 10, 120, 120))]
    annotations = [{"id": 900 + k, "image_id": i, "category_id": c, "segmentation": seg, "iscrowd": 0,
                    "bbox": [seg[0][0], seg[0][1], seg[0][2] - seg[0][0], seg[0][5] - seg[0][1]], "area": 1.0}
                   for k, (i, c, seg) in enumerate(anns)]
    cats = [{"id": 5, "name": "dog"}, {"id": 9, "name": "cat"}] + [{"id": 1, "name": "bus"}] * bus  # ids: not fake_coco's
    (root / "annotations" / "instances_train2017.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": cats}))
    return root


def test_a_set_from_two_folders_takes_each_image_once_and_matches_classes_by_name(fake_coco, tmp_path):
    export = _second_folder(fake_coco, tmp_path, bus=False)
    logs = []
    with pytest.warns(RuntimeWarning, match="has no category named bus"):
        index = B.build_coco([fake_coco, export], tmp_path / "set", classes=["dog", "cat", "bus"], size=64,
                             progress=False, log=logs.append)
    train = index["splits"]["train"]
    assert [(Path(e["folder"]).name, e["coco_id"]) for e in train] == [("coco", 1), ("coco", 2), ("export", 60)]
    assert [(Path(e["folder"]).name, e["coco_id"]) for e in index["splits"]["test"]] == [("coco", 10)]
    assert index["summary"]["train"]["taken_once"] == 3  # id 1 (same id and file), id 500 (same content), id 10 (test)
    assert index["summary"]["train"]["folders"] == {str(fake_coco.resolve()): 2, str(export.resolve()): 1}
    assert "3 found in two folders or both splits were taken once" in logs[0] and "from coco 2, export 1" in logs[0]
    assert index["settings"]["coco_roots"] == [str(fake_coco.resolve()), str(export.resolve())]
    ds = C.COCOSegmentationDataset(train_or_test="train", root=tmp_path / "set")
    m = ds[2]["mask_tensor"]  # export's dog (its category id 5) lands in the dog channel
    assert m[0].any() and not m[1].any() and abs((m[0] > 0).float().mean().item() - (250 / 300) ** 2) < 0.05


def test_one_folder_per_split_and_the_training_rule_admits_smaller_instances_to_training_only(fake_coco, tmp_path):
    export = _second_folder(fake_coco, tmp_path)
    (fake_coco / "annotations" / "instances_train2017.json").unlink()  # fake_coco: the test split only
    kw = dict(classes=["dog", "cat", "bus"], size=64, progress=False, log=lambda s: None)
    index = B.build_coco([fake_coco, export], tmp_path / "loose", train_min_size=100, min_size=200, **kw)
    train = {e["coco_id"]: e for e in index["splits"]["train"]}
    assert sorted(train) == [1, 60, 70, 500] and not train[70]["test_rule"] and train[60]["test_rule"]
    assert index["summary"]["train"]["rule"].endswith("at least 100x100 px")
    assert index["summary"]["test"]["rule"].endswith("at least 200x200 px")
    ds = C.COCOSegmentationDataset(train_or_test="train", root=tmp_path / "loose")
    assert [ds.entries[i]["coco_id"] for i in ds.validation_candidates()] == [1, 60, 500]
    from dlstudio_aspp.validation import split_for_validation

    with pytest.warns(UserWarning, match="holds out"):
        rest, held = split_for_validation(torch.utils.data.Subset(ds, [3, 2, 1]), 0.5)  # a Subset is looked through
    assert held.indices == [0, 2] and rest.indices == [1]  # Subset index 1 is ds[2], id 70: it never validates
    strict = B.build_coco([fake_coco, export], tmp_path / "strict", **kw)
    assert 70 not in {e["coco_id"] for e in strict["splits"]["train"]}
    with pytest.raises(ValueError, match="none of the .* at least 300x300 .*--train-min-size 250 keeps the largest"):
        B.build_coco([fake_coco, export], tmp_path / "none", train_min_size=300, **kw)


def test_a_rerun_with_the_same_folders_skips_and_other_folders_are_refused(fake_coco, tmp_path):
    export = _second_folder(fake_coco, tmp_path)
    kw = dict(classes=["dog", "cat", "bus"], size=64, progress=False, log=lambda s: None)
    out = tmp_path / "set"
    B.build_coco([fake_coco, export], out, **kw)
    made = (out / "images" / "train" / "000000000060.png").stat().st_mtime_ns
    B.build_coco([fake_coco, export], out, **kw)
    assert (out / "images" / "train" / "000000000060.png").stat().st_mtime_ns == made
    with pytest.raises(ValueError, match="other settings \\(coco_roots .*use another --out"):
        B.build_coco([fake_coco], out, **kw)
    with pytest.raises(ValueError, match="other settings \\(coco_roots"):
        B.build_coco([export, fake_coco], out, **kw)
    with pytest.raises(ValueError, match="distinct folders"):
        B.build_coco([fake_coco, fake_coco], tmp_path / "twice", **kw)


def test_a_folder_whose_file_names_escape_it_is_refused(fake_coco, tmp_path):
    export = _second_folder(fake_coco, tmp_path)
    f = export / "annotations" / "instances_train2017.json"
    data = json.loads(f.read_text())
    data["images"][3]["file_name"] = f"../../{fake_coco.name}/train2017/000000000001.jpg"
    f.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="leads outside"):
        B.build_coco([fake_coco, export], tmp_path / "set", classes=["dog", "bus"], size=64, progress=False,
                     log=lambda s: None)


def test_a_folder_without_annotations_is_one_line(fake_coco, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no annotations/instances_train2017.json or .*val2017"):
        B.build_coco([fake_coco, tmp_path / "empty"], tmp_path / "set", classes=["dog"], progress=False, log=print)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        B.build_coco([tmp_path / "nowhere"], tmp_path / "set", classes=["dog"], progress=False, log=print)


def _tiny_extra(tmp_path, n=10):
    """A real folder cut from coco_person_extra: its first ``n`` photographs with a person of at least 100x100."""
    from conftest import shared_data
    import shutil

    src = shared_data("coco_person_extra")
    data = json.loads((src / "annotations" / "instances_train2017.json").read_text())
    big = sorted({a["image_id"] for a in data["annotations"] if not a["iscrowd"] and min(a["bbox"][2:]) >= 100})[:n]
    root = tmp_path / "extra_tiny"
    (root / "train2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    images = [i for i in data["images"] if i["id"] in big]
    for i in images:
        shutil.copy(src / "train2017" / i["file_name"], root / "train2017" / i["file_name"])
    data.update(images=images, annotations=[a for a in data["annotations"] if a["image_id"] in big])
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps(data))
    return root


def test_run_builds_from_two_real_folders_then_trains(coco_tiny, tmp_path, capsys):
    """`run --coco-root A B --train-min-size 100 --val-split 0.1`: one set from coco_tiny and a cut of
    coco_person_extra; the card and the report say how many images each split holds and why."""
    from dlstudio_aspp import cli

    extra = _tiny_extra(tmp_path)
    out, data = tmp_path / "run", tmp_path / "both"
    argv = ["run", "--dataset", "coco", "--coco-root", str(coco_tiny), str(extra), "--train-min-size", "100",
            "--size", "64", "--data", str(data), "--out", str(out), "--max-iters", "2", "--depth", "4", "--batch-size",
            "2", "--test-subset", "2", "--val-split", "0.1", "--no-progress", "--cpu"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    index = json.loads((data / "index.json").read_text())
    folders = index["summary"]["train"]["folders"]
    assert folders[str(extra.resolve())] == 10 and folders[str(coco_tiny.resolve())] >= 12
    assert set(index["summary"]["test"]["folders"]) == {str(coco_tiny.resolve())}
    card = json.loads((out / "saved_model.json").read_text())
    assert card["data"]["train"]["images"] == len(index["splits"]["train"]) and "100x100" in card["data"]["train"]["rule"]
    assert cli.main(["report", str(out), "--format", "md"]) == 0
    report = (out / "report.md").read_text()
    assert "## Data" in report and "extra_tiny 10" in report and "at least 200x200 px" in report
    assert "meet the test split's rule" in report
    again = [a if a != "100" else "150" for a in argv]
    assert cli.main(again[:again.index("--out") + 1] + [str(tmp_path / "other")] + again[again.index("--out") + 2:]) == 2
    assert "other settings (train_min_size 100.0 there, 150.0 now)" in capsys.readouterr().err


def test_the_coco_preset_builds_at_the_homeworks_256_unless_size_is_given(coco_tiny, tmp_path, monkeypatch):
    from argparse import Namespace

    from dlstudio_aspp.commands import _coco_set
    from dlstudio_aspp.experiments import GridConfig

    cfg = GridConfig.from_preset("coco")
    args = Namespace(coco_root=[str(coco_tiny)], classes=["person"], size=None, min_size=200, train_min_size=None,
                     max_per_class=None, dry_run=False)
    monkeypatch.chdir(tmp_path)  # the default folder is data/coco_<classes>_<size> in the working directory
    spec = _coco_set(cfg.spec.replace(progress=False), args, cfg.size)
    assert spec.data == "data/coco_person_256" and C.read_index(spec.data)["settings"]["size"] == 256
    args.size = 64  # --size wins over the preset's
    spec = _coco_set(cfg.spec.replace(data=str(tmp_path / "small"), progress=False), args, cfg.size)
    assert C.read_index(spec.data)["settings"]["size"] == 64


def test_experiments_build_from_several_folders_first(coco_tiny, tmp_path, capsys):
    from dlstudio_aspp import cli

    extra = _tiny_extra(tmp_path, n=6)
    data = tmp_path / "set"
    argv = ["experiments", str(tmp_path / "grid"), "--preset", "smoke", "--dataset", "coco", "--coco-root",
            str(coco_tiny), str(extra), "--train-min-size", "100", "--size", "64", "--data", str(data), "--loss", "mse",
            "--aspp", "on", "--seed", "0", "--max-iters", "1", "--no-progress", "--cpu", "--no-report"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert "building the COCO set for person" in capsys.readouterr().out
    index = json.loads((data / "index.json").read_text())
    assert index["summary"]["train"]["folders"][str(extra.resolve())] == 6
    card = json.loads(next((tmp_path / "grid" / "runs").glob("*/saved_model.json")).read_text())
    assert card["data"]["train"]["rule"].endswith("100x100 px") and card["spec"]["data"].rstrip("/") == str(data)


def test_the_builder_options_are_declared_once(fake_coco):
    """build-coco, run --coco-root and build_settings() read one declaration: one default class rule, stated
    in both --help texts, and run offers only the options it can pass on."""
    from dlstudio_aspp import cli
    from dlstudio_aspp.data.coco_options import BUILD_DEFAULTS, BUILD_OPTIONS

    assert B.build_settings(fake_coco)["classes"] == list(BUILD_DEFAULTS["classes"]) == ["person"]
    assert {k: v for k, v in B.build_settings(fake_coco).items() if k in BUILD_DEFAULTS} == {
        k: list(v) if isinstance(v, tuple) else v for k, v in BUILD_DEFAULTS.items()} | {"train_min_size": 200}
    subs = cli.build_parser()._subparsers._group_actions[0].choices
    for command in ("build-coco", "run", "experiments"):
        text = " ".join(subs[command].format_help().split())
        assert "COCO category names, one mask channel each (default: person)" in text, command
        flags = {a.dest for a in subs[command]._actions}
        offered = {o.name for o in BUILD_OPTIONS if o.run or command == "build-coco"}
        assert offered <= flags, (command, offered - flags)
    assert subs["run"].parse_args(["--seed", "3"]).seed == 3  # run's --seed stays the training seed
