"""`predict`: a trained run on your own pictures."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from dlstudio_aspp import cli
from dlstudio_aspp.card import RunCard



@pytest.fixture
def trained(trained_run):
    return trained_run


def test_predict_gives_the_masks_evaluation_computed(trained, tmp_path):
    """The first test images, saved as PNG and predicted, give the masks evaluation made of them."""
    samples = np.load(RunCard.load(trained).files.samples_file)
    card = RunCard.load(trained)
    files = []
    for k, image in enumerate(samples["images"]):
        files.append(tmp_path / f"test{k}.png")
        Image.fromarray(image.transpose(1, 2, 0)).save(files[-1])
    from dlstudio_aspp import predict

    masks = predict(trained, files)
    assert card.output == "logits"  # the modern recipe: a class is present where its logit is above 0
    expected = torch.from_numpy(samples["outputs"]) > 0
    assert len(masks) == len(files) and all(torch.equal(m, e) for m, e in zip(masks, expected))


def test_a_folder_of_mixed_images(trained, tmp_path, capsys):
    pics = tmp_path / "pics"
    pics.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((100, 150, 3)) * 255).astype(np.uint8)).save(pics / "wide.jpg")
    Image.fromarray((rng.random((37, 41)) * 255).astype(np.uint8), mode="L").save(pics / "grey.png")
    Image.fromarray((rng.random((64, 64, 4)) * 255).astype(np.uint8), mode="RGBA").save(pics / "alpha.png")
    (pics / "notes.txt").write_text("not an image, and not picked up from a folder")
    out = tmp_path / "out"
    assert cli.main(["predict", str(trained), str(pics), "--out", str(out), "--cpu", "--no-progress"]) == 0
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["image"] for r in lines] == ["alpha", "grey", "wide"]
    assert [r["size"] for r in lines] == [[64, 64], [37, 41], [100, 150]]
    names = RunCard.load(trained).class_names
    for r in lines:
        assert set(r["fraction"]) == set(names) and all(0 <= v <= 1 for v in r["fraction"].values())
        overlay = Image.open(out / f"{r['image']}_overlay.png")
        assert overlay.size == (r["size"][1], r["size"][0]) and overlay.mode == "RGB"
        mask = np.asarray(Image.open(out / f"{r['image']}_{names[0]}.png"))
        assert mask.shape == tuple(r["size"]) and set(np.unique(mask)) <= {0, 255}
        assert mask.mean() / 255 == pytest.approx(r["fraction"][names[0]], abs=1e-6)


@pytest.mark.parametrize("case,match", [
    ("text", "is not an image this tool can read"), ("empty", "holds no images"), ("missing", "does not exist"),
    ("no-weights", "no trained weights"),
])
def test_bad_inputs_are_one_line(trained, tmp_path, capsys, case, match):
    run, target = str(trained), tmp_path / "in"
    if case == "text":
        target = tmp_path / "a.png"
        target.write_text("hello")
    elif case == "empty":
        target.mkdir()
    elif case == "no-weights":
        import shutil

        run = str(tmp_path / "run")
        shutil.copytree(trained, run)
        (tmp_path / "run" / "saved_model").unlink()
        target = tmp_path / "a.png"
        Image.new("RGB", (8, 8)).save(target)
    assert cli.main(["predict", run, str(target), "--out", str(tmp_path / "out"), "--cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and match in err
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def coco_run(coco_tiny_person, tmp_path_factory):
    """A coco-recipe run (inputs normalised by the training photographs' statistics) on real COCO photographs."""
    from dlstudio_aspp.runner import train_and_score
    from dlstudio_aspp.spec import RunSpec

    folder = tmp_path_factory.mktemp("coco_run")
    spec = RunSpec.build("coco", data=coco_tiny_person, depth=4, seed=0, max_iters=3, val_split=None, test_subset=4,
                         progress=False, cpu=True)
    train_and_score(spec, folder)
    return folder


def test_predict_on_real_photographs_matches_evaluation(coco_run, coco_tiny, tmp_path):
    """The built test photographs, predicted, give the masks evaluation made of them (logits above 0), through the
    run's input normalisation; original COCO JPEGs of any size come back at their own size."""
    card = RunCard.load(coco_run)
    assert card.mean is not None and card.output == "logits"
    samples = np.load(card.files.samples_file)
    files = []
    for k, image in enumerate(samples["images"]):
        files.append(tmp_path / f"test{k}.png")
        Image.fromarray(image.transpose(1, 2, 0)).save(files[-1])
    from dlstudio_aspp import predict

    masks = predict(coco_run, files)
    expected = torch.from_numpy(samples["outputs"]) > 0
    assert len(masks) == 4 and all(torch.equal(m, e) for m, e in zip(masks, expected))
    photos = sorted((coco_tiny / "val2017").glob("*.jpg"))[:2]
    out = tmp_path / "out"
    assert cli.main(["predict", str(coco_run), *map(str, photos), "--out", str(out), "--cpu", "--no-progress"]) == 0
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    for r, photo in zip(lines, photos):
        w, h = Image.open(photo).size
        assert r["size"] == [h, w] and Image.open(out / f"{r['image']}_person.png").size == (w, h)


def test_the_progress_bar_ends_at_n_of_n(trained, tmp_path, capsys):
    """Bug: predict's bar ended at 0/3: the names ran out before the predictions' generator finished."""
    pics = tmp_path / "pics"
    pics.mkdir()
    for k in range(3):
        Image.fromarray(np.full((64, 64, 3), 40 * k, np.uint8)).save(pics / f"{k}.png")
    assert cli.main(["predict", str(trained), str(pics), "--out", str(tmp_path / "out"), "--cpu"]) == 0
    assert "3/3" in capsys.readouterr().err


def _has_colour(pixels: np.ndarray, colour, tolerance: int = 12) -> bool:
    return bool((np.abs(pixels.astype(int) - np.array(colour)).max(-1) <= tolerance).any())


def test_predict_warns_of_pictures_unlike_the_training_images_and_draws_a_contact_sheet(trained, tmp_path, capsys):
    from dlstudio_aspp.evaluation import class_colours

    pics = tmp_path / "pics"
    pics.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((300, 400, 3)) * 255).astype(np.uint8)).save(pics / "photo.jpg")
    Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(pics / "shapes_sized.png")
    out = tmp_path / "out"
    assert cli.main(["predict", str(trained), str(pics), "--out", str(out), "--cpu", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "1 of 2 pictures (400x300, width x height) differ from the 64x64 the model was trained on" in err
    assert "trained only on synthetic shapes" in err and "dlstudio-aspp run --dataset coco" in err
    sheet = np.asarray(Image.open(out / "contact_sheet.png").convert("RGB"))
    assert sheet.shape[1] == 2 * (192 + 6)
    legend = sheet[-24:]  # the strip under the overlays: a swatch of each class's colour
    assert all(_has_colour(legend, c, 0) for c in class_colours(5))
    assert cli.main(["predict", str(trained), str(pics / "shapes_sized.png"), "--out", str(tmp_path / "o2"), "--cpu",
                     "--no-progress"]) == 0
    assert "differ from" not in capsys.readouterr().err


def test_the_figures_that_colour_classes_carry_a_legend(trained):
    """The test grid (numpy and PIL) ends in a strip with each class's colour."""
    from dlstudio_aspp.evaluation import class_colours

    grid = np.asarray(Image.open(RunCard.load(trained).files.test_grid).convert("RGB"))
    assert all(_has_colour(grid[-22:], c, 0) for c in class_colours(5))
