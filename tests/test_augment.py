"""Augmentation moves image and masks together, is seeded, and resumes exactly; normalisation lives in the card."""
import json

import numpy as np
import pytest
import torch

from conftest import SYN_FILES, make_segmenter
from dlstudio_aspp.augment import augment_batch, transform_for
from dlstudio_aspp.card import RunCard
from dlstudio_aspp.model import mUNetASPP


def _drawn_batch():
    """White where the mask is: a disk and a bar, off-centre, so flips and crops show."""
    yy, xx = np.mgrid[:64, :64]
    masks = np.zeros((2, 2, 64, 64), np.uint8)
    masks[0, 0] = ((yy - 20) ** 2 + (xx - 44) ** 2 < 150) * 50
    masks[1, 1] = ((yy > 40) & (xx > 5) & (xx < 30)) * 100
    images = np.zeros((2, 3, 64, 64), np.float32)
    images[:] = (masks.max(1, keepdims=True) > 0) * 255.0
    return {"image": torch.from_numpy(images), "mask_tensor": torch.from_numpy(masks)}


@pytest.mark.parametrize("level", ["light", "standard", "strong"])
def test_image_and_masks_move_together(level):
    batch = _drawn_batch()
    moved = 0
    for it in range(8):
        out = augment_batch(batch, transform_for(level, (64, 64)), seed=0, iteration=it)
        assert out["image"].shape == (2, 3, 64, 64) and out["mask_tensor"].dtype == torch.uint8
        assert set(out["mask_tensor"].unique().tolist()) <= {0, 50, 100}  # nearest neighbour: no blended values
        drawn = out["image"].mean(1) > 100  # (bilinear on the image, nearest on the mask: edges may differ)
        truth = out["mask_tensor"].amax(1) > 0
        iou = (drawn & truth).sum() / (drawn | truth).sum().clamp(min=1)
        assert iou > 0.9, (level, it, float(iou))
        moved += not torch.equal(out["mask_tensor"], batch["mask_tensor"])
    assert moved >= 6  # it does change the batches


def test_every_level_of_the_option_builds_its_pipeline():
    """Each registered level is a --augment choice; 'none' adds nothing, every other level a flip and a crop."""
    from dlstudio_aspp.registry import AUGMENTS
    from dlstudio_aspp.spec import field_choices

    assert field_choices("augment") == ("auto", *AUGMENTS)
    assert transform_for("none", (64, 64)) is None
    for level in set(AUGMENTS) - {"none"}:
        steps = [type(t).__name__ for t in transform_for(level, (64, 64)).transforms]
        assert steps[:2] == ["RandomHorizontalFlip", "RandomResizedCrop"], level
    with pytest.raises(ValueError, match=r"--augment must be one of none, light, standard, strong, got 'strnog' "
                                         r"\(did you mean strong\?\)"):
        transform_for("strnog", (64, 64))


def test_augmentation_is_seeded_by_seed_and_iteration():
    batch, t = _drawn_batch(), transform_for("standard", (64, 64))
    torch.manual_seed(123)
    a = augment_batch(batch, t, seed=1, iteration=5)
    torch.manual_seed(999)  # the global RNG neither matters nor moves
    state = torch.get_rng_state()
    b = augment_batch(batch, t, seed=1, iteration=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask_tensor"], b["mask_tensor"])
    c = augment_batch(batch, t, seed=1, iteration=6)
    assert not torch.equal(a["image"], c["image"])


@pytest.mark.slow
def test_resume_under_augmentation_equals_the_uninterrupted_run(synthetic_shapes, tmp_path):
    from test_training import _crash_loader

    torch.manual_seed(0)
    net = mUNetASPP(depth=4)
    opts = dict(loss="mse", seed=3, augment="standard", copy_paste=0.5, checkpoint_every=4, checkpoint_seconds=0,
                progress=False)
    full = make_segmenter(synthetic_shapes, tmp_path / "full", *SYN_FILES, epochs=2)
    full.run_code_for_training_for_semantic_segmentation(net, **opts)
    part = make_segmenter(synthetic_shapes, tmp_path / "part", *SYN_FILES, epochs=2)
    good = _crash_loader(part, at_item=33)
    with pytest.raises(RuntimeError, match="simulated crash"):
        part.run_code_for_training_for_semantic_segmentation(net, **opts)
    part.train_dataloader = good
    part.run_code_for_training_for_semantic_segmentation(net, resume=True, **opts)
    assert part.history["loss"] == full.history["loss"]
    a = torch.load(tmp_path / "full" / "saved_model", weights_only=True)
    b = torch.load(tmp_path / "part" / "saved_model", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "part" / "saved_model.json").read_text())["augment"] == "standard"


def test_normalisation_is_in_the_card_and_used_wherever_the_network_runs(synthetic_shapes, tmp_path, monkeypatch):
    from dlstudio_aspp.data.open import IMAGENET_MEAN

    seg = make_segmenter(synthetic_shapes, tmp_path, *SYN_FILES)
    seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), normalize="imagenet", max_iters=2,
                                                        progress=False)
    card = RunCard.load(tmp_path)
    assert card.mean == pytest.approx(IMAGENET_MEAN) and card.std[0] == pytest.approx(0.229 * 255)
    x = torch.full((1, 3, 2, 2), 255.0)
    assert card.prepare_input(x)[0, :, 0, 0].tolist() == pytest.approx(
        [(255 - m) / s for m, s in zip(card.mean, card.std)])
    seen = []
    real = RunCard.prepare_input
    monkeypatch.setattr(RunCard, "prepare_input", lambda self, im: seen.append(("card", self.mean)) or real(self, im))
    seg.run_code_for_testing_semantic_segmentation(mUNetASPP(depth=4), progress=False)  # evaluation
    assert seen and all(m == card.mean for _, m in seen)
    seen.clear()
    from dlstudio_aspp.sam_compare import _score_image  # sam-compare's mUNet side

    class NoSam:
        def box_masks(self, image, boxes, classes):
            return np.zeros((classes, *image.shape[-2:]), bool)

    item = seg.test_dataloader.dataset[0]
    row, scores = _score_image(item, 0, card, card.load_model(), NoSam(), None, False, 2, "cpu")
    assert seen == [("card", card.mean)] and "mUNet" in scores


def test_dataset_statistics_are_measured_on_the_training_images(synthetic_shapes, tmp_path):
    from dlstudio_aspp.data.open import input_stats

    seg = make_segmenter(synthetic_shapes, tmp_path, *SYN_FILES)
    ds = seg.train_dataloader.dataset
    mean, std = input_stats("dataset", ds)
    images = torch.stack([ds[i]["image"] for i in range(len(ds))]).double()
    assert mean == pytest.approx(images.mean((0, 2, 3)).tolist(), abs=1e-3)
    assert std == pytest.approx(images.std((0, 2, 3), unbiased=False).tolist(), abs=1e-2)
    assert input_stats("none", ds) == (None, None)


def test_copy_paste_moves_the_other_images_objects_with_their_masks():
    from dlstudio_aspp.augment import paste_objects

    batch = _drawn_batch()
    torch.manual_seed(0)
    images, masks = paste_objects(batch["image"], batch["mask_tensor"], p=1.0)
    for i, j in ((0, 1), (1, 0)):  # a batch of two: each image gets the other's objects, maybe mirrored
        expected = []
        for src in (batch["mask_tensor"][j], batch["mask_tensor"][j].flip(-1)):
            region = src.amax(0, keepdim=True) > 0  # white in the drawn image, set in the masks
            expected.append((torch.where(region, 255.0, batch["image"][i]), torch.where(region, src, batch["mask_tensor"][i])))
        assert any(torch.equal(images[i], im) and torch.equal(masks[i], m) for im, m in expected)
    assert torch.equal(paste_objects(batch["image"], batch["mask_tensor"], p=0.0)[1], batch["mask_tensor"])
    one = paste_objects(batch["image"][:1], batch["mask_tensor"][:1], p=1.0)
    assert torch.equal(one[1], batch["mask_tensor"][:1])


def test_copy_paste_is_seeded_and_optional_with_the_level():
    batch = _drawn_batch()
    a = augment_batch(batch, None, seed=2, iteration=3, copy_paste=1.0)
    b = augment_batch(batch, None, seed=2, iteration=3, copy_paste=1.0)
    assert torch.equal(a["mask_tensor"], b["mask_tensor"]) and not torch.equal(a["mask_tensor"], batch["mask_tensor"])
    # with copy-paste off, a level's draws are what they were without it (earlier runs resume exactly)
    t = transform_for("standard", (64, 64))
    plain = augment_batch(batch, t, seed=1, iteration=4)
    assert torch.equal(plain["image"], augment_batch(batch, t, seed=1, iteration=4, copy_paste=0.0)["image"])
