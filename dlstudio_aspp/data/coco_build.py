"""``dlstudio-aspp build-coco``: a 256x256 multi-class segmentation set built from COCO, as a chain of small steps
(the images chosen by :mod:`dlstudio_aspp.data.coco_select`, the set read by :mod:`dlstudio_aspp.data.coco`):

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
import json
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from .. import crash
from ..atomic import save_image, write_json
from ..masks import mask_values_for
from ..errors import UnfinishedError, UserError
from ..spec import COCO_MIN_SIZE
from .coco_options import build_options
from .coco_layout import INDEX, MAX_CLASSES, SPLITS
from .coco_select import Candidate, apply_caps, candidates, explain_empty, open_sources, source_class_ids, take_once


#: The largest side of a built set's images (--size).
MAX_SIZE = 2048


#: PIL's decompression-bomb limit for the images the builder reads (about 12 times a 10000x10000 image).
MAX_PIXELS = 12 * 10000 * 10000


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


def build_settings(coco_root, **given) -> dict:
    """The settings a build records (``build_settings.json``): the builder's defaults
    (:data:`~dlstudio_aspp.data.coco_options.BUILD_DEFAULTS`) with ``given`` on top, checked; its folders
    resolved, in the order given."""
    o = build_options(given)
    classes, min_size, size, splits, train_min_size = o["classes"], o["min_size"], o["size"], o["splits"], o["train_min_size"]
    roots = [Path(r) for r in ([coco_root] if isinstance(coco_root, (str, Path)) else coco_root)]
    classes = list(classes)
    _check_build_options(classes, splits, size)
    if not roots or len({r.resolve() for r in roots}) != len(roots):
        raise UserError(f"--coco-root needs one or more distinct folders, got {[str(r) for r in roots]}")
    return dict(classes=classes, min_size=min_size, train_min_size=min_size if train_min_size is None else train_min_size,
                size=size, max_per_class=o["max_per_class"], max_per_split=o["max_per_split"], seed=o["seed"], splits=list(splits),
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
    sources = open_sources(roots, splits)
    check_settings(out, settings, out_flag)
    class_ids = source_class_ids(sources, classes)  # a mistyped class: one line, and nothing written yet
    rules = {split: train_min_size if split == "train" else min_size for split in splits}
    per_split = {split: candidates(split, sources[split], class_ids, rules[split], min_size) for split in splits}
    for split in splits:
        if not per_split[split]:
            flag = "--train-min-size" if split == "train" and train_min_size != min_size else "--min-size"
            raise UserError(explain_empty(sources[split], [class_ids[split, k] for k in range(len(sources[split]))],
                                          classes, rules[split], split, flag))
    for split in splits:
        _warn_empty_classes(per_split[split], classes, split, rules[split])
    write_json(out / SETTINGS, settings)  # before the first image: it says how they are made
    dropped = take_once(per_split, hashed=len(roots) > 1)
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


def default_coco_folder(roots, classes, size, min_size, train_min_size, max_per_class, **_) -> str:
    """Where `run --coco-root` builds when --data is not given: a name that tells its settings apart (from the
    options ``run`` offers; the others keep their defaults there)."""
    name = f"data/coco_{'-'.join(c.replace(' ', '_') for c in classes)}_{size}"
    if min_size != COCO_MIN_SIZE:
        name += f"_min{min_size:g}"
    if train_min_size is not None and train_min_size != min_size:
        name += f"_train{train_min_size:g}"
    if max_per_class is not None:
        name += f"_cap{max_per_class}"
    if len(roots) > 1:
        name += "_" + "+".join(Path(r).name for r in roots)
    return name
