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
import functools
import io
import json
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from .. import crash
from ..atomic import save_image, sha256_of, write_json
from ..masks import mask_values_for
from ..errors import MissingFileError, UnfinishedError, UserError
from ..spec import COCO_MIN_SIZE

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


def _open_sources(roots: Sequence[Path], splits: Sequence[str]) -> Dict[str, List[tuple]]:
    """Split -> [(root, pycocotools COCO)] over the folders that hold that split's annotations.

    A folder may hold either split or both; each split asked for must be in at least one folder."""
    sources: Dict[str, List[tuple]] = {split: [] for split in splits}
    for root in roots:
        if not root.is_dir():
            raise MissingFileError(f"--coco-root {root} is not a folder; give folders that hold annotations/ and "
                                   "train2017/ and/or val2017/")
        found = [split for split in splits if (root / "annotations" / f"instances_{SPLITS[split]}.json").is_file()]
        if not found:
            wanted = " or ".join(f"annotations/instances_{SPLITS[s]}.json" for s in splits)
            raise MissingFileError(f"--coco-root {root} holds no {wanted}; each folder must hold at least one split")
        for split in found:
            if not (root / SPLITS[split]).is_dir():
                raise MissingFileError(f"image folder {root / SPLITS[split]} is missing; --coco-root must hold "
                                       f"{SPLITS[split]}/*.jpg beside annotations/instances_{SPLITS[split]}.json")
            sources[split].append((root, load_coco(root / "annotations" / f"instances_{SPLITS[split]}.json")))
    for split, found in sources.items():
        if not found:
            raise MissingFileError(f"no --coco-root folder holds annotations/instances_{SPLITS[split]}.json for the "
                                   f"{split} split; add a folder that does, or build --splits "
                                   f"{','.join(s for s in splits if s != split) or 'train'}")
    return sources


def _source_class_ids(sources: Dict[str, List[tuple]], classes: Sequence[str]) -> Dict[tuple, List[Optional[int]]]:
    """(split, folder number) -> each class's category id there, matched by name (None: not in that folder).

    A class found in no folder is a typo: one line with the nearest names, before anything is written."""
    ids, names = {}, set()
    for split, found in sources.items():
        for k, (root, coco) in enumerate(found):
            by_name = {c["name"]: c["id"] for c in coco.loadCats(coco.getCatIds())}
            ids[split, k] = [by_name.get(name) for name in classes]
            names |= set(by_name)
    names = sorted(names)
    for c, name in enumerate(classes):
        if all(v[c] is None for v in ids.values()):
            near = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(near)}?" if near else f"; valid names include {', '.join(names[:8])}, ..."
            raise UserError(f"unknown COCO class {name!r}{hint}")
    for (split, k), v in ids.items():
        missing = [classes[c] for c, cid in enumerate(v) if cid is None]
        if missing:
            warnings.warn(f"{sources[split][k][0]} ({SPLITS[split]}) has no category named {', '.join(missing)}: its "
                          f"images count as holding none", RuntimeWarning, stacklevel=3)
    return ids


def select_images(coco, cat_ids: Sequence[Optional[int]], min_size: float) -> Dict[int, List[int]]:
    """Image id -> indices of the chosen classes that qualify it (a big enough non-crowd instance).

    ``cat_ids[c]`` is None where this folder has no category for class c."""
    chosen: Dict[int, List[int]] = {}
    for c, cid in enumerate(cat_ids):
        if cid is None:
            continue
        for ann in coco.loadAnns(coco.getAnnIds(catIds=[cid], iscrowd=False)):
            w, h = ann["bbox"][2], ann["bbox"][3]
            if w >= min_size and h >= min_size:
                chosen.setdefault(ann["image_id"], [])
                if c not in chosen[ann["image_id"]]:
                    chosen[ann["image_id"]].append(c)
    return chosen


def explain_empty(sources: List[tuple], class_ids: List[list], classes, min_size, split: str, flag: str) -> str:
    sizes = []
    for (root, coco), cat_ids in zip(sources, class_ids):
        for cid in cat_ids:
            if cid is not None:
                sizes += [min(a["bbox"][2], a["bbox"][3]) for a in coco.loadAnns(coco.getAnnIds(catIds=[cid], iscrowd=False))]
    where = f"{SPLITS[split]} of {', '.join(str(root) for root, _ in sources)}"
    if not sizes:
        return f"{where} has no non-crowd instance of {list(classes)}; choose other --classes"
    return (f"{where}: none of the {len(sizes)} non-crowd instances of {list(classes)} has a bbox of at least "
            f"{min_size:g}x{min_size:g} (the largest has its smaller side {max(sizes):.0f}); " + (
                f"lower {flag} (down to {COCO_MIN_SIZE:g}, the homework's rule)" if min_size > COCO_MIN_SIZE else
                f"choose other --classes or add a --coco-root folder with larger ones ({flag} lower than "
                f"{COCO_MIN_SIZE:g} would leave the homework's {COCO_MIN_SIZE:g}x{COCO_MIN_SIZE:g} rule)"))


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


def build_masks(coco, img: dict, cat_ids: Sequence[Optional[int]]) -> np.ndarray:
    """(C, H, W) bool at the original size: union of annToMask per class (crowd and small kept)."""
    out = np.zeros((len(cat_ids), img["height"], img["width"]), dtype=bool)
    for c, cid in enumerate(cat_ids):
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]], catIds=[cid], iscrowd=None)) if cid is not None else ():
            out[c] |= coco.annToMask(ann).astype(bool)
    return out


def scaled_boxes(coco, img: dict, cat_ids: Sequence[Optional[int]], size: int) -> Dict[int, List[List[int]]]:
    """Class index -> non-crowd instance boxes [x1, y1, x2, y2] in the resized image."""
    sx, sy = size / img["width"], size / img["height"]
    boxes: Dict[int, List[List[int]]] = {}
    for c, cid in enumerate(cat_ids):
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]], catIds=[cid], iscrowd=False)) if cid is not None else ():
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


@dataclass
class Candidate:
    """One image a split may take: where it is, which classes qualify it, and the name it is stored under."""
    folder: int                        # its --coco-root's position
    root: Path
    coco: object                       # that folder's pycocotools COCO for the split
    cat_ids: List[Optional[int]]       # each class's category id in that folder (None: absent there)
    image_id: int
    chosen: List[int]                  # the classes that qualify it under its split's rule
    test_rule: bool                    # it also meets the test split's rule (so it may validate)
    split: str
    name: str = ""

    @property
    def img(self) -> dict:
        return self.coco.imgs[self.image_id]

    @functools.cached_property
    def source(self) -> Path:
        """The image file, refused when its file_name leads outside its folder's split (resolved once)."""
        return inside(self.root / SPLITS[self.split], self.img["file_name"], f"COCO id {self.image_id}: file_name")


def _candidates(split: str, found: List[tuple], class_ids: Dict[tuple, list], rule: float, min_size: float) -> List[Candidate]:
    """Every image of ``split`` that qualifies under ``rule``, folder by folder, in id order."""
    out = []
    for k, (root, coco) in enumerate(found):
        cat_ids = class_ids[split, k]
        strict = select_images(coco, cat_ids, min_size)
        for image_id, chosen in sorted(select_images(coco, cat_ids, rule).items()):
            out.append(Candidate(k, root, coco, cat_ids, image_id, chosen, image_id in strict, split))
    return out


def _take_once(per_split: Dict[str, List[Candidate]], hashed: bool) -> Dict[str, int]:
    """Drop images already taken: the test split first (a test image never trains), then folder order.

    Two images are the same with the same COCO id and file name or, when ``hashed`` (several
    folders), the same content; only files whose size another candidate shares are read to
    compare contents. Names each kept image's files (its COCO id; ``<id>-<folder>`` when another
    folder's image has that id). Returns how many were dropped per split."""
    sizes: Dict[int, int] = {}
    if hashed:
        for cand in (c for cands in per_split.values() for c in cands if c.source.is_file()):
            size = cand.source.stat().st_size
            sizes[size] = sizes.get(size, 0) + 1
    seen, dropped = set(), {}
    for split in sorted(per_split, key=lambda s: s != "test"):
        kept, names = [], set()
        for cand in per_split[split]:
            keys = [("id", cand.image_id, Path(cand.img["file_name"]).name)]
            if hashed and cand.source.is_file() and sizes.get(cand.source.stat().st_size, 0) > 1:
                keys.append(("sha256", sha256_of(cand.source)))
            if any(key in seen for key in keys):
                continue
            seen.update(keys)
            name = f"{cand.image_id:012d}.png"
            cand.name = name if name not in names else f"{cand.image_id:012d}-{cand.folder}.png"
            names.add(cand.name)
            kept.append(cand)
        dropped[split] = len(per_split[split]) - len(kept)
        per_split[split] = kept
    return dropped


class _Unreadable(Exception):
    """One source image that could not be read; the build goes on and names it at the end."""


def _build_entry(cand: Candidate, out: Path, classes, size: int) -> dict:
    """Write one image and its mask PNG (unless already there); return its index entry.

    Raises :class:`_Unreadable` (the reason in words) for a source image that is missing or
    cannot be decoded."""
    split, split_dir, img, image_id, src = cand.split, SPLITS[cand.split], cand.img, cand.image_id, cand.source
    im_path, mask_path = out / "images" / split / cand.name, out / "masks" / split / cand.name
    if not (im_path.is_file() and mask_path.is_file()):
        if not src.is_file():
            raise _Unreadable(f"{src} (COCO id {image_id}): missing")
        try:
            with _bounded_pixels(), Image.open(src) as raw:
                raw.load()
                im, ms = resize_pair(raw, build_masks(cand.coco, img, cand.cat_ids), size)
        except Image.DecompressionBombError as exc:
            raise UserError(f"image {src} (COCO id {image_id}) is too large to decode safely ({exc}); remove it "
                            "from the annotations or the folder") from None
        except (OSError, SyntaxError) as exc:  # PIL's errors for truncated or non-image files
            raise _Unreadable(f"{src} (COCO id {image_id}): {exc}") from None
        save_image(encode_bits(ms), mask_path)
        crash.point("coco-mask-written")
        save_image(im, im_path)
    coco = cand.coco
    present = [c for c, cid in enumerate(cand.cat_ids)
               if cid is not None and coco.getAnnIds(imgIds=[image_id], catIds=[cid], iscrowd=None)]
    return {"coco_id": image_id, "folder": str(cand.root), "source_file": f"{split_dir}/{img['file_name']}",
            "image": f"images/{split}/{cand.name}", "mask": f"masks/{split}/{cand.name}",
            "classes": [classes[c] for c in present], "selected_for": [classes[c] for c in sorted(cand.chosen)],
            "test_rule": cand.test_rule,
            "boxes": {str(c): b for c, b in scaled_boxes(coco, img, cand.cat_ids, size).items()}}


def _check_build_options(classes, splits, size) -> None:
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


def split_rule(classes: Sequence[str], side: float) -> str:
    """Why an image is in a split, in words."""
    return f"a non-crowd {' or '.join(classes)} of at least {side:g}x{side:g} px"


def build_settings(coco_root, classes: Sequence[str] = ("cake", "dog", "motorcycle"), min_size: float = COCO_MIN_SIZE,
                   size: int = 256, max_per_class: Optional[int] = None, max_per_split: Optional[int] = None,
                   seed: int = 0, splits: Sequence[str] = ("train", "test"), train_min_size: Optional[float] = None) -> dict:
    """The settings a build records (``build_settings.json``), checked; its folders resolved, in the order given."""
    roots = [Path(r) for r in ([coco_root] if isinstance(coco_root, (str, Path)) else coco_root)]
    classes = list(classes)
    _check_build_options(classes, splits, size)
    if not roots or len({r.resolve() for r in roots}) != len(roots):
        raise UserError(f"--coco-root needs one or more distinct folders, got {[str(r) for r in roots]}")
    return dict(classes=classes, min_size=min_size, train_min_size=min_size if train_min_size is None else train_min_size,
                size=size, max_per_class=max_per_class, max_per_split=max_per_split, seed=seed, splits=list(splits),
                coco_roots=[str(r.resolve()) for r in roots])


def build_coco(coco_root, out, *, progress: bool = True, log=print, out_flag: str = "--out", **options) -> dict:
    """Build the set under ``out`` from one COCO folder or several and return the index (also ``out/index.json``).

    ``coco_root``: a folder or a list of them; each holds one split's annotations or both, and
    categories are matched by name. An image in two folders is taken once (the test split's copy
    first). ``options`` are :func:`build_settings`'s (classes, min_size, size, max_per_class,
    max_per_split, seed, splits, train_min_size): ``min_size`` is the test split's rule (and so
    the validation images'), ``train_min_size`` (default: the same) the training split's. Every
    setting, the annotation files and the class names are checked before anything is written;
    ``out_flag`` is how the command that called names ``out`` (``run`` calls it --data)."""
    settings = build_settings(coco_root, **options)
    splits, min_size = settings["splits"], settings["min_size"]
    roots, out, classes = [Path(r) for r in settings["coco_roots"]], Path(out), settings["classes"]
    train_min_size = settings["train_min_size"]
    sources = _open_sources(roots, splits)
    check_settings(out, settings, out_flag)
    class_ids = _source_class_ids(sources, classes)  # a mistyped class: one line, and nothing written yet
    rules = {split: train_min_size if split == "train" else min_size for split in splits}
    per_split = {split: _candidates(split, sources[split], class_ids, rules[split], min_size) for split in splits}
    for split in splits:
        if not per_split[split]:
            flag = "--train-min-size" if split == "train" and train_min_size != min_size else "--min-size"
            raise UserError(explain_empty(sources[split], [class_ids[split, k] for k in range(len(sources[split]))],
                                          classes, rules[split], split, flag))
    for split in splits:
        _warn_empty_classes(per_split[split], classes, split, rules[split])
    write_json(out / SETTINGS, settings)  # before the first image: it says how they are made
    dropped = _take_once(per_split, hashed=len(roots) > 1)
    index = {"settings": settings, "classes": classes, "label_map": dict(zip(classes, mask_values_for(len(classes)))),
             "splits": {}, "summary": {}}
    unreadable: List[str] = []
    for split in splits:
        index["splits"][split] = _build_split(per_split[split], out, split, classes, settings, progress, unreadable)
        index["summary"][split] = _split_summary(index["splits"][split], classes, rules[split], dropped[split])
    _refuse_unreadable(unreadable, sum(map(len, index["splits"].values())), out)
    index["counts"] = {split: {name: sum(name in e["classes"] for e in entries) for name in classes}
                       for split, entries in index["splits"].items()}
    crash.point("coco-images-written")
    write_json(out / INDEX, index, indent=1)
    for split, summary in index["summary"].items():
        log(f"{split}: {summary['images']} images ({summary['rule']}); per class: "
            + ", ".join(f"{k} {v}" for k, v in index["counts"][split].items())
            + (f"; from {', '.join(f'{Path(f).name} {n}' for f, n in summary['folders'].items())}" if len(roots) > 1 else "")
            + (f"; {summary['taken_once']} found in two folders or both splits were taken once" if summary["taken_once"] else ""))
    return index


def _warn_empty_classes(cands: List[Candidate], classes, split: str, rule: float) -> None:
    empty = [name for c, name in enumerate(classes) if not any(c in cand.chosen for cand in cands)]
    if empty:
        warnings.warn(f"{split} ({SPLITS[split]}): no image qualifies for {', '.join(empty)} (no non-crowd instance of "
                      f"at least {rule:g}x{rule:g}); those channels will have no images selected for them "
                      "in this split", RuntimeWarning, stacklevel=3)


def _build_split(cands: List[Candidate], out: Path, split: str, classes, settings: dict, progress: bool,
                 unreadable: List[str]) -> List[dict]:
    """The split's caps, then its files; its index entries in id order. An image that cannot be
    read is added to ``unreadable`` (in words) and left out; the others are still built."""
    chosen = {(c.folder, c.image_id): c.chosen for c in cands}
    keep = set(apply_caps(chosen, len(classes), settings["max_per_class"], settings["max_per_split"], settings["seed"]))
    todo = [c for c in cands if (c.folder, c.image_id) in keep]
    if progress:
        from tqdm.auto import tqdm

        todo = tqdm(todo, desc=f"build-coco {split}", unit="img", mininterval=1.0)
    entries = []
    for cand in todo:
        try:
            entries.append(_build_entry(cand, out, classes, settings["size"]))
        except _Unreadable as exc:
            unreadable.append(str(exc))
    return entries


def _refuse_unreadable(unreadable: List[str], built: int, out: Path, shown: int = 10) -> None:
    """Stop (exit status 1) naming the images that could not be read; no index.json is written."""
    if not unreadable:
        return
    named = "; ".join(unreadable[:shown]) + (f"; and {len(unreadable) - shown} more" if len(unreadable) > shown else "")
    raise UnfinishedError(f"{len(unreadable)} source image(s) could not be read, so {out / INDEX} was not written "
                          f"({built} images were built and are kept): {named}. Re-download or remove them, then "
                          "re-run the same command")


def _split_summary(entries: List[dict], classes, rule: float, taken_once: int) -> dict:
    """How many images a split holds, why, and from which folders (what cards and reports show)."""
    folders: Dict[str, int] = {}
    for e in entries:
        folders[e["folder"]] = folders.get(e["folder"], 0) + 1
    return {"images": len(entries), "rule": split_rule(classes, rule), "folders": folders, "taken_once": taken_once,
            "meet_test_rule": sum(bool(e.get("test_rule", True)) for e in entries)}


SETTINGS = "build_settings.json"


def check_settings(out: Path, settings: dict, out_flag: str = "--out") -> None:
    """Refuse a build into ``out`` with other settings than the ones recorded there (folders included).

    A folder from an interrupted build holds images but no ``index.json``; its
    ``build_settings.json`` still says how they were made.
    """
    recorded = [p for p in (out / SETTINGS, out / INDEX) if p.is_file()]
    for path in recorded:
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} is not valid JSON ({exc}); delete {out} and build again") from None
        old = _current_terms(data.get("settings", data) if path.name == INDEX else data)
        changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if changed:
            raise UserError(f"{out} holds a build with other settings ("
                            + "; ".join(f"{k} {old.get(k)!r} there, {settings.get(k)!r} now" for k in changed)
                            + f"); use another {out_flag} or the same settings")
    has_images = any((out / "images").glob("*/*.png")) if (out / "images").is_dir() else False
    if not recorded and has_images:
        raise UserError(f"{out} holds images but no {SETTINGS} to say how they were made; use another {out_flag}")


def _current_terms(settings: dict) -> dict:
    """A build's recorded settings in today's terms: one folder as a list, the training rule as the test's."""
    settings = dict(settings)
    if "coco_root" in settings:
        settings["coco_roots"] = [settings.pop("coco_root")]
    settings.setdefault("train_min_size", settings.get("min_size"))
    return settings


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
