"""Which COCO images a build takes: the annotation files read and checked, each image's qualifying classes
under the size rule, the caps, and each image taken once across folders and splits.

An image is taken when it holds at least one non-crowd instance of a chosen class whose COCO
bbox is at least ``min_size`` wide *and* high (:func:`select_images`).
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

from ..atomic import sha256_of
from ..errors import MissingFileError, UserError
from ..spec import COCO_MIN_SIZE
from .coco_layout import SPLITS, inside


#: The largest image side the builder accepts from a COCO JSON (COCO's own images are at most 640).
MAX_SIDE = 20000


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


def open_sources(roots: Sequence[Path], splits: Sequence[str]) -> Dict[str, List[tuple]]:
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


def source_class_ids(sources: Dict[str, List[tuple]], classes: Sequence[str]) -> Dict[tuple, List[Optional[int]]]:
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
                f"{flag} {int(max(sizes))} keeps the largest ({flag} {COCO_MIN_SIZE:g} is the homework's rule)"
                if min_size > COCO_MIN_SIZE and max(sizes) >= COCO_MIN_SIZE else
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


def candidates(split: str, found: List[tuple], class_ids: Dict[tuple, list], rule: float, min_size: float) -> List[Candidate]:
    """Every image of ``split`` that qualifies under ``rule``, folder by folder, in id order."""
    out = []
    for k, (root, coco) in enumerate(found):
        cat_ids = class_ids[split, k]
        strict = select_images(coco, cat_ids, min_size)
        for image_id, chosen in sorted(select_images(coco, cat_ids, rule).items()):
            out.append(Candidate(k, root, coco, cat_ids, image_id, chosen, image_id in strict, split))
    return out


def take_once(per_split: Dict[str, List[Candidate]], hashed: bool) -> Dict[str, int]:
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
