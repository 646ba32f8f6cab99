"""Files saved from the SAM online demo, read back as the masks they show.

The demo offers no mask download. What a student can save is one of three kinds of file,
told apart by their content (``--sam-kind`` may force one):

- **mask**: a whole-image mask (a black-and-white picture, or a mask in the alpha channel);
- **cut-out** ("Cut out object", "Cut out all objects"): an RGBA PNG of the object's own
  pixels, transparent elsewhere, with soft alpha at the edge, cropped to the object's box.
  It is found in the exported image it came from by template matching on its opaque pixels
  (OpenCV's ``matchTemplate`` with a mask), at the upload's scale or at the demo's shrink of a
  large upload (over :data:`DEMO_MAX_AREA` pixels, shrunk by sqrt(DEMO_MAX_AREA / area)); its
  alpha, thresholded at half, is then placed as a full-size mask;
- **screenshot**: the exported image somewhere inside a page at the page's scale. It is found
  by SIFT features matched to the exported image (scale and offset by RANSAC), then the mask is
  recovered from how the demo draws one: after a click the image outside the object is dimmed
  to half over black (with an outline and click dots, which are kept out of the mask); while
  hovering the object is tinted with (0, 114, 189) at 40%; in Everything mode each mask has a
  colour of detectron2's palette at 40%.

Every mask comes back at the test image's size: the exported image is the test image enlarged by
a whole factor (:func:`demo_image`), and a pixel of the test image is in the mask when at least
half of its block is.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .demo_screens import Features, cv2, locate, locate_by_template, screenshot_mask, unshow
from .errors import UserError

#: The demo shrinks an upload larger than this many pixels by sqrt(DEMO_MAX_AREA / its area).
DEMO_MAX_AREA = 1677721
KINDS = ("auto", "mask", "cutout", "screenshot")
SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
EXPECTED = ("expected a mask, a cut-out (RGBA, transparent around the object) or a screenshot of an exported image "
            "from the demo")

_NAME = re.compile(r"^(\d+)(?:_(.+?))?(?:_(\d+))?$")
_CUTOUT_RMS = 14.0        # a cut-out is found where its opaque pixels differ from the image by at most this (RMS, 0-255)


def demo_image(image, sam_size: int) -> np.ndarray:
    """The exported image of a (3, H, W) test image: (H*f, W*f, 3) uint8, enlarged by the whole factor f that brings
    its long side to about ``sam_size`` (nearest neighbour, so every test pixel is an f x f block)."""
    from .evaluation import to_rgb
    from .sam import upscale_factor

    rgb = (to_rgb(image) * 255).round().astype(np.uint8)
    f = upscale_factor(max(rgb.shape[:2]), sam_size)  # the factor a local SAM's input is enlarged by
    return np.kron(rgb, np.ones((f, f, 1), np.uint8)) if f > 1 else rgb


def demo_shrink(shape) -> float:
    """The demo's scale for an upload of ``shape`` (H, W): 1, or sqrt(DEMO_MAX_AREA / area) above DEMO_MAX_AREA."""
    area = shape[0] * shape[1]
    return 1.0 if area <= DEMO_MAX_AREA else math.sqrt(DEMO_MAX_AREA / area)


def parse_name(path: Path) -> Tuple[Optional[int], Optional[str]]:
    """``<index>.png`` -> (index, None); ``<index>_<class>[_<k>].png`` -> (index, class); anything else (None, None)."""
    m = _NAME.match(path.stem)
    return (int(m.group(1)), m.group(2)) if m else (None, None)


def read_rgba(path: Path) -> np.ndarray:
    """A saved file as (H, W, 4) uint8 (alpha 255 where the file has none)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im.load()
            return np.array(ImageOps.exif_transpose(im).convert("RGBA"))
    except (OSError, SyntaxError, ValueError) as exc:  # PIL's errors for garbage, truncated or unreadable files
        raise UserError(f"--sam-masks: {path.name} is not a readable image ({exc}); save it again from the demo") from None


def kind_of(rgba: np.ndarray) -> str:
    """'mask', 'cutout' or 'screenshot', from the content."""
    alpha = rgba[..., 3]
    opaque = alpha >= 128
    if (alpha < 128).any() and opaque.any():
        colours = rgba[..., :3][opaque].astype(np.float32)
        return "mask" if colours.std(0).max() < 10 else "cutout"
    rgb = rgba[..., :3].astype(np.float32)
    grey = rgb.mean(-1)
    lo, hi = np.percentile(grey, [0.5, 99.5])
    if hi - lo < 2:
        return "mask"  # one level: an empty (or full) mask
    near = (np.abs(grey - lo) < 0.1 * (hi - lo)) | (np.abs(grey - hi) < 0.1 * (hi - lo))
    grey_only = (rgb.max(-1) - rgb.min(-1) < 24).mean() >= 0.99
    return "mask" if hi - lo >= 64 and near.mean() >= 0.99 and grey_only else "screenshot"


def to_test_size(mask: np.ndarray, size) -> np.ndarray:
    """A float or bool mask at the exported image's scale -> (H, W) bool at the test image's size: a test pixel is in
    it when at least half of the area it covers is."""
    h, w = size
    m = mask.astype(np.float32)
    if m.shape != (h, w):
        m = cv2().resize(m, (w, h), interpolation=cv2().INTER_AREA)
    return m >= 0.5


def whole_mask(rgba: np.ndarray, size) -> np.ndarray:
    """A whole-image mask: its alpha channel when that varies, else grey level > 127; brought to ``size``."""
    alpha = rgba[..., 3]
    level = alpha if np.ptp(alpha) > 0 else rgba[..., :3].astype(np.float32).mean(-1)
    return to_test_size(level > 127, size)


# ---------------------------------------------------------------- cut-outs

def _match(ref: np.ndarray, tmpl: np.ndarray, mask: np.ndarray) -> Tuple[Tuple[int, int], float]:
    """Where ``tmpl`` (its ``mask`` pixels) fits best in ``ref``: ((x, y), RMS error per channel). A coarse search at a
    quarter of the size, then the full size around its answer."""
    cv = cv2()
    ref, tmpl, mask = ref.astype(np.float32), tmpl.astype(np.float32), mask.astype(np.float32)
    th, tw = tmpl.shape[:2]
    k = max(1, max(ref.shape[:2]) // 256)
    x0, y0, x1, y1 = 0, 0, ref.shape[1], ref.shape[0]
    if k > 1 and min(th, tw) // k >= 8:
        small = lambda a, how: cv.resize(a, (a.shape[1] // k, a.shape[0] // k), interpolation=how)  # noqa: E731
        m_small = (small(mask, cv.INTER_AREA) > 0.99).astype(np.float32)
        if m_small.sum() >= 16:
            res = cv.matchTemplate(small(ref, cv.INTER_AREA), small(tmpl, cv.INTER_AREA), cv.TM_SQDIFF, mask=m_small)
            _, _, (cx, cy), _ = cv.minMaxLoc(res)
            x0, y0 = max(0, cx * k - 2 * k), max(0, cy * k - 2 * k)
            x1, y1 = min(ref.shape[1], cx * k + tw + 3 * k), min(ref.shape[0], cy * k + th + 3 * k)
    res = cv.matchTemplate(ref[y0:y1, x0:x1], tmpl, cv.TM_SQDIFF, mask=mask)
    best, _, (bx, by), _ = cv.minMaxLoc(res)
    return (x0 + bx, y0 + by), math.sqrt(max(best, 0.0) / (3 * max(mask.sum(), 1.0)))


def place_cutout(rgba: np.ndarray, exported: np.ndarray, size) -> Optional["Placement"]:
    """A cut-out found in ``exported`` (at the upload's scale, or at the demo's shrink of it): its mask at ``size``,
    or None when it is not there."""
    cv = cv2()
    alpha = rgba[..., 3]
    ys, xs = np.nonzero(alpha > 0)
    rgba = rgba[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    alpha = rgba[..., 3]
    solid = cv.erode((alpha == 255).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    if solid.sum() < 16:
        solid = alpha >= 128
    best = None
    for scale in dict.fromkeys((1.0, demo_shrink(exported.shape))):
        ref = exported if scale == 1.0 else cv.resize(exported, (round(exported.shape[1] * scale),
                                                                 round(exported.shape[0] * scale)), interpolation=cv.INTER_AREA)
        if rgba.shape[0] > ref.shape[0] or rgba.shape[1] > ref.shape[1]:
            continue
        (x, y), rms = _match(ref, rgba[..., :3], solid)
        if best is None or rms < best[0]:
            best = (rms, scale, x, y, ref.shape[:2])
    if best is None or best[0] > _CUTOUT_RMS:
        return None
    rms, scale, x, y, shape = best
    full = np.zeros(shape, np.float32)
    full[y:y + alpha.shape[0], x:x + alpha.shape[1]] = alpha >= 128
    return Placement(mask=to_test_size(full, size), quality=rms, scale=scale, offset=(x, y),
                     in_file=alpha >= 128, how=f"cut-out at ({x}, {y}), scale {scale:.3f}, RMS {rms:.1f}")


# ---------------------------------------------------------------- screenshots

# ---------------------------------------------------------------- a folder of files

@dataclass
class Placement:
    """Where a file's mask lies: the mask at the test image's size, and the file's own view of it."""
    mask: np.ndarray
    quality: float
    scale: float = 1.0
    offset: Tuple[float, float] = (0.0, 0.0)
    in_file: Optional[np.ndarray] = None  # the recovered mask in the file's own frame, for the checking figure
    how: str = ""
    frame: Optional[Tuple[int, int, int, int]] = None  # a screenshot: where the image is in it (x0, y0, x1, y1)


@dataclass
class Reading:
    """One file read: which test image and class it went to, its kind, and its mask at the test image's size."""
    file: str
    index: int
    class_name: Optional[str]
    kind: str
    mask: np.ndarray
    how: str
    in_file: np.ndarray
    pixels: np.ndarray = field(repr=False, default=None)  # the file as read (H, W, 4), for the checking figure
    frame: Optional[Tuple[int, int, int, int]] = None


def demo_files(folder: Path) -> List[Path]:
    from .errors import MissingFileError

    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"--sam-masks folder {folder} does not exist")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)


def _frame(matrix, exported_shape, shot_shape) -> Tuple[int, int, int, int]:
    scale = math.hypot(matrix[0, 0], matrix[1, 0])
    x0, y0 = max(0, int(matrix[0, 2])), max(0, int(matrix[1, 2]))
    return (x0, y0, min(shot_shape[1], int(matrix[0, 2] + exported_shape[1] * scale) + 1),
            min(shot_shape[0], int(matrix[1, 2] + exported_shape[0] * scale) + 1))


class DemoReader:
    """Reads the files of one ``--sam-masks`` folder against the exported images of the test images compared."""

    def __init__(self, images: Dict[int, object], size, class_names: Sequence[str], sam_size: int = 1024,
                 kind: str = "auto"):
        if kind not in KINDS:
            raise UserError(f"--sam-kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.class_names = list(class_names)
        self.classes = {n.lower(): k for k, n in enumerate(class_names)}
        self.exported = {i: demo_image(im, sam_size) for i, im in images.items()}
        self.size, self.kind = tuple(size), kind
        self._features: Dict[int, Features] = {}

    def features(self, index: int) -> Features:
        if index not in self._features:
            self._features[index] = Features.of(self.exported[index])
        return self._features[index]

    def _place(self, rgba: np.ndarray, kind: str, index: int, shot: Optional[Features]):
        """(placement, score) of a file on exported image ``index``; None when it is not there. Higher score, better."""
        if kind == "mask":
            mask = whole_mask(rgba, self.size)
            return Placement(mask=mask, quality=0.0, in_file=whole_mask(rgba, rgba.shape[:2]), how="whole-image mask"), 0.0
        if kind == "cutout":
            p = place_cutout(rgba, self.exported[index], self.size)
            return (p, -p.quality) if p is not None else None
        matrix, count = locate(shot, self.features(index))
        found = "matching features"
        if matrix is None:
            matrix, count, found = locate_by_template(rgba, self.exported[index]), 0, "template matching"
        if matrix is None:
            return None
        got = screenshot_mask(rgba[..., :3], self.exported[index], matrix)
        if got is None:
            return None
        in_shot, how, explained = got
        scale = math.hypot(matrix[0, 0], matrix[1, 0])
        mask = to_test_size(unshow(in_shot, matrix, self.exported[index].shape) >= 0.5, self.size)
        where = f"{count} matching features" if count else found
        return Placement(mask=mask, quality=explained, scale=scale, offset=(float(matrix[0, 2]), float(matrix[1, 2])),
                         in_file=in_shot, frame=_frame(matrix, self.exported[index].shape, rgba.shape),
                         how=f"screenshot, {how}, image at ({matrix[0, 2]:.0f}, {matrix[1, 2]:.0f}) "
                                              f"scale {scale:.3f} ({where}), {explained:.0%} of its pixels explained"), explained

    def read(self, path: Path) -> Reading:
        """One file, or a UserError naming it and saying what was expected."""
        index, class_name = parse_name(path)
        if class_name is not None and class_name.lower() not in self.classes:
            raise UserError(f"--sam-masks: {path.name}: unknown class {class_name!r}; expected <index>_<class>.png with "
                            f"class one of {list(self.class_names)}")
        if index is not None and index not in self.exported:
            raise UserError(f"--sam-masks: {path.name} names test image {index}, which is not among those compared "
                            f"({', '.join(map(str, self.exported))}); add it with --indices")
        rgba = read_rgba(path)
        if not (rgba[..., 3] > 0).any():
            raise UserError(f"--sam-masks: {path.name} is fully transparent; {EXPECTED}")
        kind = kind_of(rgba) if self.kind == "auto" else self.kind
        # a cut-out of a flat-coloured object looks like a mask drawn in the alpha channel: where it is found, it is one
        kinds = ["cutout", "mask"] if self.kind == "auto" and kind == "mask" and (rgba[..., 3] < 128).any() else [kind]
        for kind in kinds:
            if kind == "mask" and index is None:
                raise UserError(f"--sam-masks: {path.name} is a whole-image mask without an index in its name, so "
                                "nothing tells which image it belongs to; rename it <index>.png or <index>_<class>.png")
            shot = Features.of(rgba) if kind == "screenshot" else None
            candidates = [index] if index is not None else list(self.exported)
            found = {i: got for i in candidates if (got := self._place(rgba, kind, i, shot)) is not None}
            if found:
                break
        if not found:
            where = f"exported image {index}" if index is not None else "any exported image"
            raise UserError(f"--sam-masks: {path.name} (read as a {kind}) shows nothing of {where}; {EXPECTED}")
        ranked = sorted(found, key=lambda i: -found[i][1])
        if len(ranked) > 1 and self._close(found[ranked[0]][1], found[ranked[1]][1], kind):
            raise UserError(f"--sam-masks: {path.name} fits exported images {ranked[0]} and {ranked[1]} about equally; "
                            f"rename it <index>.png (or <index>_<class>.png) to say which")
        placed = found[ranked[0]][0]
        return Reading(file=path.name, index=ranked[0], class_name=class_name, kind=kind, mask=placed.mask,
                       how=placed.how, in_file=placed.in_file, pixels=rgba, frame=placed.frame)

    @staticmethod
    def _close(best: float, second: float, kind: str) -> bool:
        if kind == "cutout":  # scores are minus the RMS error
            return -second <= 1.25 * -best + 1.0
        return second >= best - 0.02  # screenshots: the share of the image's pixels the drawing explains

    def read_all(self, folder: Path) -> Tuple[List[Reading], List[str]]:
        """Every file of ``folder``: the ones read, and one line for each file that could not be."""
        readings, problems = [], []
        for path in demo_files(folder):
            try:
                readings.append(self.read(path))
            except UserError as exc:
                problems.append(str(exc))
        return readings, problems


def masks_by_image(readings: Sequence[Reading], class_names: Sequence[str], size) -> Dict[int, dict]:
    """Per test image: ``{'classes': (C, H, W) bool or None, 'agnostic': (H, W) bool or None}``: the union of its files'
    masks per class (files named with a class) and of those without a class."""
    lookup = {n.lower(): k for k, n in enumerate(class_names)}
    out: Dict[int, dict] = {}
    for r in readings:
        slot = out.setdefault(r.index, {"classes": None, "agnostic": None})
        if r.class_name is None:
            slot["agnostic"] = r.mask if slot["agnostic"] is None else slot["agnostic"] | r.mask
            continue
        if slot["classes"] is None:
            slot["classes"] = np.zeros((len(class_names), *size), bool)
        slot["classes"][lookup[r.class_name.lower()]] |= r.mask
    return out
