"""A COCO segmentation set built by ``dlstudio-aspp build-coco``, read with the interface of DLStudio's
PurdueShapes5MultiObjectDataset.

The set's folder holds ``images/<split>/<name>.png``, ``masks/<split>/<name>.png`` (bit k set
where class k is present; 8-bit for up to 8 classes, 16-bit above) and ``index.json``: per
image its COCO id and file, classes, scaled boxes; the label map; the builder's settings.
Splits: COCO ``train2017`` is ``train`` and ``val2017`` is ``test``. The builder is
:mod:`dlstudio_aspp.data.coco_build` (images chosen by :mod:`dlstudio_aspp.data.coco_select`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List

import numpy as np
import torch
from PIL import Image

from ..errors import MissingFileError, UserError
from .coco_layout import INDEX, SPLITS, inside


def decode_bits(path: Path, n: int) -> np.ndarray:
    bits = np.array(Image.open(path)).astype(np.uint32)
    return np.stack([(bits >> c) & 1 for c in range(n)]).astype(bool)


def read_index(root) -> dict:
    path = Path(root) / INDEX
    if not path.is_file():
        raise MissingFileError(f"{path} is missing: build the set with `dlstudio-aspp build-coco --out {root}`")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); build the set again with `dlstudio-aspp build-coco`") from None


class COCOSegmentationDataset(torch.utils.data.Dataset):
    """The built COCO set with the interface of DLStudio's PurdueShapes5MultiObjectDataset.

    Item: ``{'image': (3, S, S) float32 in [0, 255], 'mask_tensor': (C, S, S) uint8 holding
    0 or ``label_map[class]``, 'bbox_tensor': (S, C, 4) float32}`` where slot j of class c
    holds that class's j-th box (stock's layout).

    Args:
        dl_studio: the DLStudio instance; its ``dataroot`` is the built folder unless ``root``
            is given. None when ``root`` is given.
        segmenter: kept for signature parity with stock.
        train_or_test: ``'train'`` or ``'test'`` (COCO val2017).
        root: the folder written by ``build-coco``.
        image_size: the size expected by the caller (default: DLStudio's, else the set's own).
    """

    def __init__(self, dl_studio=None, segmenter=None, train_or_test="train", root=None, *, image_size=None):
        super().__init__()
        if train_or_test not in SPLITS:
            raise UserError(f"train_or_test must be 'train' or 'test', got {train_or_test!r}")
        self.root = Path(root or getattr(dl_studio, "dataroot", ""))
        index = read_index(self.root)
        if train_or_test not in index["splits"]:
            raise UserError(f"{self.root} has no {train_or_test!r} split (built with --splits {','.join(index['splits'])})")
        self.entries = index["splits"][train_or_test]
        #: Per split: how many images, the rule that took them, and from which folders (for cards and reports).
        self.split_summary = index.get("summary", {})
        self.classes = index["classes"]
        self.label_map = dict(index["label_map"])
        self.class_labels = {v: k for k, v in self.label_map.items()}
        self.num_shapes = len(self.classes)
        self.size = index["settings"]["size"]
        self.image_size = [self.size, self.size]
        self.values = torch.tensor([self.label_map[c] for c in self.classes], dtype=torch.uint8).view(-1, 1, 1)
        want = list(image_size or getattr(dl_studio, "image_size", None) or self.image_size)
        if want != self.image_size:
            raise UserError(f"the set at {self.root} is {self.size}x{self.size} but DLStudio's image_size is {want}; "
                             f"use image_size=[{self.size},{self.size}]")

    def __len__(self) -> int:
        return len(self.entries)

    def source_of(self, idx: int) -> dict:
        """Where image ``idx`` came from: its COCO id, its file in its COCO folder, and that folder's name."""
        e = self.entries[idx]
        return {"coco_id": e["coco_id"], "source_file": e["source_file"], "folder": Path(e.get("folder", "")).name}

    def validation_candidates(self) -> List[int]:
        """The images that may be held out for validation: those that meet the test split's rule, so
        that the best weights are chosen on images like the test's (all of them in a one-rule build)."""
        return [i for i, e in enumerate(self.entries) if e.get("test_rule", True)]

    def __getitem__(self, idx: int) -> dict:
        e = self.entries[idx]
        with Image.open(inside(self.root, e["image"], f"{INDEX} image")) as im:
            image = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1).float()
        bits = torch.from_numpy(decode_bits(inside(self.root, e["mask"], f"{INDEX} mask"), self.num_shapes))
        mask = bits.to(torch.uint8) * self.values
        bbox = torch.zeros(self.size, self.num_shapes, 4)
        for c, boxes in e["boxes"].items():
            for j, b in enumerate(boxes[: self.size]):
                bbox[j, int(c)] = torch.tensor(b, dtype=torch.float)
        return {"image": image, "mask_tensor": mask, "bbox_tensor": bbox}


def __getattr__(name: str):
    """``build_coco`` and the builder's settings file, still importable from here as before the builder had its
    own module."""
    if name in ("build_coco", "SETTINGS"):
        from . import coco_build

        return getattr(coco_build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
