"""A 256x256 multi-class segmentation set built from COCO, and its DLStudio-style dataset.

Builder (``dlstudio-aspp build-coco``), as a chain of small steps:

1. **Select.** An image is taken when it holds at least one non-crowd instance of a
   chosen class whose COCO bbox is at least ``min_size`` wide *and* high.
2. **Mask.** One channel per chosen class: the union of pycocotools ``annToMask`` over
   *all* that image's instances of the class. Instances below the size threshold are
   kept in the mask: they only decide which images are taken, and marking them as
   background would teach the network that those pixels are not the class. Crowd (RLE)
   regions of a chosen class are kept in its channel for the same reason (they are
   pixels of that class, if coarsely outlined).
3. **Resize.** Images with antialiased bilinear interpolation, masks with nearest
   neighbour, to exactly ``size x size`` (the aspect ratio is not kept, as in the users'
   recipe); boxes are scaled to match, as ``[x1, y1, x2, y2]`` in pixels.
4. **Store.** ``images/<split>/<coco id>.png`` (viewable), ``masks/<split>/<coco id>.png``
   (bit k set where class k is present; 8-bit for up to 8 classes, 16-bit above), and
   ``index.json``: per image its COCO id and file, classes, scaled boxes; the label map;
   the builder's settings. Every file is written to a temporary name and renamed, and
   the index last, so an interrupted build never leaves a file that looks finished; a
   re-run skips images whose files are already there.

Splits: COCO ``train2017`` becomes ``train`` and ``val2017`` becomes ``test``.
"""
from __future__ import annotations

import contextlib
import difflib
import io
import json
import random
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from ..atomic import save_image, write_json
from ..masks import mask_values_for
from ..errors import MissingFileError, UserError

SPLITS = {"train": "train2017", "test": "val2017"}
INDEX = "index.json"
#: The largest side of a built set's images (--size).
MAX_SIZE = 2048
#: The largest image side the builder accepts from a COCO JSON (COCO's own images are at most 640).
MAX_SIDE = 20000
#: PIL's decompression-bomb limit for the images the builder reads (about 12 times a 10000x10000 image).
MAX_PIXELS = 12 * 10000 * 10000


#: The most classes a mask PNG stores (one bit per class, 16-bit pixels).
MAX_CLASSES = 16

def inside(root: Path, relative: str, what: str) -> Path:
    """``root / relative``, refusing a path that leaves ``root`` (``..``, an absolute path, a link outside)."""
    root = Path(root)
    rel = Path(str(relative))
    if rel.is_absolute() or not str(relative):
        raise UserError(f"{what} {relative!r} is not a path inside {root}; the file names there must be relative")
    path = root / rel
    if not path.resolve().is_relative_to(root.resolve()):
        raise UserError(f"{what} {relative!r} leads outside {root}; refusing to read it")
    return path


def load_coco(ann_file: Path):
    """pycocotools COCO for ``ann_file``, with clear errors for missing or malformed JSON."""
    from pycocotools.coco import COCO

    if not ann_file.is_file():
        raise MissingFileError(f"annotation file {ann_file} is missing; --coco-root must hold annotations/instances_{{train,val}}2017.json")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(ann_file))  # parses the (possibly 450 MB) file once
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{ann_file} is not valid JSON ({exc}); re-download the COCO annotations") from None
    except (KeyError, TypeError, AttributeError) as exc:  # pycocotools indexing a malformed file
        raise UserError(f"{ann_file} is not a COCO instances file (pycocotools failed on {exc!r}); "
                        "re-download the COCO annotations") from None
    check_annotations(coco, ann_file)
    return coco


def check_annotations(coco, ann_file: Path) -> None:
    """One-line errors for a COCO file that parses but lacks what the builder reads."""
    data = coco.dataset
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise UserError(f"{ann_file} has no {key!r} list; it is not a COCO instances file (re-download it)")
    for ann in data["annotations"]:
        for key in ("image_id", "category_id", "bbox", "segmentation"):
            if key not in ann:
                raise UserError(f"{ann_file}: annotation {ann.get('id', '?')} has no {key!r}; re-download the annotations")
        if ann["image_id"] not in coco.imgs:
            raise UserError(f"{ann_file}: annotation {ann.get('id', '?')} names image id {ann['image_id']}, which is not "
                            "in its 'images' list; re-download the annotations")
        if ann["category_id"] not in coco.cats:
            raise UserError(f"{ann_file}: annotation {ann.get('id', '?')} names category id {ann['category_id']}, which "
                            "is not in its 'categories' list; re-download the annotations")
    for img in data["images"]:
        h, w = img.get("height"), img.get("width")
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_SIDE for v in (h, w)):
            raise UserError(f"{ann_file}: image {img.get('id', '?')} has height {h!r} and width {w!r}; both must be "
                            f"whole numbers from 1 to {MAX_SIDE} (re-download the annotations)")
        if not isinstance(img.get("file_name"), str):
            raise UserError(f"{ann_file}: image {img.get('id', '?')} has no file_name; re-download the annotations")


def category_ids(coco, classes: Sequence[str]) -> List[int]:
    by_name = {c["name"]: c["id"] for c in coco.loadCats(coco.getCatIds())}
    ids = []
    for name in classes:
        if name not in by_name:
            near = difflib.get_close_matches(name, list(by_name), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(near)}?" if near else f"; valid names include {', '.join(sorted(by_name)[:8])}, ..."
            raise UserError(f"unknown COCO class {name!r}{hint}")
        ids.append(by_name[name])
    return ids


def select_images(coco, cat_ids: Sequence[int], min_size: float) -> Dict[int, List[int]]:
    """Image id -> indices of the chosen classes that qualify it (a big enough non-crowd instance)."""
    chosen: Dict[int, List[int]] = {}
    for c, cid in enumerate(cat_ids):
        for ann in coco.loadAnns(coco.getAnnIds(catIds=[cid], iscrowd=False)):
            w, h = ann["bbox"][2], ann["bbox"][3]
            if w >= min_size and h >= min_size:
                chosen.setdefault(ann["image_id"], [])
                if c not in chosen[ann["image_id"]]:
                    chosen[ann["image_id"]].append(c)
    return chosen


def explain_empty(coco, cat_ids, classes, min_size, split_dir: str) -> str:
    sizes = []
    for cid in cat_ids:
        for ann in coco.loadAnns(coco.getAnnIds(catIds=[cid], iscrowd=False)):
            sizes.append(min(ann["bbox"][2], ann["bbox"][3]))
    if not sizes:
        return f"{split_dir} has no non-crowd instance of {list(classes)}; choose other --classes"
    return (f"{split_dir}: none of the {len(sizes)} non-crowd instances of {list(classes)} has a bbox of at least "
            f"{min_size}x{min_size} (the largest has its smaller side {max(sizes):.0f}); lower --min-size")


def apply_caps(chosen: Dict[int, List[int]], n_classes: int, per_class: Optional[int], per_split: Optional[int], seed: int) -> List[int]:
    """Image ids after the caps, picked by ``seed``; sorted for a deterministic build."""
    ids = sorted(chosen)
    rng = random.Random(seed)
    rng.shuffle(ids)
    if per_class is not None:
        counts = [0] * n_classes
        kept = []
        for i in ids:
            if any(counts[c] < per_class for c in chosen[i]):
                kept.append(i)
                for c in chosen[i]:
                    counts[c] += 1
        ids = kept
    if per_split is not None:
        ids = ids[:per_split]
    return sorted(ids)


def build_masks(coco, img: dict, cat_ids: Sequence[int]) -> np.ndarray:
    """(C, H, W) bool at the original size: union of annToMask per class (crowd and small kept)."""
    out = np.zeros((len(cat_ids), img["height"], img["width"]), dtype=bool)
    for c, cid in enumerate(cat_ids):
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]], catIds=[cid], iscrowd=None)):
            out[c] |= coco.annToMask(ann).astype(bool)
    return out


def scaled_boxes(coco, img: dict, cat_ids: Sequence[int], size: int) -> Dict[int, List[List[int]]]:
    """Class index -> non-crowd instance boxes [x1, y1, x2, y2] in the resized image."""
    sx, sy = size / img["width"], size / img["height"]
    boxes: Dict[int, List[List[int]]] = {}
    for c, cid in enumerate(cat_ids):
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]], catIds=[cid], iscrowd=False)):
            x, y, w, h = ann["bbox"]
            box = [int(round(x * sx)), int(round(y * sy)), int(round((x + w) * sx)) - 1, int(round((y + h) * sy)) - 1]
            boxes.setdefault(c, []).append([min(max(v, 0), size - 1) for v in box])
    return boxes


def resize_pair(image: Image.Image, masks: np.ndarray, size: int):
    """Image: antialiased bilinear; masks (C, H, W) bool: nearest. Both to exactly size x size."""
    im = image.convert("RGB").resize((size, size), Image.BILINEAR, reducing_gap=None)
    ms = np.stack([np.array(Image.fromarray(m.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)) > 127
                   for m in masks]) if len(masks) else np.zeros((0, size, size), bool)
    return im, ms


def encode_bits(masks: np.ndarray) -> Image.Image:
    """(C, H, W) bool -> PNG image whose pixel holds bit c for class c."""
    dtype = np.uint8 if masks.shape[0] <= 8 else np.uint16
    if masks.shape[0] > MAX_CLASSES:
        raise UserError(f"at most {MAX_CLASSES} classes can be stored, got {masks.shape[0]}")
    bits = np.zeros(masks.shape[1:], dtype=np.uint32)
    for c in range(masks.shape[0]):
        bits |= masks[c].astype(np.uint32) << c
    return Image.fromarray(bits.astype(dtype))


def decode_bits(path: Path, n: int) -> np.ndarray:
    bits = np.array(Image.open(path)).astype(np.uint32)
    return np.stack([(bits >> c) & 1 for c in range(n)]).astype(bool)


def _build_entry(coco, image_id: int, coco_root: Path, out: Path, split: str, cat_ids, classes, chosen, size: int) -> dict:
    """Write one image and its mask PNG (unless already there); return its index entry."""
    split_dir = SPLITS[split]
    img = coco.loadImgs([image_id])[0]
    name = f"{image_id:012d}.png"
    im_path, mask_path = out / "images" / split / name, out / "masks" / split / name
    if not (im_path.is_file() and mask_path.is_file()):
        src = inside(coco_root / split_dir, img["file_name"], f"COCO id {image_id}: file_name")
        if not src.is_file():
            raise MissingFileError(f"image {src} (COCO id {image_id}) is missing from {coco_root / split_dir}")
        try:
            with _bounded_pixels(), Image.open(src) as raw:
                raw.load()
                im, ms = resize_pair(raw, build_masks(coco, img, cat_ids), size)
        except Image.DecompressionBombError as exc:
            raise UserError(f"image {src} (COCO id {image_id}) is too large to decode safely ({exc}); remove it "
                            "from the annotations or the folder") from None
        except (OSError, SyntaxError) as exc:  # PIL's errors for truncated or non-image files
            raise UserError(f"image {src} (COCO id {image_id}) cannot be read ({exc}); re-download it, then "
                            "re-run the same command: finished images are kept") from None
        save_image(encode_bits(ms), mask_path)
        save_image(im, im_path)
    present = [c for c, cid in enumerate(cat_ids) if coco.getAnnIds(imgIds=[image_id], catIds=[cid], iscrowd=None)]
    return {"coco_id": image_id, "source_file": f"{split_dir}/{img['file_name']}",
            "image": f"images/{split}/{name}", "mask": f"masks/{split}/{name}",
            "classes": [classes[c] for c in present], "selected_for": [classes[c] for c in sorted(chosen[image_id])],
            "boxes": {str(c): b for c, b in scaled_boxes(coco, img, cat_ids, size).items()}}


def build_coco(coco_root, out, classes: Sequence[str] = ("cake", "dog", "motorcycle"), min_size: float = 200,
               size: int = 256, max_per_class: Optional[int] = None, max_per_split: Optional[int] = None, seed: int = 0,
               splits: Sequence[str] = ("train", "test"), progress: bool = True, log=print,
               out_flag: str = "--out") -> dict:
    """Build the set under ``out`` and return the index (also written as ``out/index.json``).

    Every setting, the annotation files and the class names are checked before anything is
    written; ``out_flag`` is how the command that called names ``out`` (``run`` calls it --data)."""
    coco_root, out = Path(coco_root), Path(out)
    classes = list(classes)
    if not classes or len(set(classes)) != len(classes):
        raise UserError(f"--classes needs distinct COCO category names, got {classes}")
    if len(classes) > MAX_CLASSES:
        raise UserError(f"--classes takes at most {MAX_CLASSES} classes (a mask pixel stores one bit per class in "
                        f"16 bits), got {len(classes)}; build two sets, or merge classes")
    bad = [sp for sp in splits if sp not in SPLITS]
    if bad or not splits:
        raise UserError(f"--splits must name train and/or test, got {list(splits)}")
    if size < 8 or size % 8 or size > MAX_SIZE:
        raise UserError(f"--size must be a multiple of 8 (mUNet needs it) from 8 to {MAX_SIZE}, got {size}")
    settings = dict(classes=classes, min_size=min_size, size=size, max_per_class=max_per_class,
                    max_per_split=max_per_split, seed=seed, splits=list(splits), coco_root=str(coco_root.resolve()))
    annotations = {split: load_coco(coco_root / "annotations" / f"instances_{SPLITS[split]}.json") for split in splits}
    for split, coco in annotations.items():
        category_ids(coco, classes)  # a mistyped class: one line, and nothing written yet
        if not (coco_root / SPLITS[split]).is_dir():
            raise MissingFileError(f"image folder {coco_root / SPLITS[split]} is missing; --coco-root must hold "
                                   f"{SPLITS[split]}/*.jpg")
    check_settings(out, settings, out_flag)
    values = mask_values_for(len(classes))
    index = {"settings": settings, "classes": classes, "label_map": dict(zip(classes, values)), "splits": {}}
    counts = {}
    for split in splits:
        split_dir = SPLITS[split]
        coco = annotations[split]
        cat_ids = category_ids(coco, classes)
        chosen = select_images(coco, cat_ids, min_size)
        if not chosen:
            raise UserError(explain_empty(coco, cat_ids, classes, min_size, split_dir))
        empty = [name for c, name in enumerate(classes) if not any(c in v for v in chosen.values())]
        if empty:
            warnings.warn(f"{split} ({split_dir}): no image qualifies for {', '.join(empty)} (no non-crowd instance of "
                          f"at least {min_size:g}x{min_size:g}); those channels will have no images selected for them "
                          "in this split", RuntimeWarning, stacklevel=2)
        ids = apply_caps(chosen, len(classes), max_per_class, max_per_split, seed)
        if progress:
            from tqdm.auto import tqdm

            ids = tqdm(ids, desc=f"build-coco {split}", unit="img", mininterval=1.0)
        entries = [_build_entry(coco, image_id, coco_root, out, split, cat_ids, classes, chosen, size) for image_id in ids]
        index["splits"][split] = entries
        counts[split] = {name: sum(name in e["classes"] for e in entries) for name in classes}
    index["counts"] = counts
    write_json(out / INDEX, index, indent=1)
    for split, per in counts.items():
        log(f"{split}: {len(index['splits'][split])} images; per class: " + ", ".join(f"{k} {v}" for k, v in per.items()))
    return index


SETTINGS = "build_settings.json"


def check_settings(out: Path, settings: dict, out_flag: str = "--out") -> None:
    """Record the build's settings before the first image is written; refuse a re-run with others.

    A folder from an interrupted build holds images but no ``index.json``; its
    ``build_settings.json`` still says how they were made.
    """
    recorded = [p for p in (out / SETTINGS, out / INDEX) if p.is_file()]
    same = lambda d: {k: v for k, v in d.items() if k != "coco_root"}  # noqa: E731
    for path in recorded:
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} is not valid JSON ({exc}); delete {out} and build again") from None
        old = data.get("settings", data) if path.name == INDEX else data
        if same(old) != same(settings):
            changed = sorted(k for k in set(same(old)) | set(same(settings)) if same(old).get(k) != same(settings).get(k))
            raise UserError(f"{out} holds a build with other settings ({', '.join(changed)}: "
                            + "; ".join(f"{k} {old.get(k)!r} there, {settings.get(k)!r} now" for k in changed)
                            + f"); use another {out_flag} or the same settings")
    has_images = any((out / "images").glob("*/*.png")) if (out / "images").is_dir() else False
    if not recorded and has_images:
        raise UserError(f"{out} holds images but no {SETTINGS} to say how they were made; use another {out_flag}")
    write_json(out / SETTINGS, settings)


@contextlib.contextmanager
def _bounded_pixels():
    """PIL's decompression-bomb check at :data:`MAX_PIXELS` while the builder decodes an image."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS // 2  # PIL raises at twice its limit and warns above it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


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
